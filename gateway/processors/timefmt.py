"""Timestamps as documents carry them: ISO 8601 UTC with milliseconds (``...T10:15:00.123Z``)."""

from __future__ import annotations

__all__ = ["iso_utc", "iso_utc_each"]

from datetime import UTC, datetime

import numpy as np
from numpy.typing import NDArray


def iso_utc(timestamp_ns: int) -> str:
    """ISO 8601 in UTC, millisecond precision, ``Z`` suffix."""
    moment = datetime.fromtimestamp(timestamp_ns / 1e9, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def iso_utc_each(timestamps_ns: NDArray[np.int64]) -> list[str]:
    """:func:`iso_utc` of many timestamps, milliseconds truncated; each second formatted once."""
    seconds, rest = np.divmod(timestamps_ns, 1_000_000_000)
    heads: dict[int, str] = {}
    out = []
    for second, ms in zip(seconds.tolist(), (rest // 1_000_000).tolist(), strict=True):
        head = heads.get(second)
        if head is None:
            head = heads[second] = datetime.fromtimestamp(second, UTC).strftime(
                "%Y-%m-%dT%H:%M:%S."
            )
        out.append(f"{head}{ms:03d}Z")
    return out
