"""Input parsing of the read use-cases: times, spans, redacted URLs."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from homewarden.errors import InvalidRequestError
from homewarden.services.queries import MAX_TIME, parse_span, parse_time, redact_url


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000", 1_700_000_000.0),
        ("1700000000.25", 1_700_000_000.25),
        (" 0 ", 0.0),
        ("2023-11-14T22:13:20Z", 1_700_000_000.0),
        ("2023-11-14T22:13:20+00:00", 1_700_000_000.0),
        ("2023-11-14T23:13:20+01:00", 1_700_000_000.0),
        ("2023-11-14T22:13:20.500Z", 1_700_000_000.5),
        ("2023-11-14T22:13:20", 1_700_000_000.0),  # no offset: UTC, not local time
        ("2023-11-14 22:13:20", 1_700_000_000.0),
        ("2023-11-14", 1_699_920_000.0),
    ],
)
def test_parse_time_accepts_epoch_and_iso8601(text: str, expected: float) -> None:
    assert parse_time(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["", "yesterday", "nan", "inf", "-1", "2023-13-01", "12:00"])
def test_parse_time_rejects_with_the_parameter_name(text: str) -> None:
    with pytest.raises(InvalidRequestError, match="since="):
        parse_time(text, name="since")


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_parse_time_round_trips_epoch_seconds(ts: float) -> None:
    assert parse_time(repr(ts)) == ts
    assert parse_time(ts) == ts


def test_parse_span() -> None:
    assert parse_span(None, None) == (None, None)
    assert parse_span("10", None) == (10.0, None)
    assert parse_span(None, "1970-01-01T00:00:20Z") == (None, 20.0)
    with pytest.raises(InvalidRequestError, match="after"):
        parse_span("20", "20")
    with pytest.raises(InvalidRequestError, match="until"):
        parse_span("20", "junk")


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("rtsp://admin:pw@192.0.2.1:554/s1", "rtsp://admin:***@192.0.2.1:554/s1"),
        ("rtsp://admin:pw@[2001:db8::1]/s?x=1", "rtsp://admin:***@[2001:db8::1]/s?x=1"),
        ("rtsp://192.0.2.1/s1", "rtsp://192.0.2.1/s1"),
        ("rtsp://viewer@192.0.2.1/s1", "rtsp://viewer@192.0.2.1/s1"),
        ("file:/srv/clip.mp4", "file:/srv/clip.mp4"),
        ("postgresql+psycopg://hw:secret@db/hw", "postgresql+psycopg://hw:***@db/hw"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


@pytest.mark.parametrize(
    "text",
    ["1e12", "1000000000010", "1e17", "1e308", "253402300800", "9999-12-31T23:59:59-01:00"],
)
def test_parse_time_rejects_times_past_year_9999_naming_the_parameter(text: str) -> None:
    # 1e12 reached a message formatter as "year 33658 is out of range"; 1e17 an OSError.
    with pytest.raises(InvalidRequestError, match=r"start=.*9999"):
        parse_time(text, name="start")
    with pytest.raises(InvalidRequestError, match="start="):
        parse_time(float(text) if text[0] != "9" else 253402300800.0, name="start")


def test_parse_time_accepts_the_last_second_of_9999() -> None:
    assert parse_time("9999-12-31T23:59:59Z") == MAX_TIME - 1
    assert parse_time("253402300799.5") == MAX_TIME - 0.5
    assert datetime.fromtimestamp(MAX_TIME - 0.001, UTC).year == 9999
