"""The agent channel under load: ``dispatch_latency`` and ``agents_per_hub``.

Both run against one real ``grocerysync-hub serve`` process (hypercorn, one worker) on PostgreSQL, the
production database: a fresh database on 127.0.0.1:5432 (user postgres), created here and dropped at the end.
The simulated agents are driven by ``tests/bench/loadgen.py`` in a process of its own.

Set-up: ``grocerysync-hub init``, ``create-user`` and ``create-token`` (the admin who triggers runs), then one
retailer with one store per agent, each store with a CSV POS connection, a folder destination, one manual
export job and one agent enrolled through the hub's own domain code (``create_enrollment_token`` then
``redeem_enrollment_token``), in-process with tortoise; enrolling thousands of agents over HTTP would only
make the set-up slower.

- ``dispatch_latency``: 2,000 agents long-poll one hub; runs of random stores are triggered one at a time
  (~10/s) through the API; latency = trigger sent -> the assignment received by the store's agent (both
  timed in the generator). p50/p99 and the hub's RSS; the baseline is the same with agents that poll every
  10 s without holding (``baseline_p50_ms``).
- ``agents_per_hub``: holding agents are added in steps of 1,000 up to 6,000 (a fresh hub process), until the
  hub's RSS passes 300 MB or polls fail; the most agents held at <= 300 MB, and each step's figures.

    python tests/bench/dispatch.py [--agents 2000] [--steps 1000,2000,...] [--keep DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/hubprocess.py, shared with the tests

from hubprocess import HubError, Served, fresh_database, hub_env, serving, set_up_hub

BENCH_DIR = Path(__file__).resolve().parent
ADMIN = "bench-admin@example.com"
# The hub's command line, in a process whose open-files limit is raised first (each held poll is a socket).
HUB = [
    sys.executable,
    "-c",
    "import resource, sys\n"
    "soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)\n"
    "resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 1 << 16, hard))\n"
    "from grocerysync.hub.cli import main\n"
    "sys.exit(main())",
]
DEFAULT_STEPS = [1000, 2000, 3000, 4000, 5000, 6000]
#: What agents_per_hub's BENCH line shows of each step (loadgen's log on standard error has the rest).
STEP_FIELDS = ("agents", "hub_rss_mb", "hub_cpu_pct", "hub_cpu_wait_pct", "probe_p50_ms", "probe_max_ms", "poll_errors")

Report = Callable[[dict[str, Any]], None]


def _print_bench(result: dict[str, Any]) -> None:
    print("BENCH " + json.dumps(result), flush=True)


def _say(message: str) -> None:
    print(f"dispatch bench: {message}", file=sys.stderr, flush=True)


# --- the fleet ---------------------------------------------------------------------------------------------


async def populate(data_dir: Path, db_url: str, count: int, concurrency: int = 16) -> list[dict[str, Any]]:
    """One retailer, ``count`` stores each with a job and an enrolled agent; returns the fleet (with credentials)."""
    from tortoise import Tortoise

    from grocerysync.core.manager import PluginManager
    from grocerysync.core.samples import POS_COLUMNS
    from grocerysync.hub.crypto import SecretBox
    from grocerysync.hub.db import tortoise_config
    from grocerysync.hub.domain import agents, connections, jobs, retailers
    from grocerysync.hub.schemas import ConnectionIn, DestinationIn, RetailerIn, StoreIn
    from grocerysync.hub.schemas_agents import EnrollmentTokenIn
    from grocerysync.hub.schemas_jobs import JobIn
    from grocerysync.hub.scope import SYSTEM, Scope
    from grocerysync.hub.settings import Settings

    settings = Settings(data_dir=data_dir, database_url=db_url)
    box = SecretBox.from_keys(settings.encryption_keys())
    plugins = PluginManager()
    scope = Scope(SYSTEM)
    # A larger pool than the hub's default: the set-up runs ``concurrency`` stores at a time.
    await Tortoise.init(config=tortoise_config(f"{settings.db_url()}?maxsize={concurrency}"))
    try:
        retailer = await retailers.create_retailer(scope, RetailerIn(name=f"Bench Grocers {uuid.uuid4().hex[:6]}"))
        gate = asyncio.Semaphore(concurrency)

        async def one(number: int) -> dict[str, Any]:
            async with gate:
                store = await retailers.create_store(
                    scope, retailer.id, StoreIn(name=f"Store {number:05d}", time_zone="America/Chicago")
                )
                source = await connections.create_connection(
                    scope,
                    plugins,
                    store.id,
                    ConnectionIn(
                        name="POS export",
                        plugin="csv",
                        config={"path": f"C:\\exports\\store{number:05d}\\items.csv", "columns": POS_COLUMNS},
                    ),
                )
                feed = await connections.create_destination(
                    scope,
                    plugins,
                    box,
                    store.id,
                    DestinationIn(name="Feed folder", plugin="folder", config={"path": "D:\\feeds"}),
                )
                job = await jobs.create_job(
                    scope, plugins, store.id, JobIn(name="items", source_id=source.id, destination_id=feed.id)
                )
                token = await agents.create_enrollment_token(scope, store.id, EnrollmentTokenIn())
                agent, credential = await agents.redeem_enrollment_token(
                    token.token, f"bench-pos-{number:05d}", version="bench", os="Windows 11"
                )
                return {"agent_id": agent.id, "store_id": store.id, "job_id": job.id, "credential": credential}

        return list(await asyncio.gather(*(one(n) for n in range(count))))
    finally:
        await Tortoise.close_connections()


# --- the hub process ---------------------------------------------------------------------------------------


def error_lines(log: Path) -> list[str]:
    """Lines of the hub's log that report errors (the access log lines of 5xx answers included)."""
    lines = log.read_text(errors="replace").splitlines()
    return [line for line in lines if "Traceback" in line or " ERROR " in line or '" 5' in line]


