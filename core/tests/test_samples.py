import csv
from pathlib import Path

from grocerysync.core.results import RawRecord
from grocerysync.core.samples import POS_COLUMNS, catalogue_rows, write_catalogue_csv
from grocerysync.core.validation import validate_records


def _records(rows: list[dict[str, str]]) -> list[RawRecord]:
    out = []
    for n, row in enumerate(rows, start=2):
        data: dict[str, object] = {}
        for field, column in POS_COLUMNS.items():
            if row[column]:
                head, _, sub = field.partition(".")
                if sub:
                    data.setdefault(head, {})[sub] = row[column]  # type: ignore[index]
                else:
                    data[field] = row[column]
        out.append(RawRecord(f"row {n}", data))
    return out


def test_every_generated_item_is_valid_and_realistic() -> None:
    rows = list(catalogue_rows(3000))
    items, rejections = validate_records(_records(rows))
    assert rejections == []
    assert len({i.item_id for i in items}) == 3000
    assert any(i.sold_by_weight and i.plu for i in items)
    assert any(i.min_age == 21 and not i.snap_ebt for i in items)
    assert any(i.sale is not None for i in items)
    assert any(i.multi_price is not None for i in items)
    weighed_plus = [i.plu for i in items if i.plu]
    assert len(weighed_plus) == len(set(weighed_plus))


def test_same_seed_same_catalogue_and_changes_are_exact(tmp_path: Path) -> None:
    assert list(catalogue_rows(50, seed=3)) == list(catalogue_rows(50, seed=3))
    before = write_catalogue_csv(tmp_path / "a.csv", 300)
    after = write_catalogue_csv(tmp_path / "b.csv", 300, change_every=100)
    with before.open(newline="") as a, after.open(newline="") as b:
        changed = [ra["ITEM_NO"] for ra, rb in zip(csv.DictReader(a), csv.DictReader(b), strict=True) if ra != rb]
    assert changed == ["100000", "100100", "100200"]
