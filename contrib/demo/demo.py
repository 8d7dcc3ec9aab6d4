"""The demo behind ``nox -s demo``: a store's POS export goes to a marketplace feed folder, twice.

1. Generates a realistic catalogue (5,000 items by default) as a POS item export, with the few broken
   rows real exports have (a bad barcode, a negative price, a row without a name).
2. Runs ``grocerysync-agent export`` — the same command a technician runs at a store — to write an
   Instacart-style CSV feed into a folder: every good item is sent, each bad row is reported.
3. Changes 1% of the prices, drops two items from the POS, and runs again: only the changes and the
   removals are sent.

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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("demo-output"))
    parser.add_argument("--items", type=int, default=5000)
    args = parser.parse_args()
    out: Path = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    feeds = out / "feeds"
    feeds.mkdir(parents=True)

    catalogue = write_catalogue_csv(out / "pos-export.csv", args.items)
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

    print(f"\n== 1. First export: {args.items:,} items from the POS export, plus {len(BAD_ROWS)} broken rows\n")
    export(job, state)

    print("\n== 2. The store changes 1% of its prices and stops selling two items; export again\n")
    write_catalogue_csv(catalogue, args.items, change_every=100)
    append_bad_rows(catalogue)
    drop_items(catalogue, {"100001", "100002"})
    export(job, state)

    print("\n== Where to look\n")
    print(f"  POS export:   {catalogue}")
    print(f"  job file:     {job}")
    for feed in sorted(feeds.iterdir()):
        print(f"  feed file:    {feed}")
    print(f"  run folders:  {state} (delta state, and each run's rejections.jsonl)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
