"""Simulated store agents for the dispatch benchmarks: thousands of agents polling one hub, from one process.

Each simulated agent has its own credential and loops ``POST /agent/v1/poll`` with a :class:`Heartbeat` body.
When a poll answers with a run, the agent notes the time, acknowledges it (``runs/<id>/ack``: the agent starts
it), reports it finished (``runs/<id>/result``, so the job can be triggered again) and polls again. The
generator also sends the triggers (``POST /api/jobs/<id>/trigger`` with an admin token, from the
``GROCERYSYNC_BENCH_TOKEN`` variable), so "trigger sent" and "assignment received" are read from one clock.

Scenarios (the last line printed is one JSON object; progress goes to standard error):

- ``latency --mode hold``: N agents long-poll (``wait`` 30 s). Once every poll is in flight and the hub shows
  every agent online (so it has read every first poll), runs of random stores are triggered one at a time at
  ``--rate`` per second; latency = trigger sent -> assignment received.
- ``latency --mode interval``: the baseline. N agents poll without holding (``wait`` 0) and sleep
  ``--interval`` seconds between polls; latency = trigger sent -> the next poll that picks the run up.
- ``ramp``: holding agents are added in steps; after each step the hub's RSS (``/proc/<pid>/status``, so
  Linux only) is sampled and a few runs are triggered to check the hub still dispatches.

First polls are spread out (a random first ``wait``, or a random first sleep for the baseline) so the polls'
expiries are spread evenly, as they are for agents that started at different times; otherwise every poll
would expire in the same second, 30 s after the start, and the hub would see bursts no real fleet makes.

    python tests/bench/loadgen.py --hub URL --fleet FLEET.json --hub-pid PID latency --agents 2000 --mode hold
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from grocerysync.core.wire import AGENT_API_PREFIX, Heartbeat, PluginVersion, PollAnswer, RunAck, RunResult

#: Seconds a holding agent asks the hub to hold each poll (the agent's default).
HOLD_WAIT = 30.0
#: New connections opened per second while agents start (hypercorn's listen backlog is 100).
START_RATE = 1000.0


def raise_open_files_limit() -> int:
    """Raise this process's soft limit of open files to the hard limit (each agent holds a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 16)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return target


