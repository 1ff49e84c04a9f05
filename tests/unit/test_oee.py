"""OEE and downtime events, checked against a shift worked out by hand (see docs/mes.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.documents import Document
from gateway.processors.oee import OeeProcessor
from gateway.tags import TagTable

CONFIG = """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: State, address: 0, type: uint16}
      - {name: Reason, address: 1, type: uint16}
      - {name: Good, address: 2, type: uint16}
      - {name: Scrap, address: 3, type: uint32}
      - {name: Order, address: 10, type: string, length: 16}
      - {name: Material, address: 20, type: string, length: 16}
shifts:
  timezone: UTC
  shifts:
    - {name: early, start: "06:00", end: "14:00", breaks: [{start: "10:00", end: "10:30"}]}
    - {name: late, start: "14:00", end: "22:00"}
processors:
  - {type: oee, machine: M1, state: M1/State, reason: M1/Reason, good: M1/Good,
     scrap: M1/Scrap, order: M1/Order, material: M1/Material, ideal_cycle_time: 60,
     reasons: {301: planned_stop}EXTRA}
"""


def at(hhmm: str, day: int = 5) -> int:
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return int(datetime(2025, 5, day, hours, minutes, tzinfo=UTC).timestamp() * 1e9)


class Machine:
    """Polls of the machine's tags; a poll at every event the test describes."""

    def __init__(self, extra: str = "") -> None:
        config = load_config_text(CONFIG.replace("EXTRA", extra))
        self.table = TagTable((d.name, d.tags) for d in config.devices)
        self.proc = OeeProcessor(
            config.processors[0],  # type: ignore[arg-type]
            self.table,
            "gw1",
            config.shifts,
        )
        self.values: dict[str, Any] = {
            "State": 6,
            "Reason": 0,
            "Good": 0,
            "Scrap": 0,
            "Order": "1000",
            "Material": "FG-1",
        }
        self.docs: list[Document] = []
        self.collect: list[SampleBatch] | None = None

    def poll(self, stamp: int, bad: bool = False, **changes: Any) -> list[Document]:
        self.values.update(changes)
        names = list(self.values)
        tags = np.array([self.table.index(f"M1/{n}") for n in names], np.int32)
        numbers = np.array(
            [float(v) if isinstance(v, int) else np.nan for v in self.values.values()]
        )
        objects = np.array([v if isinstance(v, str) else None for v in self.values.values()])
        code = quality.bad("timeout") if bad else quality.GOOD
        if bad:
            numbers[:] = np.nan
            objects[:] = None
        batch = SampleBatch.uniform("M1", tags, numbers, stamp, code, objects)
        if self.collect is not None:
            self.collect.append(batch)
            return []
        docs = self.proc.ingest(batch)
        self.proc.commit()
        self.docs += docs
        return docs

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [dict(d.body) for d in self.docs if d.kind == kind]


def hand_worked_shift(machine: Machine) -> None:
    """06:00-14:00, break 10:00-10:30: 450 min planned. 350 good + 10 scrap, ideal 1 min/part.

    running 370 min, held 30 min (08:00-08:30), stopped in the break (no loss), starved 20 min
    (12:00-12:20, a minor stop), no order 30 min (13:30-14:00, reason 301 = planned stop).
    """
    machine.poll(at("06:00"))
    machine.poll(at("08:00"), Good=120, State=11, Reason=101)
    machine.poll(at("08:30"), State=6, Reason=0)
    machine.poll(at("10:00"), Good=205, Scrap=5, State=2)
    machine.poll(at("10:30"), State=6)
    machine.poll(at("12:00"), Good=290, Scrap=5, State=5, Reason=201)
    machine.poll(at("12:20"), State=6, Reason=0)
    machine.poll(at("13:30"), Good=350, Scrap=10, State=4, Reason=301)
    machine.poll(at("14:05"), State=6, Reason=0)


def test_oee_of_a_hand_worked_shift() -> None:
    machine = Machine()
    hand_worked_shift(machine)
    (shift,) = [d for d in machine.of("oee") if d["scope"] == "shift"]
    assert shift["shift"] == "2025-05-05/early"
    assert (shift["start"], shift["end"]) == (
        "2025-05-05T06:00:00.000Z",
        "2025-05-05T14:00:00.000Z",
    )
    assert shift["planned_time"] == 420 * 60  # 450 min minus the 30 min planned stop
    assert shift["run_time"] == 390 * 60  # 370 running + 20 starved
    assert shift["unplanned_stop_time"] == 30 * 60
    assert shift["minor_stop_time"] == 20 * 60
    assert shift["planned_stop_time"] == 30 * 60
    assert (shift["good"], shift["scrap"], shift["total"]) == (350, 10, 360)
    assert shift["availability"] == pytest.approx(390 / 420, abs=1e-6)
    assert shift["performance"] == pytest.approx(360 / 390, abs=1e-6)
    assert shift["quality"] == pytest.approx(350 / 360, abs=1e-6)
    assert shift["oee"] == pytest.approx(350 / 420, abs=1e-6)  # good × ideal / planned


