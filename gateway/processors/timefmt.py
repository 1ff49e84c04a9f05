"""Timestamps as documents carry them: ISO 8601 UTC with milliseconds (``...T10:15:00.123Z``)."""

from __future__ import annotations

__all__ = ["iso_utc"]

from datetime import UTC, datetime


def iso_utc(timestamp_ns: int) -> str:
    """ISO 8601 in UTC, millisecond precision, ``Z`` suffix."""
    moment = datetime.fromtimestamp(timestamp_ns / 1e9, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
