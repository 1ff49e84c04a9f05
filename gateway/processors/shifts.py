"""The shift calendar at run time: shift instances as UTC nanosecond intervals.

Processors ask three questions, always with sample timestamps (never the wall clock, so that a
replay of recorded data gives the same documents): which shift is running at t, which shifts
ended between t0 and t1, and how much planned time (shift time minus breaks) lies in [t0, t1).
Local times are turned into UTC with :mod:`zoneinfo`, so a night shift across a daylight-saving
change lasts 7 or 9 hours, as it does on the shop floor.
"""

from __future__ import annotations

__all__ = ["DEFAULT_CALENDAR", "ShiftCalendar", "ShiftInstance"]

import zoneinfo
from collections import OrderedDict
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from gateway.config.shifts import WEEKDAYS, ShiftCalendarConfig, ShiftConfig

_NS = 1_000_000_000
_DAY_NS = 86_400 * _NS
_CACHE_DAYS = 64

DEFAULT_CALENDAR = ShiftCalendarConfig(
    timezone="UTC", shifts=[ShiftConfig(name="day", start="00:00", end="24:00")]
)
"""Used when the config has no ``shifts:`` section."""


@dataclass(frozen=True, slots=True)
class ShiftInstance:
    """One occurrence of a shift."""

    id: str
    """``<local start date>/<name>``: ``2025-05-04/night``."""
    name: str
    start_ns: int
    end_ns: int
    breaks: tuple[tuple[int, int], ...] = ()
    """Planned breaks as [start, end) in ns, within the shift."""

    def planned_ns(self, start_ns: int, end_ns: int) -> int:
        """Planned production time of this shift inside [start_ns, end_ns)."""
        low, high = max(start_ns, self.start_ns), min(end_ns, self.end_ns)
        if high <= low:
            return 0
        total = high - low
        for b_start, b_end in self.breaks:
            total -= max(0, min(high, b_end) - max(low, b_start))
        return total


class ShiftCalendar:
    """Shift instances of a :class:`ShiftCalendarConfig`, computed per local date and cached."""

    def __init__(self, config: ShiftCalendarConfig | None = None) -> None:
        self.config = config or DEFAULT_CALENDAR
        self._zone = zoneinfo.ZoneInfo(self.config.timezone)
        self._holidays = frozenset(self.config.non_working_days)
        self._by_day: OrderedDict[date, tuple[ShiftInstance, ...]] = OrderedDict()
        self._max_length_ns = max(s.length_s for s in self.config.shifts) * _NS
        self._last: ShiftInstance | None = None

    def _to_ns(self, local: datetime) -> int:
        return int(local.replace(tzinfo=self._zone).timestamp()) * _NS

    def _local_date(self, timestamp_ns: int) -> date:
        return datetime.fromtimestamp(timestamp_ns / _NS, self._zone).date()

    def starting_on(self, day: date) -> tuple[ShiftInstance, ...]:
        """The shifts that start on a local date, in time order."""
        cached = self._by_day.get(day)
        if cached is not None:
            self._by_day.move_to_end(day)
            return cached
        found: list[ShiftInstance] = []
        if day not in self._holidays:
            weekday = WEEKDAYS[day.weekday()]
            midnight = datetime(day.year, day.month, day.day)
            for shift in self.config.shifts:
                if weekday not in shift.days:
                    continue
                start = midnight + timedelta(seconds=shift.start_s)
                end = start + timedelta(seconds=shift.length_s)
                breaks = tuple(
                    (
                        self._to_ns(start + timedelta(seconds=b_start)),
                        self._to_ns(start + timedelta(seconds=b_end)),
                    )
                    for b_start, b_end in shift.break_offsets()
                )
                found.append(
                    ShiftInstance(
                        f"{day.isoformat()}/{shift.name}",
                        shift.name,
                        self._to_ns(start),
                        self._to_ns(end),
                        breaks,
                    )
                )
        result = tuple(sorted(found, key=lambda s: s.start_ns))
        self._by_day[day] = result
        if len(self._by_day) > _CACHE_DAYS:
            self._by_day.popitem(last=False)
        return result

    def overlapping(self, start_ns: int, end_ns: int) -> list[ShiftInstance]:
        """Shift instances that overlap [start_ns, end_ns), in time order."""
        first = self._local_date(start_ns - self._max_length_ns - _DAY_NS)
        last = self._local_date(end_ns + _DAY_NS)
        out: list[ShiftInstance] = []
        day = first
        while day <= last:
            out.extend(
                s for s in self.starting_on(day) if s.start_ns < end_ns and s.end_ns > start_ns
            )
            day += timedelta(days=1)
        return out

    def at(self, timestamp_ns: int) -> ShiftInstance | None:
        """The shift running at a moment (start inclusive, end exclusive), or None."""
        last = self._last
        if last is not None and last.start_ns <= timestamp_ns < last.end_ns:
            return last
        found = self.overlapping(timestamp_ns, timestamp_ns + 1)
        if found:
            self._last = found[0]
        return found[0] if found else None

    def ended_between(self, after_ns: int, until_ns: int) -> list[ShiftInstance]:
        """Shifts whose end lies in (after_ns, until_ns], in time order."""
        if until_ns <= after_ns:
            return []
        return [
            s
            for s in self.overlapping(after_ns - self._max_length_ns, until_ns + 1)
            if after_ns < s.end_ns <= until_ns
        ]

    def boundaries(self, after_ns: int, until_ns: int) -> list[int]:
        """Shift starts and ends in (after_ns, until_ns], sorted, without duplicates."""
        if until_ns <= after_ns:
            return []
        found: set[int] = set()
        for shift in self.overlapping(after_ns - self._max_length_ns, until_ns + 1):
            for moment in (shift.start_ns, shift.end_ns):
                if after_ns < moment <= until_ns:
                    found.add(moment)
        return sorted(found)

    def next_boundary_after(self, timestamp_ns: int) -> int:
        """The first shift start or end after a moment (2**62 when none within two weeks)."""
        for days in (2, 15):
            moments = [
                moment
                for s in self.overlapping(timestamp_ns, timestamp_ns + days * _DAY_NS)
                for moment in (s.start_ns, s.end_ns)
                if moment > timestamp_ns
            ]
            if moments:
                return min(moments)
        return 1 << 62

    def next_end_after(self, timestamp_ns: int) -> int:
        """The first shift end after a moment (looks up to two weeks ahead; else +inf as 2**62)."""
        for days in (2, 15):
            ends = [
                s.end_ns
                for s in self.overlapping(timestamp_ns, timestamp_ns + days * _DAY_NS)
                if s.end_ns > timestamp_ns
            ]
            if ends:
                return min(ends)
        return 1 << 62

    def planned_ns(self, start_ns: int, end_ns: int) -> int:
        """Planned production time (shift time minus breaks) in [start_ns, end_ns)."""
        if end_ns <= start_ns:
            return 0
        return sum(s.planned_ns(start_ns, end_ns) for s in self.overlapping(start_ns, end_ns))