def test_downtime_events_with_reasons_and_categories() -> None:
    machine = Machine()
    hand_worked_shift(machine)
    events = [
        (d["start"][11:16], d["end"][11:16], d["duration"], d["category"], d["state"], d["reason"])
        for d in machine.of("downtime")
    ]
    assert events == [
        ("08:00", "08:30", 1800.0, "unplanned_stop", 11, 101),
        ("10:00", "10:30", 1800.0, "unplanned_stop", 2, 0),
        ("12:00", "12:20", 1200.0, "minor_stop", 5, 201),
        ("13:30", "14:05", 2100.0, "planned_stop", 4, 301),
    ]
    assert all(
        d["shift"] == "2025-05-05/early" and d["order"] == "1000" for d in machine.of("downtime")
    )


def test_min_downtime_filters_short_stops() -> None:
    machine = Machine(", min_downtime: 1500")
    hand_worked_shift(machine)
    assert [d["duration"] for d in machine.of("downtime")] == [1800.0, 1800.0, 2100.0]


def test_order_oee_when_the_order_changes() -> None:
    machine = Machine()
    machine.poll(at("06:00"))
    machine.poll(at("07:00"), Good=50, State=11, Reason=100)
    machine.poll(at("07:10"), State=6, Reason=0)
    machine.poll(at("08:00"), Good=100, Order="2000", Material="FG-2")
    (order,) = [d for d in machine.of("oee") if d["scope"] == "order"]
    assert (order["order"], order["material"]) == ("1000", "FG-1")
    assert order["planned_time"] == 120 * 60 and order["run_time"] == 110 * 60
    assert order["good"] == 100 and order["performance"] == pytest.approx(100 / 110, abs=1e-6)


def test_time_without_a_good_state_is_unknown_and_not_planned() -> None:
    machine = Machine()
    machine.poll(at("06:00"))
    machine.poll(at("07:00"), Good=60)
    machine.poll(at("07:00"), bad=True)  # the PLC stops answering
    machine.poll(at("08:00"), Good=60)  # back
    machine.poll(at("14:00"), Good=420)
    (shift,) = [d for d in machine.of("oee") if d["scope"] == "shift"]
    assert shift["unknown_time"] == 3600
    # 450 planned - 60 unknown + 30 running through the break (production counts as planned)
    assert shift["planned_time"] == (450 - 60 + 30) * 60
    assert shift["good"] == 420


def test_every_shift_reported_once_even_across_a_gap_in_data() -> None:
    machine = Machine()
    machine.poll(at("13:00"))
    machine.poll(at("15:00", day=6), Good=10)  # the next poll comes a day later
    shifts = [d["shift"] for d in machine.of("oee") if d["scope"] == "shift"]
    assert shifts == ["2025-05-05/early", "2025-05-05/late", "2025-05-06/early"]


def test_one_batch_or_poll_by_poll_gives_the_same_documents() -> None:
    polled = Machine()
    hand_worked_shift(polled)
    assert len({d.key for d in polled.docs}) == len(polled.docs) > 0
    recorded = Machine()
    recorded.collect = []
    hand_worked_shift(recorded)
    docs = recorded.proc.ingest(SampleBatch.concat("M1", recorded.collect))
    assert [d.body for d in docs] == [d.body for d in polled.docs]


def test_restore_continues_the_shift() -> None:
    machine = Machine()
    machine.poll(at("06:00"))
    machine.poll(at("09:00"), Good=180)
    saved = dict(machine.proc.snapshot())
    restarted = Machine()
    restarted.proc.restore(saved)
    restarted.values = dict(machine.values)
    restarted.poll(at("09:30"), Good=200)  # the gateway was down 09:00-09:30: unknown
    restarted.poll(at("14:00"), Good=460)
    (shift,) = [d for d in restarted.of("oee") if d["scope"] == "shift"]
    assert shift["unknown_time"] == 1800
    assert shift["good"] == 460