def rss_mb(pid: int) -> float:
    """Resident memory of a process in MB, from ``/proc/<pid>/status`` (VmRSS)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"process {pid} has no VmRSS line in /proc/{pid}/status; has it exited?")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """Seconds the process's main thread ran on a CPU, and waited for one, from ``/proc/<pid>/schedstat``.

    The wait is the machine's fault, not the hub's: other processes had the CPUs (a busy machine stretches every
    latency measured here, so the benchmarks report it).
    """
    on_cpu, waited, _ = Path(f"/proc/{pid}/schedstat").read_text().split()
    return int(on_cpu) / 1e9, int(waited) / 1e9


@dataclass
class Window:
    """A stretch of time over which the hub's CPU use and the polls answered are measured."""

    pid: int
    polls: int
    began: float = field(default_factory=time.perf_counter)
    cpu: tuple[float, float] = (0.0, 0.0)

    def __post_init__(self) -> None:
        self.cpu = cpu_seconds(self.pid)

    def close(self, polls: int) -> dict[str, float | None]:
        """The hub's CPU use (% of one core), its wait for a CPU (%), and its CPU time per poll answered."""
        on_cpu, waited = cpu_seconds(self.pid)
        wall = time.perf_counter() - self.began
        answered = polls - self.polls
        used = on_cpu - self.cpu[0]
        return {
            "hub_cpu_pct": round(100 * used / wall, 1),
            "hub_cpu_wait_pct": round(100 * (waited - self.cpu[1]) / wall, 1),
            "hub_cpu_ms_per_poll": round(1000 * used / answered, 2) if answered else None,
            "polls_per_s": round(answered / wall, 1),
        }


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) by the nearest-rank method (what a p99 of 200 samples can honestly say)."""
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q * len(ordered) + 0.5)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class FleetAgent:
    """One enrolled agent of the benchmark's fleet: its credential and its store's one job."""

    agent_id: int
    store_id: int
    job_id: int
    credential: str


@dataclass
class Stats:
    """What the simulated agents saw (this process only)."""

    inflight: int = 0
    polls: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    #: job id -> when its trigger was sent, and when its assignment arrived (time.perf_counter).
    sent: dict[int, float] = field(default_factory=dict)
    received: dict[int, float] = field(default_factory=dict)
    trigger_errors: list[str] = field(default_factory=list)
    report_errors: Counter[str] = field(default_factory=Counter)
    #: Jobs skipped because the hub said they already had a run going (409).
    busy_jobs: int = 0
    #: Round trips (ms) of the polls that asked not to be held (wait 0).
    quick_polls_ms: list[float] = field(default_factory=list)

    def latencies_ms(self, jobs: list[int]) -> list[float]:
        return [(self.received[j] - self.sent[j]) * 1000 for j in jobs if j in self.received and j in self.sent]


class Generator:
    """The simulated agents and the trigger sender, sharing one aiohttp session."""

    def __init__(self, hub: str, fleet: list[FleetAgent], token: str, hub_pid: int) -> None:
        self.hub = hub.rstrip("/")
        self.fleet = fleet
        self.admin = {"Authorization": f"Bearer {token}"}
        self.hub_pid = hub_pid
        self.stats = Stats()
        self.tasks: set[asyncio.Task[None]] = set()
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> Generator:
        # No connection limit: each agent keeps its own connection, as real agents on their own machines do.
        connector = aiohttp.TCPConnector(limit=0, ttl_dns_cache=None)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=HOLD_WAIT + 60)
        self.session = aiohttp.ClientSession(connector=connector, timeout=timeout)
        return self

    async def __aexit__(self, *_: object) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.session is not None:
            await self.session.close()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.create_task(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    # --- the agents ----------------------------------------------------------------------------------------

    async def start_agents(self, agents: list[FleetAgent], *, hold: bool, interval: float) -> None:
        """Start ``agents`` polling, paced at START_RATE new agents per second."""
        rng = random.Random(len(self.tasks))
        began = time.perf_counter()
        for number, agent in enumerate(agents):
            if hold:
                # First wait anywhere in [5, 30] s: from then on the expiries are spread evenly.
                self._spawn(self._agent(agent, first_wait=rng.uniform(5, HOLD_WAIT), first_sleep=0, interval=0))
            else:
                self._spawn(self._agent(agent, first_wait=0, first_sleep=rng.uniform(0, interval), interval=interval))
            ahead = began + (number + 1) / START_RATE - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)

    async def _agent(self, agent: FleetAgent, *, first_wait: float, first_sleep: float, interval: float) -> None:
        """One agent: hold each poll (``interval`` 0), or poll without holding every ``interval`` seconds."""
        assert self.session is not None
        url = f"{self.hub}{AGENT_API_PREFIX}/poll"
        headers = {"Authorization": f"Bearer {agent.credential}", "Content-Type": "application/json"}
        beat = Heartbeat(
            hostname=f"bench-pos-{agent.store_id}",
            os="Windows 11",
            agent_version="bench",
            plugins=[PluginVersion(name="csv", distribution="grocerysync-pos-csv", version="0.1.0")],
        )
        bodies = {w: beat.model_copy(update={"wait": w}).model_dump_json().encode() for w in {first_wait, HOLD_WAIT, 0}}
        hold = interval == 0
        wait = first_wait
        await asyncio.sleep(first_sleep)
        while True:
            sent = time.perf_counter()
            self.stats.inflight += 1
            try:
                async with self.session.post(url, data=bodies[wait], headers=headers) as response:
                    raw = await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.errors[f"poll: {type(exc).__name__}: {exc}"[:200]] += 1
                await asyncio.sleep(1)
                continue
            finally:
                self.stats.inflight -= 1
            arrived = time.perf_counter()
            if status != 200:
                self.stats.errors[f"poll: HTTP {status}: {raw[:150].decode(errors='replace')}"] += 1
                await asyncio.sleep(1)
                continue
            self.stats.polls += 1
            if wait == 0:
                self.stats.quick_polls_ms.append((arrived - sent) * 1000)
            answer = PollAnswer.model_validate_json(raw)
            for run in answer.runs:
                if run.job_id is not None and run.job_id not in self.stats.received:
                    self.stats.received[run.job_id] = arrived
                self._spawn(self._run(agent, headers, run.run_id, run.attempt))
            wait = HOLD_WAIT if hold else 0
            # Polling every ``interval`` seconds keeps the random phase the first sleep gave.
            pause = answer.poll_after if hold else max(answer.poll_after, interval - (arrived - sent))
            if pause > 0:
                await asyncio.sleep(pause)

    async def _run(self, agent: FleetAgent, headers: dict[str, str], run_id: int, attempt: int) -> None:
        """Start the run (ack) and finish it at once (result), as a run that had nothing to send."""
        assert self.session is not None
        base = f"{self.hub}{AGENT_API_PREFIX}/runs/{run_id}"
        reports = [("ack", RunAck(attempt=attempt)), ("result", RunResult(attempt=attempt, status="succeeded"))]
        for name, report in reports:
            try:
                async with self.session.post(
                    f"{base}/{name}", data=report.model_dump_json(), headers=headers
                ) as response:
                    if response.status != 200:
                        text = (await response.read())[:150].decode(errors="replace")
                        self.stats.report_errors[f"{name}: HTTP {response.status}: {text}"] += 1
                        return
            except (aiohttp.ClientError, TimeoutError) as exc:
                self.stats.report_errors[f"{name}: {type(exc).__name__}: {exc}"[:200]] += 1
                return

    # --- triggers ------------------------------------------------------------------------------------------

    async def _trigger(self, candidates: Iterator[int], done: list[int | None]) -> None:
        """Trigger the next job of ``candidates`` and append it to ``done`` (None if that failed); a job the hub
        says is busy (409: a run of an earlier scenario is still queued or dispatched) is skipped for the next."""
        assert self.session is not None
        for job_id in candidates:
            self.stats.received.pop(job_id, None)
            self.stats.sent[job_id] = time.perf_counter()
            try:
                async with self.session.post(f"{self.hub}/api/jobs/{job_id}/trigger", headers=self.admin) as response:
                    if response.status == 202:
                        done.append(job_id)
                        return
                    text = (await response.read())[:200].decode(errors="replace")
            except (aiohttp.ClientError, TimeoutError) as exc:
                text = f"{type(exc).__name__}: {exc}"
                response = None
            self.stats.sent.pop(job_id, None)
            if response is not None and response.status == 409:
                self.stats.busy_jobs += 1
                continue
            self.stats.trigger_errors.append(f"job {job_id}: {text}")
            break
        done.append(None)

    async def trigger_and_wait(self, pool: list[int], count: int, rate: float, grace: float) -> list[float]:
        """Trigger ``count`` jobs of ``pool`` (in its order) at ``rate`` per second; wait up to ``grace`` s after the
        last for their assignments. Returns the latencies (ms) of those that arrived.

        Each trigger is its own task, so a slow answer to one does not hold back the next.
        """
        candidates = iter(pool)
        done: list[int | None] = []
        began = time.perf_counter()
        for number in range(count):
            self._spawn(self._trigger(candidates, done))
            ahead = began + (number + 1) / rate - time.perf_counter()
            if ahead > 0:
                await asyncio.sleep(ahead)
        deadline = time.perf_counter() + grace
        while time.perf_counter() < deadline:
            if len(done) >= count and all(j is None or j in self.stats.received for j in done):
                break
            await asyncio.sleep(0.05)
        return self.stats.latencies_ms([j for j in done if j is not None])

    async def hub_online(self) -> int:
        """How many agents the hub shows online: those whose polls it has processed (heartbeats are written
        every few seconds), read from the technicians' API."""
        assert self.session is not None
        url = f"{self.hub}/api/agents"
        async with self.session.get(url, params={"status": "online", "limit": 1}, headers=self.admin) as response:
            if response.status != 200:
                text = (await response.read())[:200].decode(errors="replace")
                raise SystemExit(f"GET /api/agents?status=online answered HTTP {response.status}: {text}")
            return int((await response.json())["total"])

    async def wait_until_held(self, count: int, seconds: float) -> bool:
        """Wait until ``count`` polls are in flight and the hub shows ``count`` agents online; False on timeout.

        In flight alone is not enough: the hub may still be working through a backlog of polls it has not read.
        """
        deadline = time.perf_counter() + seconds
        if not await self.wait_for(lambda: self.stats.inflight >= count, seconds):
            return False
        while await self.hub_online() < count:
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(1)
        return True

    async def wait_for(self, condition: Callable[[], bool], seconds: float) -> bool:
        """Wait until ``condition()`` holds (checked every 20 ms); False on timeout."""
        deadline = time.perf_counter() + seconds
        while not condition():
            if time.perf_counter() > deadline:
                return False
            await asyncio.sleep(0.02)
        return True

    async def sample_rss(self, seconds: float) -> float:
        """The hub's highest RSS (MB) sampled every 0.5 s for ``seconds``."""
        peak = rss_mb(self.hub_pid)
        deadline = time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            await asyncio.sleep(0.5)
            peak = max(peak, rss_mb(self.hub_pid))
        return peak


