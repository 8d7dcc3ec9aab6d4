"""Rows per second of the CSV connector on a generated export (default 200,000 rows).

    python packages/grocerysync-pos-csv/bench/bench_read.py [ROWS]

Prints the read rate alone and read + batch validation into items, for a plain export and for one that
asks for every per-value conversion (decimal comma, currency, dates, zero-padded barcodes).
"""

from __future__ import annotations

import asyncio
import random
import sys
import tempfile
import time
from pathlib import Path

from grocerysync_pos_csv import CsvConfig, read

from grocerysync.core.codes import check_digit
from grocerysync.core.records import ReadRequest
from grocerysync.core.validation import validate_records

HEADER = "ItemNo,UPC,Description,Brand,Size,Dept,Retail,Cost,SalePrice,SaleStart,SaleEnd,Taxable,EBT,Stock,Aisle\n"
COLUMNS = {
    "item_id": "ItemNo",
    "gtin": "UPC",
    "name": "Description",
    "brand": "Brand",
    "size": "Size",
    "department": "Dept",
    "price": "Retail",
    "cost": "Cost",
    "sale.price": "SalePrice",
    "sale.start": "SaleStart",
    "sale.end": "SaleEnd",
    "taxable": "Taxable",
    "snap_ebt": "EBT",
    "stock": "Stock",
    "extras.aisle": "Aisle",
}


def write_export(path: Path, rows: int, *, european: bool) -> None:
    rng = random.Random(7)  # noqa: S311 - test data, not secrets
    with path.open("w", encoding="cp1252" if european else "utf-8", newline="") as out:
        out.write(HEADER.replace(",", ";") if european else HEADER)
        for n in range(rows):
            body = f"0{rng.randrange(10**10):010d}"
            upc = body + str(check_digit(body))
            price = rng.randrange(50, 2000) / 100
            on_sale = n % 5 == 0
            if european:
                fields = [
                    str(100000 + n),
                    "0000" + upc,
                    f"Crème fraîche {n}",
                    "Brand",
                    "200 g",
                    "DAIRY",
                    f"€{price:.2f}".replace(".", ","),
                    f"{price / 2:.2f}".replace(".", ","),
                    f"{price * 0.8:.2f}".replace(".", ",") if on_sale else "",
                    "01.05.2024" if on_sale else "",
                    "31.05.2024" if on_sale else "",
                    "J" if n % 2 else "N",
                    "N",
                    "12,000",
                    "A3",
                ]
                out.write(";".join(fields) + "\r\n")
            else:
                fields = [
                    str(100000 + n),
                    upc,
                    f'"Organic Bananas, {n} lb"',
                    "Dole",
                    "12 oz",
                    "PRODUCE",
                    f"{price:.2f}",
                    f"{price / 2:.2f}",
                    f"{price * 0.8:.2f}" if on_sale else "",
                    "2024-05-01" if on_sale else "",
                    "2024-05-31" if on_sale else "",
                    "Y" if n % 2 else "N",
                    "N",
                    "12.000",
                    "A3",
                ]
                out.write(",".join(fields) + "\r\n")


async def measure(config: CsvConfig, rows: int, *, validate: bool) -> float:
    start = time.perf_counter()
    count = 0
    async for batch in read(config, ReadRequest(batch_size=1000)):
        if validate:
            items, rejected = validate_records(batch.records)
            assert not rejected, rejected[:3]
            assert not batch.rejected, batch.rejected[:3]
            count += len(items)
        else:
            count += len(batch.records)
    elapsed = time.perf_counter() - start
    assert count == rows, count
    return rows / elapsed


def main() -> None:
    rows = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp, "items.csv")
        euro = Path(tmp, "artikel.csv")
        write_export(plain, rows, european=False)
        write_export(euro, rows, european=True)
        configs = {
            "plain (utf-8, ISO dates, strict UPC)": CsvConfig(path=str(plain), columns=COLUMNS),
            "converted (cp1252, ';', decimal comma, €, dd.mm.yyyy, zero-padded)": CsvConfig(
                path=str(euro),
                columns=COLUMNS,
                delimiter=";",
                decimal_comma=True,
                date_format="%d.%m.%Y",
                gtin_style="zero_padded",
                true_values=["J"],
            ),
        }
        for label, config in configs.items():
            for validate in (False, True):
                rate = asyncio.run(measure(config, rows, validate=validate))
                what = "read + validate_records" if validate else "read only"
                print(f"{label:70} {what:24} {rate:>10,.0f} rows/s  ({1e6 / rate:.2f} µs/row)")


if __name__ == "__main__":
    main()
