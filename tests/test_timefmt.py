"""Times quoted in messages never crash the message (``homewarden.timefmt``)."""

from __future__ import annotations

import math
import sys

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homewarden.timefmt import utc_text


def test_ordinary_time_is_iso_utc_with_milliseconds() -> None:
    assert utc_text(1_700_000_000.25) == "2023-11-14T22:13:20.250Z"
    assert utc_text(0.0) == "1970-01-01T00:00:00.000Z"
    assert utc_text(-1.5) == "1969-12-31T23:59:58.500Z"


@pytest.mark.parametrize(
    "ts",
    [
        1e12,  # year 33658: "year is out of range" (ValueError)
        1e17,  # beyond time_t conversions: OSError [Errno 75] / OverflowError
        -1e17,
        sys.float_info.max,
        math.inf,
        -math.inf,
        math.nan,
    ],
)
def test_time_formatter_falls_back_to_the_raw_float(ts: float) -> None:
    assert utc_text(ts) == repr(ts)


@given(st.floats())
def test_time_formatter_never_raises(ts: float) -> None:
    assert isinstance(utc_text(ts), str)


def test_utc_seconds_text_is_whole_seconds_and_never_raises() -> None:
    """The one formatter of request pages, notices and mails (a 1e300 date crashed a page)."""
    from homewarden.timefmt import utc_seconds_text

    assert utc_seconds_text(1_700_000_000.75) == "2023-11-14T22:13:20Z"
    assert utc_seconds_text(0.0) == "1970-01-01T00:00:00Z"
    for bad in (1e300, float("inf"), float("nan"), -1e300):
        assert utc_seconds_text(bad) == repr(bad)