def _summary(latencies: list[float]) -> dict[str, Any]:
    if not latencies:
        return {"p50_ms": None, "p99_ms": None, "max_ms": None}
    return {
        "p50_ms": round(statistics.median(latencies), 1),
        "p99_ms": round(percentile(latencies, 0.99), 1),
        "max_ms": round(max(latencies), 1),
    }


def _errors(stats: Stats) -> dict[str, Any]:
    return {
        "poll_errors": sum(stats.errors.values()),
        "poll_error_kinds": dict(stats.errors.most_common(5)),
        "trigger_errors": stats.trigger_errors[:5],
        "busy_jobs_skipped": stats.busy_jobs,
        "report_errors": dict(stats.report_errors.most_common(5)),
    }


def _log(message: str) -> None:
    print(f"loadgen: {message}", file=sys.stderr, flush=True)


async def latency(gen: Generator, args: argparse.Namespace) -> dict[str, Any]:
    """The ``latency`` scenario (hold or interval)."""
    agents = gen.fleet[: args.agents]
    if len(agents) < args.agents:
        raise SystemExit(f"the fleet file has {len(gen.fleet)} agents, fewer than --agents {args.agents}")
    hold = args.mode == "hold"
    began = time.perf_counter()
    await gen.start_agents(agents, hold=hold, interval=args.interval)
    if hold:
        ready = await gen.wait_until_held(len(agents), seconds=180)
    else:
        ready = await gen.wait_for(lambda: gen.stats.polls >= len(agents), seconds=args.interval + 180)
    if not ready:
        raise SystemExit(
            f"{args.mode}: {gen.stats.inflight} of {len(agents)} polls in flight, {gen.stats.polls} answered, "
            f"{await gen.hub_online()} agents online at the hub, 180 s after the start; errors: {_errors(gen.stats)}"
        )
    took = time.perf_counter() - began
    _log(f"{len(agents)} agents polling ({args.mode}) after {took:.1f}s; settling {args.settle}s")
    await asyncio.sleep(args.settle)
    window = Window(gen.hub_pid, gen.stats.polls)
    rss_task = asyncio.create_task(gen.sample_rss(args.triggers / args.rate))
    rng = random.Random(args.seed)
    pool = [a.job_id for a in rng.sample(agents, len(agents))]
    gen.stats.quick_polls_ms.clear()
    grace = 15.0 if hold else args.interval + 15.0
    latencies = await gen.trigger_and_wait(pool, args.triggers, args.rate, grace)
    load = window.close(gen.stats.polls)
    rss = await rss_task
    quick = gen.stats.quick_polls_ms
    # The result reports were sent at once after each assignment: give the last ones a moment.
    await asyncio.sleep(1)
    return {
        "scenario": "latency",
        "mode": args.mode,
        "agents": len(agents),
        "start_s": round(took, 1),
        "triggers": args.triggers,
        "received": len(latencies),
        **_summary(latencies),
        "hub_rss_mb": round(rss, 1),
        **load,
        "quick_poll_p50_ms": round(statistics.median(quick), 1) if quick else None,
        "polls": gen.stats.polls,
        **_errors(gen.stats),
    }


