"""A realistic generated grocery catalogue, written as a POS item export (CSV).

Used by the demo, the benchmarks and plugin authors who need plausible data: departments with their
own price ranges, weighed produce and meat with PLUs, alcohol and tobacco with minimum ages, SNAP and
WIC flags as US stores set them, bottle deposits, sales with windows and "2 for $5" prices. The same
seed gives the same catalogue.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path

from grocerysync.core.codes import check_digit

#: Column names as a typical POS export writes them, and the item field each one maps to.
POS_COLUMNS: dict[str, str] = {
    "item_id": "ITEM_NO",
    "gtin": "UPC",
    "plu": "PLU",
    "name": "DESCRIPTION",
    "brand": "BRAND",
    "size": "SIZE",
    "department": "DEPT_NAME",
    "price": "RETAIL",
    "cost": "COST",
    "sale.price": "SALE_PRICE",
    "sale.start": "SALE_START",
    "sale.end": "SALE_END",
    "multi_price": "MIX_MATCH",
    "sold_by_weight": "SCALE",
    "stock": "QTY_ON_HAND",
    "taxable": "TAX",
    "snap_ebt": "FOOD_STAMP",
    "wic": "WIC",
    "min_age": "MIN_AGE",
    "bottle_deposit": "DEPOSIT",
    "active": "ACTIVE",
}


@dataclass(frozen=True)
class _Dept:
    name: str
    products: tuple[str, ...]
    sizes: tuple[str, ...]
    price: tuple[float, float]
    snap: bool = True
    taxable: bool = False
    weighed_share: float = 0.0
    min_age: int | None = None
    deposit_share: float = 0.0
    wic_share: float = 0.0


_DEPTS = (
    _Dept(
        "Grocery",
        (
            "Pasta",
            "Peanut Butter",
            "Tomato Sauce",
            "Cereal",
            "Rice",
            "Black Beans",
            "Olive Oil",
            "Crackers",
            "Coffee",
            "Tea",
            "Soup",
            "Tortilla Chips",
            "Salsa",
            "Jasmine Rice",
            "Oatmeal",
        ),
        ("16 oz", "12 oz", "24 oz", "1 lb", "2 lb", "500 g", "1 l", "15.5 oz", "6 ct"),
        (0.99, 12.99),
        wic_share=0.08,
    ),
    _Dept(
        "Dairy",
        (
            "Whole Milk",
            "2% Milk",
            "Greek Yogurt",
            "Cheddar Cheese",
            "Butter",
            "Large Eggs",
            "Cream Cheese",
            "Half & Half",
            "Mozzarella",
            "Sour Cream",
        ),
        ("1 gal", "0.5 gal", "32 oz", "8 oz", "12 ct", "16 oz"),
        (1.29, 8.99),
        wic_share=0.3,
    ),
    _Dept(
        "Produce",
        (
            "Bananas",
            "Gala Apples",
            "Roma Tomatoes",
            "Yellow Onions",
            "Avocados",
            "Lemons",
            "Jalapeños",
            "Cilantro",
            "Russet Potatoes",
            "Baby Spinach",
            "Mangos",
            "Limes",
        ),
        ("1 lb", "3 lb", "5 oz", "1 each"),
        (0.25, 5.99),
        weighed_share=0.55,
        wic_share=0.2,
    ),
    _Dept(
        "Meat",
        (
            "Ground Beef 80/20",
            "Chicken Thighs",
            "Pork Chops",
            "Ribeye Steak",
            "Chorizo",
            "Chicken Breast",
            "Beef Brisket",
            "Carne Asada",
        ),
        ("1 lb", "2 lb", "12 oz"),
        (2.99, 19.99),
        weighed_share=0.7,
    ),
    _Dept(
        "Bakery",
        ("Sourdough Loaf", "Bolillos", "Bagels", "Croissants", "Conchas", "Baguette"),
        ("6 ct", "1 each", "24 oz", "4 ct"),
        (0.5, 7.99),
    ),
    _Dept(
        "Frozen",
        ("Pizza", "Ice Cream", "Mixed Vegetables", "Fish Sticks", "Burritos", "Waffles"),
        ("16 oz", "1.5 qt", "12 oz", "10 ct"),
        (1.99, 11.99),
    ),
    _Dept(
        "Beverages",
        ("Cola", "Sparkling Water", "Orange Juice", "Cold Brew", "Lemonade", "Energy Drink"),
        ("12 fl oz", "2 l", "59 fl oz", "6 ct", "16.9 fl oz"),
        (0.99, 8.99),
        deposit_share=0.6,
        wic_share=0.05,
    ),
    _Dept(
        "Beer & Wine",
        ("Lager", "IPA", "Cabernet Sauvignon", "Pinot Grigio", "Hard Seltzer", "Stout"),
        ("12 fl oz", "750 ml", "6 ct", "12 ct"),
        (2.99, 29.99),
        snap=False,
        taxable=True,
        min_age=21,
        deposit_share=0.8,
    ),
    _Dept(
        "Tobacco",
        ("Cigarettes King", "Cigarillos", "Rolling Papers"),
        ("1 each", "20 ct"),
        (1.99, 12.99),
        snap=False,
        taxable=True,
        min_age=21,
    ),
    _Dept(
        "Health & Beauty",
        ("Shampoo", "Toothpaste", "Ibuprofen", "Bar Soap", "Deodorant", "Vitamin C"),
        ("12 fl oz", "4 oz", "100 ct", "2 ct"),
        (1.49, 14.99),
        snap=False,
        taxable=True,
    ),
    _Dept(
        "Household",
        ("Paper Towels", "Dish Soap", "Laundry Detergent", "Trash Bags", "Foil"),
        ("6 ct", "24 fl oz", "100 fl oz", "30 ct"),
        (1.99, 19.99),
        snap=False,
        taxable=True,
    ),
)
_BRANDS = (
    "Hill Country",
    "La Costeña",
    "Sunrise Farms",
    "Acme",
    "Blue Ridge",
    "Nature's Path",
    "Goya",
    "Tillamook",
    "Great Value",
    "Kerrygold",
    "Señor Rico",
    "Daily Harvest",
    "Müller",
    "Bonne Maman",
)
_DEPARTMENT_WEIGHTS = (30, 10, 10, 6, 5, 8, 10, 6, 2, 7, 6)


def _upc(rng: random.Random) -> str:
    body = f"{rng.choice('0678')}{rng.randrange(10**10):010d}"
    return body + str(check_digit(body))


def _money(value: float) -> str:
    # Prices end in .x9 the way shelf tags do.
    return f"{Decimal(int(value * 10)) / 10 + Decimal('0.09'):.2f}"


def catalogue_rows(count: int, *, seed: int = 7, today: date | None = None) -> Iterator[dict[str, str]]:
    """Yield ``count`` POS export rows (keyed by :data:`POS_COLUMNS` values), deterministic for a seed."""
    rng = random.Random(seed)  # noqa: S311 (reproducible sample data, not secrets)
    today = today or date(2026, 11, 20)
    weighed_count = 0
    for n in range(count):
        dept = rng.choices(_DEPTS, weights=_DEPARTMENT_WEIGHTS)[0]
        weighed = rng.random() < dept.weighed_share
        price = rng.uniform(*dept.price)
        product = rng.choice(dept.products)
        brand = "" if weighed else rng.choice(_BRANDS)
        if weighed:
            # IFPS produce PLUs first, then 5-digit store PLUs: unique for up to 81,000 weighed items.
            plu = 3000 + weighed_count if weighed_count < 1000 else 19000 + weighed_count
            weighed_count += 1
        row = {
            "ITEM_NO": f"{100000 + n}",
            "UPC": "" if weighed else _upc(rng),
            "PLU": str(plu) if weighed else "",
            "DESCRIPTION": f"{brand} {product}".strip() if brand else product,
            "BRAND": brand,
            "SIZE": "" if weighed else rng.choice(dept.sizes),
            "DEPT_NAME": dept.name,
            "RETAIL": _money(price),
            "COST": _money(price * rng.uniform(0.55, 0.8)),
            "SALE_PRICE": "",
            "SALE_START": "",
            "SALE_END": "",
            "MIX_MATCH": "",
            "SCALE": "Y" if weighed else "N",
            "QTY_ON_HAND": f"{rng.uniform(0, 80):.2f}" if weighed else str(rng.randrange(0, 240)),
            "TAX": "Y" if dept.taxable else "N",
            "FOOD_STAMP": "Y" if dept.snap else "N",
            "WIC": "Y" if rng.random() < dept.wic_share else "N",
            "MIN_AGE": str(dept.min_age) if dept.min_age else "",
            "DEPOSIT": "0.05" if rng.random() < dept.deposit_share else "",
            "ACTIVE": "Y" if rng.random() > 0.01 else "N",
        }
        roll = rng.random()
        if roll < 0.1:
            start = today - timedelta(days=rng.randrange(0, 7))
            row["SALE_PRICE"] = _money(price * 0.8)
            row["SALE_START"] = start.isoformat()
            row["SALE_END"] = (start + timedelta(days=rng.choice((6, 13, 27)))).isoformat()
        elif roll < 0.13 and not weighed:
            row["MIX_MATCH"] = f"2/{_money(price * 1.8)}"
        yield row


def write_catalogue_csv(path: Path, count: int, *, seed: int = 7, change_every: int = 0) -> Path:
    """Write ``count`` generated items as a POS export CSV; return the path.

    ``change_every=N`` raises the price of every Nth item by 10¢ (a catalogue after a price update:
    the same items with N-th ones changed).
    """
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(POS_COLUMNS.values()))
        writer.writeheader()
        for n, row in enumerate(catalogue_rows(count, seed=seed)):
            if change_every and n % change_every == 0:
                row["RETAIL"] = f"{Decimal(row['RETAIL']) + Decimal('0.10'):.2f}"
            writer.writerow(row)
    return path
