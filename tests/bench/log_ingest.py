"""The ``log_ingest_pg`` benchmark: agents shipping log batches to one hub on PostgreSQL.

A fresh PostgreSQL database on 127.0.0.1:5432 (user postgres), created here and dropped at the end;
``grocerysync-hub init``, ``create-user`` and ``create-token``; one retailer with one store per agent, each agent
enrolled through the hub's API (an enrollment token, then ``POST /agent/v1/enroll``); a real
``grocerysync-hub serve`` process (hypercorn). A load generator in a process of its own (this file with
``--loadgen``) posts ``LogBatch`` bodies of ``--batch`` typical records from ``--clients`` agents at once, each
over its own connection, until ``--records`` records are sent. The bodies are built before the clock starts.

Result: ``lines_per_s`` = records the hub confirmed stored / seconds from the first request to the last answer;
the stored count is checked against the database at the end (the run fails if they differ).

    python tests/bench/log_ingest.py [--records 300000] [--clients 20] [--batch 1000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/hubprocess.py, shared with the tests

from hubprocess import HubError, api_call, fresh_database, hub_env, serving, set_up_hub

ADMIN = "bench-admin@example.com"


def _say(message: str) -> None:
    print(f"log_ingest bench: {message}", file=sys.stderr, flush=True)


# --- the hub ------------------------------------------------------------------------------------------------


def enroll_agents(hub: str, token: str, count: int) -> list[str]:
    """One retailer with ``count`` stores, an agent enrolled at each through the API; their credentials."""
    call = functools.partial(api_call, hub, token)
    retailer = call("POST", "/api/retailers", {"name": f"Bench Grocers {uuid.uuid4().hex[:6]}"})
    credentials = []
    for number in range(count):
        store = call("POST", f"/api/retailers/{retailer['id']}/stores", {"name": f"Store {number:03d}"})
        made = call("POST", f"/api/stores/{store['id']}/enrollment-tokens", {})
        enrolled = api_call(
            hub, None, "POST", "/agent/v1/enroll", {"token": made["token"], "hostname": f"bench-till-{number:03d}"}
        )
        credentials.append(str(enrolled["credential"]))
    return credentials


async def _count_rows(db_url: str) -> int:
    conn = await asyncpg.connect(db_url.replace("postgres://", "postgresql://", 1))
    try:
        return int(await conn.fetchval("SELECT count(*) FROM log_entry"))
    finally:
        await conn.close()


def _cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a process has used so far, from /proc (0 where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _postgres_backends(database: str) -> dict[int, float]:
    """The CPU seconds of each PostgreSQL backend serving ``database`` (found by their process titles)."""
    found = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            title = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {database} " in title:
            found[int(entry.name)] = _cpu_seconds(int(entry.name))
    return found


# --- the load generator (its own process) -------------------------------------------------------------------


def typical_batch(size: int, first: int, at: datetime) -> bytes:
    """A ``LogBatch`` body of ``size`` records like those an agent logs during an export (~300 bytes each)."""
    import orjson

    levels = ("info", "info", "info", "debug", "warning")
    records = [
        {
            "uid": str(uuid.uuid4()),
            "at": (at + timedelta(milliseconds=n)).isoformat(),
            "level": levels[n % len(levels)],
            "logger": "grocerysync.agent.pipeline",
            "message": f"sent batch {first + n} of 1000 items to sftp://feeds.example.com/incoming (1000 ok, 0 failed)",
            "extra": {"job": "Nightly price and stock export", "batch": first + n, "took_ms": 412.5},
        }
        for n in range(size)
    ]
    return orjson.dumps({"records": records})


async def _generate(config: dict[str, Any]) -> dict[str, Any]:
    import aiohttp

    url = config["hub"] + "/agent/v1/logs"
    size, total = config["batch"], config["records"]
    now = datetime.now(UTC)
    bodies = [typical_batch(min(size, total - first), first, now) for first in range(0, total, size)]
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    recorded = duplicates = 0
    errors: list[str] = []
    took: list[float] = []

    async def client(credential: str) -> None:
        nonlocal recorded, duplicates
        headers = {"Authorization": f"Bearer {credential}", "Content-Type": "application/json"}
        # One connection per agent, as each store's agent has.
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=1), headers=headers) as session:
            while not queue.empty():
                body = queue.get_nowait()
                began = time.perf_counter()
                async with session.post(url, data=body) as response:
                    answer = await response.json(content_type=None)
                took.append(time.perf_counter() - began)
                if response.status != 200:
                    errors.append(f"HTTP {response.status}: {answer}")
                    continue
                recorded += answer["recorded"]
                duplicates += answer["duplicates"]

    began, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client(c) for c in config["credentials"]))
    elapsed, cpu = time.perf_counter() - began, time.process_time() - cpu
    return {
        "recorded": recorded,
        "duplicates": duplicates,
        "elapsed_s": elapsed,
        "cpu_s": cpu,
        "requests": len(took),
        "body_bytes": round(statistics.mean(len(b) for b in bodies)),
        "p50_ms": round(statistics.median(took) * 1000, 1),
        "max_ms": round(max(took) * 1000, 1),
        "errors": errors[:10],
        "error_count": len(errors),
    }


def loadgen(hub: str, credentials: list[str], records: int, batch: int) -> dict[str, Any]:
    """Run the load generator in its own process; its last line of output is its result."""
    config = {"hub": hub, "credentials": credentials, "records": records, "batch": batch}
    done = subprocess.run(
        [sys.executable, __file__, "--loadgen"],
        input=json.dumps(config),
        capture_output=True,
        text=True,
        timeout=3600,
        check=False,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"the load generator failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmark ------------------------------------------------------------------------------------------


def run_benchmark(
    *, records: int = 300_000, clients: int = 20, batch: int = 1000, keep: Path | None = None
) -> dict[str, Any]:
    """Set up, load, check the database; return the ``log_ingest_pg`` result."""
    work = keep or Path(tempfile.mkdtemp(prefix="grocerysync-bench-logs-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with fresh_database("gs_bench_logs") as db_url:
            # Nothing but the benchmark's requests: no purge, no scheduler ticks.
            env = hub_env(work / "hub", db_url, scheduler_interval_seconds="0")
            token = set_up_hub(env, admin=ADMIN, token_name="log bench", timeout=300)
            database = db_url.rsplit("/", 1)[1]
            with serving(env, work / "hub.log") as served:
                hub, pid = served.url, served.pid
                credentials = enroll_agents(hub, token, clients)
                hub_cpu, pg_cpu = _cpu_seconds(pid), _postgres_backends(database)
                result = loadgen(hub, credentials, records, batch)
                hub_cpu = _cpu_seconds(pid) - hub_cpu
                pg_after = _postgres_backends(database)
                pg_cpu_s = sum(pg_after.values()) - sum(pg_cpu.get(p, 0.0) for p in pg_after)
            stored = asyncio.run(_count_rows(db_url))
    except HubError as exc:  # the hub could not be set up or served: one line, not a traceback
        raise SystemExit(f"log_ingest bench: {exc}") from None
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)
    for line in result["errors"]:
        _say(f"refused: {line}")
    if stored != result["recorded"] or result["error_count"]:
        raise SystemExit(
            f"the hub confirmed {result['recorded']} records but the database holds {stored} "
            f"({result['error_count']} requests failed)"
        )
    return {
        "name": "log_ingest_pg",
        "lines_per_s": round(stored / result["elapsed_s"]),
        "records": stored,
        "batch": batch,
        "clients": clients,
        "elapsed_s": round(result["elapsed_s"], 2),
        "body_bytes": result["body_bytes"],
        "p50_batch_ms": result["p50_ms"],
        "max_batch_ms": result["max_ms"],
        "duplicates": result["duplicates"],
        "workers": 1,
        # CPU per 1,000 records, to read the figure on a shared machine: the hub process, the PostgreSQL backends
        # serving it (not the WAL writer or checkpointer), and the load generator; and the machine's load.
        "cpu_ms_per_1000": {
            "hub": round(hub_cpu / stored * 1e6, 1),
            "postgres": round(pg_cpu_s / stored * 1e6, 1),
            "loadgen": round(result["cpu_s"] / stored * 1e6, 1),
        },
        "cpus": os.cpu_count(),
        "load_1m": round(os.getloadavg()[0], 2),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--clients", type=int, default=20, help="agents posting at once, one connection each")
    parser.add_argument("--batch", type=int, default=1000, help="records per request (at most 1000)")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (with the hub's log)")
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.loadgen:
        print(json.dumps(asyncio.run(_generate(json.loads(sys.stdin.read())))), flush=True)
        return 0
    result = run_benchmark(records=args.records, clients=args.clients, batch=args.batch, keep=args.keep)
    print("BENCH " + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