def loadgen(hub: Served, fleet: Path, token: str, *args: str, timeout: float = 600) -> dict[str, Any]:
    """Run one scenario of ``loadgen.py`` in its own process; its last line of output is the result."""
    command = [
        sys.executable,
        str(BENCH_DIR / "loadgen.py"),
        "--hub",
        hub.url,
        "--fleet",
        str(fleet),
        "--hub-pid",
        str(hub.pid),
        *args,
    ]
    env = {**os.environ, "GROCERYSYNC_BENCH_TOKEN": token}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, check=False)
    sys.stderr.write(done.stderr)
    if done.returncode != 0 or not done.stdout.strip():
        raise SystemExit(f"the load generator failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# --- the benchmarks ----------------------------------------------------------------------------------------


def run_benchmarks(
    *,
    agents: int = 2000,
    steps: list[int] | None = None,
    triggers: int = 200,
    rate: float = 10.0,
    keep: Path | None = None,
    report: Report = _print_bench,
) -> None:
    """Set up the fleet, run ``dispatch_latency`` and ``agents_per_hub``, and ``report`` each result."""
    steps = steps or DEFAULT_STEPS
    work = keep or Path(tempfile.mkdtemp(prefix="grocerysync-bench-dispatch-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        with fresh_database("gs_bench_dispatch") as db_url:
            env = hub_env(work / "hub", db_url)  # no periodic purge during the bench
            token = set_up_hub(env, admin=ADMIN, token_name="dispatch bench", timeout=300, command=HUB)
            began = time.perf_counter()
            fleet = asyncio.run(populate(work / "hub", db_url, max(agents, *steps)))
            _say(f"{len(fleet)} stores with a job and an enrolled agent in {time.perf_counter() - began:.0f}s")
            fleet_file = work / "fleet.json"
            fleet_file.write_text(json.dumps(fleet))
            fleet_file.chmod(0o600)

            # Other work on the machine stretches every latency here: say how busy it was.
            load_before = round(os.getloadavg()[0], 2)
            with serving(env, work / "hub-latency.log", command=HUB) as hub:
                held = loadgen(hub, fleet_file, token, "latency", "--agents", str(agents), "--mode", "hold",
                               "--triggers", str(triggers), "--rate", str(rate))  # fmt: skip
                baseline = loadgen(hub, fleet_file, token, "--seed", "2", "latency", "--agents", str(agents),
                                   "--mode", "interval", "--interval", "10", "--triggers", str(triggers // 2),
                                   "--rate", str(rate))  # fmt: skip
                hub_errors = error_lines(hub.log)
            report(
                {
                    "name": "dispatch_latency",
                    "agents": agents,
                    "p50_ms": held["p50_ms"],
                    "p99_ms": held["p99_ms"],
                    "max_ms": held["max_ms"],
                    "hub_rss_mb": held["hub_rss_mb"],
                    "baseline_p50_ms": baseline["p50_ms"],
                    "baseline_p99_ms": baseline["p99_ms"],
                    "received": f"{held['received']}/{held['triggers']}",
                    "baseline_received": f"{baseline['received']}/{baseline['triggers']}",
                    # While the runs were triggered: the hub's CPU, and how long it waited for a CPU others had.
                    "hub_cpu_pct": held["hub_cpu_pct"],
                    "hub_cpu_wait_pct": held["hub_cpu_wait_pct"],
                    "baseline_hub_cpu_pct": baseline["hub_cpu_pct"],
                    "baseline_polls_per_s": baseline["polls_per_s"],
                    "hub_cpu_ms_per_poll": baseline["hub_cpu_ms_per_poll"],
                    "poll_round_trip_p50_ms": baseline["quick_poll_p50_ms"],
                    "poll_errors": held["poll_errors"] + baseline["poll_errors"],
                    "hub_error_lines": len(hub_errors),
                    "load_avg_1m": load_before,
                    "db": "postgres",
                }
            )
            _details("dispatch_latency", [held, baseline], hub_errors)

            load_before = round(os.getloadavg()[0], 2)
            with serving(env, work / "hub-ramp.log", command=HUB) as hub:
                ramp = loadgen(hub, fleet_file, token, "ramp", "--steps", ",".join(map(str, steps)), timeout=1200)
                hub_errors = error_lines(hub.log)
            report(
                {
                    "name": "agents_per_hub",
                    "agents": ramp["agents"],
                    "hub_rss_mb": ramp["hub_rss_mb"],
                    "rss_limit_mb": ramp["rss_limit_mb"],
                    "steps": [{k: s[k] for k in STEP_FIELDS} for s in ramp["steps"]],
                    "hub_error_lines": len(hub_errors),
                    "load_avg_1m": load_before,
                    "db": "postgres",
                }
            )
            _details("agents_per_hub", [ramp], hub_errors)
    except HubError as exc:  # the hub could not be set up or served: one line, not a traceback
        raise SystemExit(f"dispatch bench: {exc}") from None
    finally:
        if keep is None:
            shutil.rmtree(work, ignore_errors=True)


def _details(name: str, results: list[dict[str, Any]], hub_errors: list[str]) -> None:
    """What went wrong, if anything, on standard error (the BENCH line keeps only the counts)."""
    for result in results:
        for key in ("poll_error_kinds", "trigger_errors", "report_errors"):
            if result.get(key):
                _say(f"{name} ({result.get('mode', result['scenario'])}): {key}: {result[key]}")
    for line in hub_errors[:10]:
        _say(f"{name}: hub log: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--agents", type=int, default=2000, help="agents for dispatch_latency")
    parser.add_argument("--steps", default=",".join(map(str, DEFAULT_STEPS)), help="agents_per_hub's steps")
    parser.add_argument("--triggers", type=int, default=200)
    parser.add_argument("--rate", type=float, default=10.0, help="triggers per second")
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (with the hub's logs)")
    args = parser.parse_args()
    run_benchmarks(
        agents=args.agents,
        steps=[int(s) for s in args.steps.split(",")],
        triggers=args.triggers,
        rate=args.rate,
        keep=args.keep,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
