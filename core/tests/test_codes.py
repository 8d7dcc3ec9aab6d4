import pytest
from hypothesis import given
from hypothesis import strategies as st

from grocerysync.core.codes import (
    GtinStyle,
    check_digit,
    expand_upce,
    is_valid_gtin,
    normalize_gtin,
    validate_plu,
)
from grocerysync.core.items import _gtin


@pytest.mark.parametrize(
    ("body", "digit"),
    [("03600029145", 2), ("400638133393", 1), ("9638507", 4), ("1001234567890", 2)],
)
def test_check_digit_matches_published_codes(body: str, digit: int) -> None:
    assert check_digit(body) == digit


@pytest.mark.parametrize("code", ["036000291452", "4006381333931", "96385074", "10012345678902"])
def test_valid_gtins(code: str) -> None:
    assert is_valid_gtin(code)


@pytest.mark.parametrize("code", ["036000291453", "4006381333932", "12345", "03600029145x", ""])
def test_invalid_gtins(code: str) -> None:
    assert not is_valid_gtin(code)


def test_upce_expands_to_upca() -> None:
    assert expand_upce("04252614") == "042100005264"
    assert normalize_gtin("04252614") == "042100005264"
    assert expand_upce("21234567") is None  # number system 2 is not UPC-E


def test_strict_keeps_code_and_strips_separators() -> None:
    assert normalize_gtin(" 0 36000-29145 2 ") == "036000291452"


def test_strict_reports_expected_check_digit() -> None:
    with pytest.raises(ValueError, match="bad check digit: 3, expected 2"):
        normalize_gtin("036000291453")


def test_strict_names_the_style_setting_for_odd_lengths() -> None:
    with pytest.raises(ValueError, match="GTIN style"):
        normalize_gtin("03600029145")


def test_zero_padded_style_strips_padding() -> None:
    assert normalize_gtin("000036000291452", GtinStyle.ZERO_PADDED) == "036000291452"
    assert normalize_gtin("0004006381333931", GtinStyle.ZERO_PADDED) == "4006381333931"
    with pytest.raises(ValueError, match="check digit"):
        normalize_gtin("000036000291453", GtinStyle.ZERO_PADDED)


def test_no_check_digit_style_appends_it() -> None:
    assert normalize_gtin("3600029145", GtinStyle.NO_CHECK_DIGIT) == "036000291452"
    assert normalize_gtin("00000400638133393", GtinStyle.NO_CHECK_DIGIT) == "4006381333931"


@pytest.mark.parametrize("raw", ["abc", "12a45678", "   "])
def test_non_digits_are_refused(raw: str) -> None:
    with pytest.raises(ValueError, match=r"digits only|empty"):
        normalize_gtin(raw)


def test_plu() -> None:
    assert validate_plu(" 4011 ") == "4011"
    assert validate_plu("94011") == "94011"
    with pytest.raises(ValueError, match="4 or 5 digits"):
        validate_plu("401")


@given(st.text(alphabet="0123456789", min_size=7, max_size=15) | st.text(max_size=16))
def test_the_item_models_barcode_check_agrees_with_normalize_gtin(raw: str) -> None:
    # Item validation checks complete codes inline and leaves the rest to normalize_gtin: same answers.
    try:
        expected: str | None = normalize_gtin(raw)
    except ValueError:
        expected = None
    try:
        got: str | None = _gtin(raw)
    except ValueError:
        got = None
    assert got == expected


def test_the_inline_check_finds_one_wrong_digit_anywhere() -> None:
    code = "036000291452"  # a published UPC-A
    assert _gtin(code) == code
    for position in range(len(code)):
        for digit in "0123456789":
            if digit != code[position]:
                wrong = code[:position] + digit + code[position + 1 :]
                with pytest.raises(ValueError, match="check digit"):
                    _gtin(wrong)