async def ramp(gen: Generator, args: argparse.Namespace) -> dict[str, Any]:
    """The ``ramp`` scenario: add holding agents step by step until the RSS limit, failures, or the last step."""
    steps: list[dict[str, Any]] = []
    rng = random.Random(args.seed)
    running = 0
    for target in args.steps:
        if target > len(gen.fleet):
            raise SystemExit(f"the fleet file has {len(gen.fleet)} agents, fewer than the step {target}")
        errors_before = sum(gen.stats.errors.values())
        began = time.perf_counter()
        await gen.start_agents(gen.fleet[running:target], hold=True, interval=0)
        running = target
        held = await gen.wait_until_held(target, seconds=180)
        ramp_s = time.perf_counter() - began
        window = Window(gen.hub_pid, gen.stats.polls)
        rss = await gen.sample_rss(args.settle)
        load = window.close(gen.stats.polls)
        pool = [a.job_id for a in rng.sample(gen.fleet[:target], target)]
        latencies = await gen.trigger_and_wait(pool, args.probes, args.probe_rate, grace=15)
        rss = max(rss, await gen.sample_rss(1))
        step = {
            "agents": target,
            "held": held,
            "inflight": gen.stats.inflight,
            "hub_rss_mb": round(rss, 1),
            "ramp_s": round(ramp_s, 1),
            # Steady state: the hub answering polls that expire (every agent re-polls each 30 s).
            "hub_cpu_pct": load["hub_cpu_pct"],
            "hub_cpu_wait_pct": load["hub_cpu_wait_pct"],
            "probes": args.probes,
            "probes_received": len(latencies),
            "probe_p50_ms": _summary(latencies)["p50_ms"],
            "probe_max_ms": _summary(latencies)["max_ms"],
            "poll_errors": sum(gen.stats.errors.values()) - errors_before,
        }
        steps.append(step)
        _log(f"step {json.dumps(step)}")
        if not _good(step, args.rss_limit):
            break
    good = [s for s in steps if _good(s, args.rss_limit)]
    best = good[-1] if good else None
    return {
        "scenario": "ramp",
        "agents": best["agents"] if best else 0,
        "hub_rss_mb": best["hub_rss_mb"] if best else None,
        "rss_limit_mb": args.rss_limit,
        "steps": steps,
        **_errors(gen.stats),
    }


