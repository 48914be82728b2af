"""Times in messages: UTC epoch seconds as ISO 8601 text that never raises.

Messages quote times a caller passed in (``start=1e12`` from a URL or a command line), and
Python's ``datetime`` refuses many floats: 1e12 s is past year 9999 (``ValueError: year 33658
is out of range``), 1e17 overflows the C ``time_t`` conversion (``OSError: [Errno 75]``), and
NaN or infinity raise too. An error message must not crash while it is being built, so a time
that is no date is quoted as the raw float instead. Importable from every layer (it is pure).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime


def utc_text(ts: float) -> str:
    """``ts`` (UTC epoch seconds) as ``YYYY-MM-DDTHH:MM:SS.mmmZ``, or ``repr(ts)`` when it is
    not a representable date (non-finite, before year 1 or after year 9999, or beyond the
    platform's ``time_t``). Never raises.

    >>> utc_text(1_700_000_000.25)
    '2023-11-14T22:13:20.250Z'
    >>> utc_text(1e12)
    '1000000000000.0'
    """
    if not math.isfinite(ts):
        return repr(ts)
    try:
        when = datetime.fromtimestamp(ts, UTC)
    except (ValueError, OverflowError, OSError):
        return repr(ts)
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def utc_seconds_text(ts: float) -> str:
    """``ts`` (UTC epoch seconds) as ``YYYY-MM-DDTHH:MM:SSZ`` (whole seconds, truncated), or
    ``repr(ts)`` when it is not a representable date, as :func:`utc_text`. Never raises.

    >>> utc_seconds_text(1_700_000_000.75)
    '2023-11-14T22:13:20Z'
    """
    if not math.isfinite(ts):
        return repr(ts)
    try:
        when = datetime.fromtimestamp(math.floor(ts), UTC)
    except (ValueError, OverflowError, OSError):
        return repr(ts)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ")
