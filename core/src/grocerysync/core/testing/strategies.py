"""Hypothesis strategies for grocery data that is valid but nasty.

Everything :func:`items` draws passes :class:`~grocerysync.core.items.Item` validation, yet carries what
real catalogues carry and plugins trip over: names with combining marks, emoji, right-to-left text and
CSV-hostile punctuation; weighed items; 8/12/13/14-digit barcodes with correct check digits (leading zeros
included); PLUs; sale windows; prices from 0.0001 to 999999.9999; sizes; extras. Use them in a plugin's own
tests as well as through the contract suites::

    from hypothesis import given
    from grocerysync.core.testing import strategies as gs

    @given(gs.item_batches(max_size=20))
    def test_feed_round_trip(batch): ...

The raw-value strategies (:func:`money_texts`, :func:`flag_texts`, :func:`stored_gtins`, :func:`csv_cells`)
produce text as POS exports write it, paired with the value it means, for connector parsing tests.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from typing import Any

from hypothesis import strategies as st

from grocerysync.core.codes import GtinStyle, check_digit
from grocerysync.core.items import Item, SizeUnit, WeightUnit

__all__ = [
    "csv_cells",
    "decimals",
    "extras",
    "flag_texts",
    "gtins",
    "item_batches",
    "item_ids",
    "item_names",
    "items",
    "money_texts",
    "multi_prices",
    "plus",
    "prices",
    "sales",
    "sizes",
    "stored_gtins",
]

# Characters a name may hold: anything printable. Control characters, surrogates, unassigned and private
# code points and the Unicode line/paragraph separators are left out: no POS stores them in a name, and
# str.splitlines() treats U+2028/U+2029 as line breaks, which would make a valid item unreadable by design.
_NAME_CHARS = st.characters(exclude_categories=("Cc", "Cs", "Cn", "Co", "Zl", "Zp"))

# Hand-picked pieces that break naive code: CSV delimiters and quotes, combining marks (e + U+0301 is not
# the same string as U+00E9), emoji with ZWJ sequences and skin tones, Hebrew and Arabic (RTL), CJK,
# full-width digits, spreadsheet formula starters, and words some tools treat as "no value".
_NASTY_WORDS = (
    'Bob\'s "Best"',
    "a,b;c|d\te",
    "Cafe\u0301",
    "Café",
    "Jalapen\u0303o",
    "🍎",
    "👩🏽‍🍳",
    "🏳️‍🌈",
    "חלב 3%",
    "خبز عربي",
    "豆腐",
    "１２ｏｚ",
    "=SUM(A1)",
    "+1",
    "-",
    "null",
    "None",
    "0",
    "O'Brien's",
    "½ & ½",
    "Ω≈ç√",
    "\u200b",
    "\u00a0",
)


@cache
def decimals(*, min_value: int = 0, max_value: int = 999_999, max_places: int = 4) -> st.SearchStrategy[Decimal]:
    """Decimals between ``min_value`` and ``max_value`` (units) with 0..``max_places`` decimal places.

    Built from text so the values never print in exponent form (``Decimal(0).scaleb(-4)`` prints ``0E-4``).
    """

    @st.composite
    def _draw(draw: st.DrawFn) -> Decimal:
        places = draw(st.integers(0, max_places))
        whole = draw(st.integers(min_value, max_value))
        if places == 0:
            return Decimal(whole)
        frac = draw(st.integers(0, 10**places - 1))
        sign = "-" if whole < 0 else ""
        return Decimal(f"{sign}{abs(whole)}.{frac:0{places}d}")

    return _draw()


@cache
def prices(*, max_places: int = 4) -> st.SearchStrategy[Decimal]:
    """Money: mostly shelf prices with cents, plus the extremes (0, 0.0001, 999999.9999) and 3-4 places.

    ``max_places`` caps the decimal places, for platforms that take cents only.
    """
    extremes = [Decimal("0"), Decimal("0.01"), Decimal("999999.99"), Decimal("0.99"), Decimal("100")]
    if max_places >= 4:
        extremes += [Decimal("0.0001"), Decimal("999999.9999"), Decimal("3.4990")]
    shelf = st.builds(lambda cents: Decimal(cents) / 100, st.integers(1, 99_999))
    return st.one_of(
        shelf,
        st.sampled_from(extremes),
        decimals(max_value=999_999, max_places=min(max_places, 4)),
    )


@cache
def gtins(lengths: Sequence[int] = (8, 12, 13, 14)) -> st.SearchStrategy[str]:
    """GTINs of the given lengths with correct check digits, leading zeros kept (``"012345678905"``)."""

    @st.composite
    def _draw(draw: st.DrawFn) -> str:
        length = draw(st.sampled_from(tuple(lengths)))
        body = draw(st.text("0123456789", min_size=length - 1, max_size=length - 1))
        return body + str(check_digit(body))

    return _draw()


@cache
def plus() -> st.SearchStrategy[str]:
    """PLUs as stores use them: 4-digit produce codes (3000-4999) and 5-digit organic (9xxxx) or store codes."""
    return st.one_of(
        st.integers(3000, 4999).map(str),
        st.integers(3000, 4999).map(lambda n: f"9{n}"),
        st.integers(0, 9999).map(lambda n: f"{n:04d}"),
        st.integers(20000, 89999).map(str),
    )


@cache
def item_ids() -> st.SearchStrategy[str]:
    """POS item keys: plain numbers (with leading zeros), SKUs with dashes and dots, and the longest allowed."""
    return st.one_of(
        st.integers(1, 10**12).map(str),
        st.integers(1, 99_999).map(lambda n: f"{n:08d}"),
        st.from_regex(r"[A-Z]{2,4}-[0-9]{1,6}(\.[0-9]{1,2})?", fullmatch=True),
        st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.", min_size=1, max_size=64).filter(
            lambda s: s.strip() == s
        ),
    )


def _stripped_nonempty(text: str) -> bool:
    stripped = text.strip()
    return bool(stripped) and len(stripped) <= 255


@cache
def item_names(*, max_size: int = 80) -> st.SearchStrategy[str]:
    """Item names: plain shelf names and nasty unicode, already stripped as the item model stores them."""
    plain = st.from_regex(r"[A-Z][A-Za-z ]{2,30}[a-z]", fullmatch=True)
    nasty = st.lists(
        st.one_of(st.sampled_from(_NASTY_WORDS), st.text(_NAME_CHARS, min_size=1, max_size=12)),
        min_size=1,
        max_size=6,
    ).map(" ".join)
    return (
        st.one_of(plain, nasty, st.text(_NAME_CHARS, min_size=1, max_size=max_size))
        .map(lambda s: s[:max_size])
        .filter(_stripped_nonempty)
        .map(str.strip)
    )


@cache
def sizes() -> st.SearchStrategy[dict[str, Any]]:
    """Package sizes as ``{"value": Decimal, "unit": SizeUnit}`` (12 oz, 1.5 l, 6 ct, 0.001 kg ...)."""
    return st.fixed_dictionaries(
        {
            "value": decimals(min_value=0, max_value=9_999, max_places=3).filter(lambda d: d > 0),
            "unit": st.sampled_from(list(SizeUnit)),
        }
    )


@cache
def _datetimes() -> st.SearchStrategy[datetime]:
    # Whole seconds in store local time: POS exports and feed formats rarely keep more.
    return st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31)).map(
        lambda d: d.replace(microsecond=0, fold=0)
    )


@cache
def sales(*, max_places: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """Sale prices with open, half-open and closed windows (a one-second window included)."""

    @st.composite
    def _draw(draw: st.DrawFn) -> dict[str, Any]:
        sale: dict[str, Any] = {"price": draw(prices(max_places=max_places))}
        start = draw(st.none() | _datetimes())
        if start is not None:
            sale["start"] = start
        if draw(st.booleans()):
            base = start or datetime(2030, 1, 1)
            sale["end"] = base + draw(st.sampled_from([timedelta(seconds=1), timedelta(days=7), timedelta(days=400)]))
        return sale

    return _draw()


@cache
def multi_prices(*, max_places: int = 4) -> st.SearchStrategy[dict[str, Any]]:
    """Quantity prices such as 2 for $5 (quantity 2..1000)."""
    return st.fixed_dictionaries(
        {"quantity": st.integers(2, 1000), "price": prices(max_places=max_places)},
    )


@cache
def extras() -> st.SearchStrategy[dict[str, Any]]:
    """Extra POS fields: names like ``vendor_code`` with text, integer, finite float, boolean or null values."""
    keys = st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True)
    values = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**53), 2**53),
        st.floats(allow_nan=False, allow_infinity=False, width=32),
        st.text(_NAME_CHARS, max_size=20),
    )
    return st.dictionaries(keys, values, max_size=4)


_CODE_KINDS = {"any": ("gtin", "plu", "both", "none"), "required": ("gtin", "plu", "both")}


@st.composite
def _item_data(
    draw: st.DrawFn, item_id: st.SearchStrategy[str], codes: str, max_places: int, minimal: bool
) -> dict[str, Any]:
    data: dict[str, Any] = {
        "item_id": draw(item_id),
        "name": draw(item_names()),
        "price": draw(prices(max_places=max_places)),
    }
    code_kind = draw(st.sampled_from(_CODE_KINDS.get(codes, (codes,))))
    if code_kind in ("gtin", "both"):
        data["gtin"] = draw(gtins())
    if code_kind in ("plu", "both"):
        data["plu"] = draw(plus())
    if minimal:
        return data
    weighed = draw(st.booleans())
    if weighed:
        data["sold_by_weight"] = True
        data["weight_unit"] = draw(st.sampled_from(list(WeightUnit)))
        data["stock"] = draw(decimals(min_value=-999, max_value=99_999, max_places=3))
    else:
        data["stock"] = draw(st.none() | st.integers(-50, 10**6).map(Decimal))
    for name, strategy in _optional_fields(max_places).items():
        if draw(st.booleans()):
            data[name] = draw(strategy)
    for flag in ("taxable", "snap_ebt", "wic"):
        data[flag] = draw(st.booleans())
    data["online"] = draw(st.booleans())
    data["active"] = draw(st.booleans())
    return data


# Strategies are built once: building one (from_regex above all) costs far more than drawing from it.
@cache
def _optional_fields(max_places: int) -> dict[str, st.SearchStrategy[Any]]:
    return {
        "brand": item_names(max_size=40),
        "size": sizes(),
        "department": st.sampled_from(["Produce", "Dairy", "Beer & Wine", "Deli/Bakery", "Health & Beauty", "生鮮"]),
        "category": item_names(max_size=30),
        "cost": prices(max_places=max_places),
        "sale": sales(max_places=max_places),
        "multi_price": multi_prices(max_places=max_places),
        "min_age": st.sampled_from([18, 21]),
        "bottle_deposit": st.sampled_from([Decimal("0.05"), Decimal("0.10"), Decimal("0.15")]),
        "image_url": st.from_regex(r"https://img\.example\.com/[a-z0-9]{1,12}\.(jpg|png)", fullmatch=True),
        "last_changed": _datetimes(),
        "extras": extras(),
    }


def items(
    *,
    item_id: st.SearchStrategy[str] | None = None,
    codes: str = "any",
    max_places: int = 4,
    minimal: bool = False,
) -> st.SearchStrategy[Item]:
    """Valid :class:`Item` objects with nasty but legal values.

    - ``item_id``: a strategy for the key (default :func:`item_ids`).
    - ``codes``: ``"any"`` (GTIN, PLU, both or neither), ``"required"`` (at least one, as a lookup-code feed
      needs), ``"gtin"``, ``"plu"``, ``"both"`` or ``"none"``.
    - ``max_places``: decimal places of money fields (2 for a platform that takes cents only).
    - ``minimal``: only item_id, name, price and the codes (for sources that carry nothing else).
    """
    return _item_data(item_id or item_ids(), codes, max_places, minimal).map(Item.model_validate)


def item_batches(
    *,
    min_size: int = 0,
    max_size: int = 20,
    item: st.SearchStrategy[Item] | None = None,
) -> st.SearchStrategy[list[Item]]:
    """Lists of items whose ``item_id`` values are unique, also ignoring case (some platforms fold case)."""
    return st.lists(
        item if item is not None else items(),
        min_size=min_size,
        max_size=max_size,
        unique_by=lambda i: i.item_id.casefold(),
    )


# ---------------------------------------------------------------------------
# Raw values as POS exports write them, paired with what they mean
# ---------------------------------------------------------------------------


def csv_cells() -> st.SearchStrategy[str]:
    """Cell text that breaks hand-rolled CSV code: quotes, delimiters, CR/LF, BOMs, padding, unicode."""
    return st.one_of(
        st.sampled_from(['"', '""', ",", ";", "|", "\t", "\r\n", "\n", "\ufeff", " x ", 'say "hi", ok', "a\nb"]),
        st.text(st.characters(codec="utf-8"), max_size=30),
    )


@st.composite
def money_texts(draw: st.DrawFn) -> tuple[str, bool, Decimal]:
    """``(text, decimal_comma, value)``: a price as a POS writes it, e.g. ``("$1,234.50", False, 1234.50)``.

    ``decimal_comma`` says whether the text uses the European style ``1.234,50``.
    """
    value = draw(decimals(max_value=99_999, max_places=2))
    decimal_comma = draw(st.booleans())
    thousands = draw(st.booleans())
    whole, _, frac = f"{value:.2f}".partition(".")
    if thousands:
        whole = f"{int(whole):,}"
    text = whole.replace(",", ".") + "," + frac if decimal_comma else whole + "." + frac
    symbol = draw(st.sampled_from(["", "$", "€", "£"]))
    pad = draw(st.sampled_from(["", " "]))
    return f"{pad}{symbol}{text}{pad}", decimal_comma, value


@st.composite
def flag_texts(draw: st.DrawFn) -> tuple[str, bool]:
    """``(text, value)`` for yes/no columns: Y/N, Yes/No, 1/0, T/F, TRUE/FALSE, X/blank, in any case."""
    value = draw(st.booleans())
    pairs = [("Y", "N"), ("Yes", "No"), ("1", "0"), ("T", "F"), ("TRUE", "FALSE"), ("X", "")]
    yes, no = draw(st.sampled_from(pairs))
    text = yes if value else no
    text = draw(st.sampled_from([text, text.lower(), text.upper()]))
    return text, value


@st.composite
def stored_gtins(draw: st.DrawFn) -> tuple[str, GtinStyle, str]:
    """``(raw, style, canonical)``: a barcode as a POS stores it, the style that reads it, and the result.

    ``canonical`` is what :func:`grocerysync.core.codes.normalize_gtin` returns for ``raw`` under ``style``.
    """
    style = draw(st.sampled_from(list(GtinStyle)))
    if style is GtinStyle.STRICT:
        code = draw(gtins((8, 12, 13, 14)).filter(lambda c: not (len(c) == 8 and c[0] in "01")))
        sep = draw(st.sampled_from(["", " ", "-"]))
        raw = code if not sep or len(code) < 12 else f"{code[:1]}{sep}{code[1:6]}{sep}{code[6:11]}{sep}{code[11:]}"
        return raw, style, code
    if style is GtinStyle.ZERO_PADDED:
        code = draw(gtins((12, 13, 14)))
        width = draw(st.sampled_from([14, 16, 18]))
        stripped = code.lstrip("0")
        canonical = stripped.rjust(max(12, len(stripped)), "0")
        return code.rjust(width, "0"), style, canonical
    body = draw(st.text("0123456789", min_size=11, max_size=11))
    stripped = body.lstrip("0")
    padded = stripped.rjust(max(11, len(stripped)), "0")
    canonical = padded + str(check_digit(padded))
    return body.rjust(draw(st.sampled_from([11, 13, 15])), "0"), style, canonical
