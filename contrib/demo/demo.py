"""The demo behind ``nox -s demo``: a store's POS export goes to a marketplace feed folder, by hand and from a hub.

1. Generates a realistic catalogue (5,000 items by default) as a POS item export, with the few broken
   rows real exports have (a bad barcode, a negative price, a row without a name).
2. Runs ``grocerysync-agent export`` — the same command a technician runs at a store — to write an
   Instacart-style CSV feed into a folder: every good item is sent, each bad row is reported.
3. Changes 1% of the prices, drops two items from the POS, and runs again: only the changes and the
   removals are sent.
4. Starts a hub (SQLite in the demo folder), sets a store up through its API as a technician does (a POS
   connection on the same export, a feed-folder destination, a job every minute, an enrollment token),
   enrolls an agent and runs it. The hub hands the agent the job when the minute turns; the demo prints
   the run as the hub shows it and where to look, then keeps the hub and the agent running until Ctrl+C
   (``--once``: stops after the first run).

Everything lands in ./demo-output (or the folder given with --out).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from hubloop import (
    DemoError,
    HubProcess,
    enroll,
    free_port,
    print_run,
    print_where_to_look,
    set_up_store,
    start_agent,
    stop_process,
    wait_for_run,
    when,
)

from grocerysync.core.samples import POS_COLUMNS, write_catalogue_csv

BAD_ROWS = [
    # What a technician finds in real exports: a mistyped barcode, a negative price, a row without a name.
    {"ITEM_NO": "990001", "UPC": "036000291453", "DESCRIPTION": "Mistyped barcode", "RETAIL": "1.99"},
    {"ITEM_NO": "990002", "UPC": "036000291452", "DESCRIPTION": "Negative price", "RETAIL": "-4.99"},
    {"ITEM_NO": "990003", "UPC": "4006381333931", "DESCRIPTION": "", "RETAIL": "2.49"},
]


def append_bad_rows(path: Path) -> None:
    with path.open("a", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(POS_COLUMNS.values()))
        for row in BAD_ROWS:
            writer.writerow(row)


def drop_items(path: Path, item_ids: set[str]) -> None:
    rows = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [r for r in rows if r.split(",", 1)[0] not in item_ids]
    path.write_text("".join(kept), encoding="utf-8")


def export(job: Path, state: Path) -> None:
    command = [sys.executable, "-m", "grocerysync.agent", "export", str(job), "--state-dir", str(state)]
    print(f"$ grocerysync-agent export {job} --state-dir {state}", flush=True)
    code = subprocess.run(command, check=False).returncode
    if code == 2:
        raise SystemExit("the demo export failed; see the message above")


def export_demo(out: Path, items: int) -> Path:
    """Parts 1 to 3: the agent's ``export`` command by hand, twice. Returns the POS export's path."""
    feeds = out / "feeds"
    feeds.mkdir(parents=True)
    catalogue = write_catalogue_csv(out / "pos-export.csv", items)
    append_bad_rows(catalogue)
    job = out / "job.json"
    job.write_text(
        json.dumps(
            {
                "name": "Main Street Market -> marketplace feed",
                "source": {"plugin": "csv", "config": {"path": str(catalogue), "columns": POS_COLUMNS}},
                "destination": {"plugin": "folder", "config": {"path": str(feeds), "format": "csv"}},
                "filters": [{"field": "active", "op": "eq", "value": True}],
            },
            indent=2,
        ),
        encoding="utf-8",
    )
    state = out / "state"

    print(f"\n== 1. First export: {items:,} items from the POS export, plus {len(BAD_ROWS)} broken rows\n")
    export(job, state)

    print("\n== 2. The store changes 1% of its prices and stops selling two items; export again\n")
    write_catalogue_csv(catalogue, items, change_every=100)
    append_bad_rows(catalogue)
    drop_items(catalogue, {"100001", "100002"})
    export(job, state)

    print("\n== Where to look\n")
    print(f"  POS export:   {catalogue}")
    print(f"  job file:     {job}")
    for feed in sorted(feeds.iterdir()):
        print(f"  feed file:    {feed}")
    print(f"  run folders:  {state} (delta state, and each run's rejections.jsonl)")
    return catalogue


def hub_demo(out: Path, catalogue: Path, *, port: int, once: bool) -> int:
    """Part 4: a hub, a store configured through its API, an enrolled agent, and the job's scheduled runs."""
    hub = HubProcess(out / "hub", free_port(port))
    agent = None
    agent_log = out / "agent.log"
    feeds = out / "hub-feeds"
    feeds.mkdir(parents=True)
    try:
        print(f"\n== 4. A hub at {hub.url} (SQLite in {hub.data_dir}), with an admin and an API token\n")
        hub.start()
        store = set_up_store(hub, catalogue, feeds)
        print(
            f"  retailer {store.retailer_id}, store {store.store_id}, job {store.job_id} "
            f"(POS export -> {feeds}, every minute), and a one-time enrollment token"
        )
        print("\n== 5. At the store: enroll the agent with the token, then run it\n")
        print(f"$ grocerysync-agent enroll --hub {hub.url} --token {store.enrollment_token[:8]}... --allow-http")
        print("  " + enroll(hub, store.enrollment_token, out / "agent-state"))
        print(f"$ grocerysync-agent run --state-dir {out / 'agent-state'}   (output in {agent_log})")
        agent = start_agent(out / "agent-state", agent_log)
        print(f"\n== 6. Waiting for the job's first scheduled run (due at {when(store.next_run_at)})\n", flush=True)
        run = wait_for_run(hub, store.job_id, agent, agent_log)
        print_run(hub, run)
        print("\n== Where to look\n")
        print_where_to_look(hub, store, feeds, agent_log, sys.stdout, serving=not once)
        if once:
            return 0 if run["status"] in ("succeeded", "partially_failed") else 1
        print("\nThe hub and the agent keep running; the job runs every minute. Ctrl+C stops both.\n", flush=True)
        while True:
            run = wait_for_run(hub, store.job_id, agent, agent_log, after=run["id"], timeout=24 * 3600)
            print_run(hub, run)
            sys.stdout.flush()
    except KeyboardInterrupt:
        print("\nstopping the agent and the hub")
        return 0
    except DemoError as exc:
        print(f"demo: error: {exc}", file=sys.stderr)
        return 2
    finally:
        stop_process(agent)
        hub.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--port", type=int, default=8080, help="the hub's port (another free one if taken; 0: any)")
    parser.add_argument("--once", action="store_true", help="stop after the hub's first run instead of at Ctrl+C")
    parser.add_argument("--no-hub", action="store_true", help="only the export part (1 to 3), no hub")
    args = parser.parse_args()
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    catalogue = export_demo(out, args.items)
    if args.no_hub:
        return 0
    return hub_demo(out, catalogue, port=args.port, once=args.once)


if __name__ == "__main__":
    raise SystemExit(main())
