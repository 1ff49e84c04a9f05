"""Times of the ``scheduled`` sync mode: release the backlog at set local times.

:func:`release_window` answers, for a moment, the last release time at or before it (the
cut-off: documents stored before it may go) and the next release time (when to wake up).
Daylight-saving changes follow the time zone: a time that does not exist that day (02:30 on
the spring change) falls back to the next valid instant; one that exists twice counts once.
"""

from __future__ import annotations

__all__ = ["release_window"]

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo


def _times(at: list[str]) -> list[time]:
    return sorted(time(int(t[:2]), int(t[3:5])) for t in at)


def _instant(day: datetime, moment: time, zone: ZoneInfo) -> datetime:
    local = datetime.combine(day.date(), moment, tzinfo=zone)
    # normalise through UTC: a non-existent local time moves forward
    return local.astimezone(UTC).astimezone(zone)


def release_window(now_ns: int, at: list[str], timezone: str) -> tuple[int, int]:
    """(last release at or before `now_ns`, next release after it), in nanoseconds."""
    zone = ZoneInfo(timezone)
    now = datetime.fromtimestamp(now_ns / 1e9, UTC).astimezone(zone)
    times = _times(at)
    candidates = [
        _instant(now + timedelta(days=offset), moment, zone)
        for offset in (-1, 0, 1)
        for moment in times
    ]
    instants = sorted({c.astimezone(UTC) for c in candidates})
    now_utc = now.astimezone(UTC)
    previous = max(i for i in instants if i <= now_utc)
    following = min(i for i in instants if i > now_utc)
    return int(previous.timestamp() * 1e9), int(following.timestamp() * 1e9)
