"""Configuration of the shift calendar: which hours of which days are planned production time.

The calendar is a top-level section because several processors share it: work reports close
a segment at every shift end (the ``shift_end`` trigger), OEE measures availability against the
planned time of each shift and reports per shift. Example::

    shifts:
      timezone: Europe/Berlin
      shifts:
        - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri],
           breaks: [{start: "09:00", end: "09:15"}]}
        - {name: late, start: "14:00", end: "22:00", days: [mon, tue, wed, thu, fri]}
        - {name: night, start: "22:00", end: "06:00", days: [sun, mon, tue, wed, thu]}
      non_working_days: [2025-12-25]

A shift whose end is not after its start runs past midnight; `days` are the days it *starts* on.
Without a ``shifts:`` section the calendar is one 24-hour shift called ``day`` (00:00 to 24:00
UTC, every day).
"""

from __future__ import annotations

__all__ = [
    "WEEKDAYS",
    "BreakConfig",
    "ShiftCalendarConfig",
    "ShiftConfig",
    "TimeOfDay",
    "minutes_of",
]

import itertools
import re
import zoneinfo
from datetime import date
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from gateway.config.common import ConfigModel, Name

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_ALL_DAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

TimeOfDay = Annotated[str, Field(pattern=r"^([01]\d|2[0-3]):[0-5]\d(:[0-5]\d)?$|^24:00(:00)?$")]
"""A local wall-clock time ``HH:MM`` or ``HH:MM:SS`` (``24:00`` for the end of a day)."""

_DAY_S = 86_400


def minutes_of(text: str) -> float:
    """``"06:30"`` → 390.0 (minutes after midnight; seconds as a fraction)."""
    parts = [int(p) for p in re.split(":", text)]
    seconds = parts[0] * 3600 + parts[1] * 60 + (parts[2] if len(parts) > 2 else 0)
    return seconds / 60


class BreakConfig(ConfigModel):
    """A planned break inside a shift: not planned production time."""

    start: TimeOfDay
    end: TimeOfDay


class ShiftConfig(ConfigModel):
    """One shift of the weekly pattern."""

    name: Name
    """Short name (``early``); a shift's id is ``<start date>/<name>`` (``2025-05-04/early``)."""
    start: TimeOfDay
    """Local start time."""
    end: TimeOfDay
    """Local end time; not after `start` means the shift ends the next day."""
    days: list[Weekday] = Field(default_factory=lambda: list(_ALL_DAYS))
    """Days of the week the shift starts on."""
    breaks: list[BreakConfig] = Field(default_factory=list)
    """Planned breaks (local times within the shift)."""

    @property
    def start_s(self) -> int:
        return round(minutes_of(self.start) * 60)

    @property
    def length_s(self) -> int:
        end = round(minutes_of(self.end) * 60)
        return end - self.start_s if end > self.start_s else end + _DAY_S - self.start_s

    def break_offsets(self) -> list[tuple[int, int]]:
        """Breaks as (start, end) seconds after the shift's start."""
        spans = []
        for item in self.breaks:
            start = round(minutes_of(item.start) * 60) - self.start_s
            end = round(minutes_of(item.end) * 60) - self.start_s
            start %= _DAY_S
            end %= _DAY_S
            if end == 0:
                end = _DAY_S
            spans.append((start, end))
        return sorted(spans)

    @model_validator(mode="after")
    def _check(self) -> ShiftConfig:
        if not self.days:
            raise ValueError("days must name at least one weekday")
        length = self.length_s
        last_end = 0
        for index, (start, end) in enumerate(self.break_offsets()):
            if not 0 <= start < end <= length:
                raise ValueError(
                    f"breaks[{index}] ({self.breaks[index].start}-{self.breaks[index].end}) "
                    f"is not inside the shift {self.start}-{self.end}"
                )
            if start < last_end:
                raise ValueError("breaks overlap")
            last_end = end
        return self


class ShiftCalendarConfig(ConfigModel):
    """The plant's shift pattern (see the module docstring)."""

    timezone: str = "UTC"
    """IANA time zone of the shift times (``Europe/Berlin``); daylight saving is applied."""
    shifts: Annotated[list[ShiftConfig], Field(min_length=1)]
    non_working_days: list[date] = Field(default_factory=list)
    """Dates (holidays) on which no shift starts."""

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (expected e.g. Europe/Berlin)") from None
        return value

    @model_validator(mode="after")
    def _no_overlap(self) -> ShiftCalendarConfig:
        names = [s.name for s in self.shifts]
        duplicate = {n for n in names if names.count(n) > 1}
        if duplicate:
            raise ValueError(f"duplicate shift name {sorted(duplicate)[0]!r}")
        # Shifts of one week (plus the night shifts spilling into the next Monday) must not
        # overlap; checked in local wall-clock seconds from Monday 00:00.
        spans: list[tuple[int, int, str]] = []
        for shift in self.shifts:
            for day in shift.days:
                start = WEEKDAYS.index(day) * _DAY_S + shift.start_s
                spans.append((start, start + shift.length_s, shift.name))
                spans.append((start + 7 * _DAY_S, start + 7 * _DAY_S + shift.length_s, shift.name))
        spans.sort()
        for (_, e1, n1), (s2, _, n2) in itertools.pairwise(spans):
            if s2 < e1:
                weekday = WEEKDAYS[(s2 // _DAY_S) % 7]
                raise ValueError(f"shifts {n1!r} and {n2!r} overlap on {weekday}")
        return self
