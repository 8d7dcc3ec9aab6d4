"""Profile the export pipeline alone: a generated in-memory POS and a destination that keeps nothing.

    python agent/scripts/profile_export.py [--items 200000] [--batch-size 1000] [--cprofile]

Prints items/s and peak RSS for a first run (everything new), a second run (nothing changed) and a run
after 1% of the items changed, next to the "floor" of reading the same rows from a CSV file with the
standard library and writing them out with orjson.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import pstats
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from pydantic import BaseModel

from grocerysync.agent import run_export
from grocerysync.core import (
    CheckResult,
    Destination,
    Item,
    ItemResult,
    PosConnector,
    RawBatch,
    RawRecord,
    ReadRequest,
    WriteContext,
    hookimpl,
)
from grocerysync.core.codes import check_digit
from grocerysync.core.jobs import JobSpec
from grocerysync.core.manager import PluginManager


def peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # Windows
        return float("nan")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def row(i: int, version: int) -> dict[str, str]:
    body = f"0{41000000000 + i:011d}"[:11]
    return {
        "item_id": f"{i:07d}",
        "gtin": body + str(check_digit(body)),
        "name": f"Item number {i}",
        "brand": "Brand " + str(i % 97),
        "size": f"{i % 30 + 1} oz",
        "department": str(i % 12),
        "price": f"{(i % 900) / 100 + 0.99 + version:.2f}",
        "stock": str(i % 40),
        "taxable": "true" if i % 3 else "false",
        "snap_ebt": "true" if i % 2 else "false",
    }


class Config(BaseModel):
    items: int
    changed_every: int = 0


def make_source(state: dict[str, int]) -> PosConnector:
    async def check(config: Config) -> CheckResult:
        return CheckResult.success()

    async def read(config: Config, request: ReadRequest) -> AsyncIterator[RawBatch]:
        size = request.batch_size
        every = state["changed_every"]
        state["source_ns"] = 0
        for start in range(0, state["items"], size):
            started = time.perf_counter_ns()
            stop = min(start + size, state["items"])
            records = [
                RawRecord(f"row {i + 2}", row(i, 1 if every and i % every == 0 else 0)) for i in range(start, stop)
            ]
            state["source_ns"] += time.perf_counter_ns() - started
            yield RawBatch(records)

    return PosConnector(name="generated", description="generated rows", config_model=Config, check=check, read=read)


class NullWriter:
    def __init__(self) -> None:
        self.count = 0

    async def write(self, items: Sequence[Item]) -> list[ItemResult]:
        self.count += len(items)
        return [ItemResult(i.item_id, True) for i in items]

    async def delete(self, item_ids: Sequence[str]) -> list[ItemResult]:
        return [ItemResult(i, True) for i in item_ids]

    async def commit(self) -> str:
        return f"{self.count} items written nowhere"


def make_destination() -> Destination:
    class NoConfig(BaseModel):
        pass

    async def check(config: Any, secrets: Any) -> CheckResult:
        return CheckResult.success()

    @asynccontextmanager
    async def open_(config: Any, secrets: Any, context: WriteContext) -> AsyncIterator[NullWriter]:
        yield NullWriter()

    return Destination(name="null", description="discards", config_model=NoConfig, check=check, open=open_)


class Plugin:
    def __init__(self, state: dict[str, int]) -> None:
        self.state = state

    @hookimpl
    def grocerysync_pos_connectors(self) -> list[PosConnector]:
        return [make_source(self.state)]

    @hookimpl
    def grocerysync_destinations(self) -> list[Destination]:
        return [make_destination()]


def floor(n: int, work: Path) -> float:
    """Rows/s of stdlib csv reading + orjson writing the same rows: the yardstick for the agent."""
    path = work / "items.csv"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row(0, 0)))
        writer.writeheader()
        writer.writerows(row(i, 0) for i in range(n))
    started = time.perf_counter()
    with path.open(newline="") as f, (work / "out.jsonl").open("wb") as out:
        for r in csv.DictReader(f):
            out.write(orjson.dumps(r) + b"\n")
    return n / (time.perf_counter() - started)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--cprofile", action="store_true", help="profile one run and print the top functions")
    parser.add_argument(
        "--profile-run", default="first", choices=["first", "second", "1%"], help="which run --cprofile profiles"
    )
    args = parser.parse_args()
    state = {"items": args.items, "changed_every": 0}
    pm = PluginManager(autoload=False)
    pm.register(Plugin(state), name="profile")
    job = JobSpec.model_validate(
        {
            "name": "profile",
            "source": {"plugin": "generated", "config": {"items": args.items}},
            "destination": {"plugin": "null"},
            "options": {"batch_size": args.batch_size},
        }
    )
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        print(f"floor (csv read + orjson write): {floor(args.items, work):,.0f} rows/s")
        for label, every in (("first run (all new)", 0), ("second run (unchanged)", 0), ("1% changed", 100)):
            state["changed_every"] = every
            profiler = cProfile.Profile() if args.cprofile and label.startswith(args.profile_run) else None
            if profiler:
                profiler.enable()
            summary = await run_export(job, plugins=pm, state_dir=work / "state")
            own = summary.duration_s - state["source_ns"] / 1e9
            if profiler:
                profiler.disable()
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
            print(
                f"{label}: {summary.status}, sent {summary.sent}, unchanged {summary.unchanged}, "
                f"{summary.items_per_s:,.0f} items/s, {summary.duration_s:.2f} s "
                f"(without generating the rows: {own:.2f} s, {args.items / own:,.0f} items/s), "
                f"peak RSS {peak_rss_mb():.0f} MB"
            )


if __name__ == "__main__":
    asyncio.run(main())
