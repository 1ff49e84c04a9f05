"""The shift calendar and the MES processors' config: validation with paths, and the calendar's
shift instances (daylight saving, breaks, holidays)."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from gateway.config.load import load_config_text
from gateway.config.shifts import ShiftCalendarConfig
from gateway.errors import ConfigError
from gateway.processors.shifts import ShiftCalendar

BASE = """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: State, address: 0, type: uint16}
      - {name: Good, address: 2, type: uint16}
      - {name: Temp, address: 4, type: float32}
      - {name: Order, address: 10, type: string, length: 16}
      - {name: Lot, address: 28, type: string, length: 16}
"""


def issues(text: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config_text(BASE + text)
    return [str(issue) for issue in caught.value.issues]


def test_a_full_mes_config_loads() -> None:
    config = load_config_text(
        BASE
        + """
shifts:
  timezone: Europe/Berlin
  shifts:
    - {name: early, start: "06:00", end: "14:00", days: [mon, tue, wed, thu, fri],
       breaks: [{start: "09:00", end: "09:15"}]}
    - {name: night, start: "22:00", end: "06:00", days: [sun, mon, tue, wed, thu]}
  non_working_days: [2025-12-25]
processors:
  - {type: work_report, machine: M1, good: M1/Good, order: M1/Order,
     triggers: [order_change, shift_end]}
  - {type: oee, machine: M1, state: M1/State, good: M1/Good, order: M1/Order,
     ideal_cycle_time: 2.5, states: {7: planned_stop}, reasons: {301: planned_stop}}
  - {type: spc, machine: M1, characteristics: [{name: t, values: M1/Temp, subgroup: 5,
     control_limits: {ucl: 25, lcl: 15}, rules: [1, 2, 5]}]}
  - {type: genealogy, machine: M1, lot: M1/Lot, components: [M1/Order], process: [M1/Temp]}
"""
    )
    assert config.shifts is not None and config.shifts.shifts[1].length_s == 8 * 3600
    assert [p.key for p in config.processors] == [
        "work_report.M1",
        "oee.M1",
        "spc.M1",
        "genealogy.M1",
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "shifts: {shifts: [{name: a, start: '06:00', end: '14:00'}, "
            "{name: b, start: '13:00', end: '22:00'}]}",
            "shifts (line 13): shifts 'a' and 'b' overlap on mon",
        ),
        (
            "shifts: {timezone: Mars/Olympus, shifts: [{name: a, start: '06:00', end: '14:00'}]}",
            "shifts.timezone",
        ),
        (
            "shifts: {shifts: [{name: a, start: '22:00', end: '06:00', "
            "breaks: [{start: '12:00', end: '12:30'}]}]}",
            "is not inside the shift 22:00-06:00",
        ),
        ("shifts: {shifts: [{name: a, start: '25:00', end: '06:00'}]}", "shifts.shifts[0].start"),
        (
            "processors: [{type: oee, machine: M1, state: M1/State, good: M1/Good}]",
            "set ideal_cycle_time",
        ),
        (
            "processors: [{type: oee, machine: M1, state: M1/Order, good: M1/Good, "
            "ideal_cycle_time: 1}]",
            "processors[0].state (line 13): M1/Order must be a numeric tag, it is string",
        ),
        (
            "processors: [{type: genealogy, machine: M1, lot: M1/Lot, process: [M1/Lot]}]",
            "processors[0].process[0]",
        ),
        (
            "processors: [{type: spc, machine: M1, characteristics: [{name: t, values: M1/Temp, "
            "control_limits: {center: 20}}]}]",
            "control_limits needs center and sigma, or ucl and lcl",
        ),
        (
            "processors: [{type: spc, machine: M1, characteristics: [{name: t, values: M1/Temp, "
            "rules: [9]}]}]",
            "processors[0].characteristics[0].rules[0]",
        ),
        (
            "processors: [{type: oee, machine: M1, state: M1/Nope, good: M1/Good, "
            "ideal_cycle_time: 1}]",
            "unknown tag 'M1/Nope'",
        ),
    ],
)
def test_errors_name_their_path(text: str, expected: str) -> None:
    found = issues(text)
    assert any(expected in issue for issue in found), found


def ns(year: int, month: int, day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp()) * 10**9


def berlin_calendar() -> ShiftCalendar:
    return ShiftCalendar(
        ShiftCalendarConfig.model_validate(
            {
                "timezone": "Europe/Berlin",
                "shifts": [
                    {
                        "name": "early",
                        "start": "06:00",
                        "end": "14:00",
                        "breaks": [{"start": "09:00", "end": "09:30"}],
                    },
                    {"name": "night", "start": "22:00", "end": "06:00"},
                ],
                "non_working_days": [date(2025, 12, 25)],
            }
        )
    )


def test_night_shift_across_the_daylight_saving_change_lasts_seven_hours() -> None:
    calendar = berlin_calendar()
    # clocks go forward on 2025-03-30 at 02:00 in Berlin
    shift = calendar.at(ns(2025, 3, 30, 0))  # 01:00 local
    assert shift is not None and shift.id == "2025-03-29/night"
    assert (shift.end_ns - shift.start_ns) // 10**9 == 7 * 3600
    autumn = calendar.at(ns(2025, 10, 26, 0))
    assert autumn is not None and (autumn.end_ns - autumn.start_ns) // 10**9 == 9 * 3600


def test_planned_time_minus_breaks_and_holidays() -> None:
    calendar = berlin_calendar()
    # 2025-07-01: early 04:00-12:00 UTC with a break 07:00-07:30 UTC
    assert calendar.planned_ns(ns(2025, 7, 1, 4), ns(2025, 7, 1, 12)) == 7.5 * 3600 * 10**9
    assert calendar.planned_ns(ns(2025, 7, 1, 6), ns(2025, 7, 1, 8)) == 1.5 * 3600 * 10**9
    assert calendar.at(ns(2025, 12, 25, 10)) is None  # no early shift on the holiday
    ends = calendar.ended_between(ns(2025, 7, 1, 0), ns(2025, 7, 2, 0))
    assert [s.id for s in ends] == ["2025-06-30/night", "2025-07-01/early"]
    assert calendar.boundaries(ns(2025, 7, 1, 3), ns(2025, 7, 1, 13)) == [
        ns(2025, 7, 1, 4),
        ns(2025, 7, 1, 12),
    ]
