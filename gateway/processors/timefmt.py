"""Timestamps as documents carry them: ISO 8601 UTC with milliseconds (``...T10:15:00.123Z``).

Both functions truncate to the millisecond (floor, also before 1970), so one moment always
gives the same text, whichever of them formats it.
"""

from __future__ import annotations

__all__ = ["iso_utc", "iso_utc_each"]

import time

import numpy as np
from numpy.typing import NDArray

_NS_PER_S = 1_000_000_000
_NS_PER_MS = 1_000_000


def iso_utc(timestamp_ns: int) -> str:
    """ISO 8601 in UTC, millisecond precision, ``Z`` suffix."""
    seconds, rest = divmod(timestamp_ns, _NS_PER_S)
    head = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))
    return f"{head}.{rest // _NS_PER_MS:03d}Z"


def iso_utc_each(timestamps_ns: NDArray[np.int64]) -> list[str]:
    """:func:`iso_utc` of many timestamps, formatted by numpy in one call."""
    stamps = np.asarray(timestamps_ns, np.int64).view("datetime64[ns]")
    texts: list[str] = np.datetime_as_string(stamps, unit="ms", timezone="UTC").tolist()
    return texts