def _good(step: dict[str, Any], rss_limit: float) -> bool:
    """A step the hub held: every poll in flight and seen, no failed poll, every probe run dispatched, RSS in bounds."""
    return bool(
        step["held"]
        and step["poll_errors"] == 0
        and step["probes_received"] == step["probes"]
        and step["hub_rss_mb"] <= rss_limit
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hub", required=True, help="the hub's base URL")
    parser.add_argument("--fleet", required=True, type=Path, help="JSON list of agents (see FleetAgent)")
    parser.add_argument("--hub-pid", required=True, type=int, help="the hub process, for its RSS")
    parser.add_argument("--seed", type=int, default=1)
    sub = parser.add_subparsers(dest="scenario", required=True)
    lat = sub.add_parser("latency", help="trigger -> assignment latency with N agents polling")
    lat.add_argument("--agents", type=int, default=2000)
    lat.add_argument("--mode", choices=["hold", "interval"], default="hold")
    lat.add_argument("--interval", type=float, default=10.0, help="seconds between polls in interval mode")
    lat.add_argument("--triggers", type=int, default=200)
    lat.add_argument("--rate", type=float, default=10.0, help="triggers per second")
    lat.add_argument("--settle", type=float, default=5.0, help="seconds to wait once every agent polls")
    up = sub.add_parser("ramp", help="add holding agents in steps, measuring the hub's RSS")
    up.add_argument("--steps", type=lambda s: [int(x) for x in s.split(",")], default=[1000, 2000, 3000])
    up.add_argument("--rss-limit", type=float, default=300.0, help="MB")
    up.add_argument("--settle", type=float, default=8.0, help="seconds of RSS sampling after each step")
    up.add_argument("--probes", type=int, default=10, help="runs triggered after each step")
    up.add_argument("--probe-rate", type=float, default=5.0)
    return parser


async def _main(args: argparse.Namespace) -> dict[str, Any]:
    token = os.environ.get("GROCERYSYNC_BENCH_TOKEN", "")
    if not token:
        raise SystemExit("set GROCERYSYNC_BENCH_TOKEN to an admin API token of the hub (it sends the triggers)")
    fleet = [FleetAgent(**a) for a in json.loads(args.fleet.read_text())]
    async with Generator(args.hub, fleet, token, args.hub_pid) as gen:
        return await (latency(gen, args) if args.scenario == "latency" else ramp(gen, args))


def main() -> int:
    args = _parser().parse_args()
    limit = raise_open_files_limit()
    needed = max([getattr(args, "agents", 0), *getattr(args, "steps", [])]) + 200
    if limit < needed:
        raise SystemExit(f"this process may open only {limit} files, fewer than {needed}: raise 'ulimit -Hn'")
    print(json.dumps(asyncio.run(_main(args))), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
