"""Work reports: completions per order/lot/container, exact through PLC counter behaviour."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batch import SampleBatch
from gateway.documents import Document
from gateway.processors.work_report import WorkReportProcessor
from tests.unit.helpers import batch, machine_config, table_of

TRIGGERS = "[order_change, lot_change]"


def processor(triggers: str = TRIGGERS, extra: str = "") -> tuple[WorkReportProcessor, Any]:
    config = machine_config(
        f"[{{type: work_report, machine: M1, good: M1/Good, scrap: M1/Scrap, order: M1/Order, "
        f"operation: M1/Operation, material: M1/Material, lot: M1/Lot, triggers: {triggers}"
        f"{extra}}}]"
    )
    table = table_of(config)
    return WorkReportProcessor(config.processors[0], table, "gw1"), table  # type: ignore[arg-type]


def poll(
    proc: WorkReportProcessor,
    table: Any,
    t: float,
    good: float,
    scrap: float,
    order: str = "1000",
    lot: str = "L1",
    bad: set[str] | None = None,
) -> list[Document]:
    docs = proc.ingest(
        batch(
            table,
            {
                "M1/Good": good,
                "M1/Scrap": scrap,
                "M1/Order": order,
                "M1/Operation": "0010",
                "M1/Material": "FG-1",
                "M1/Lot": lot,
            },
            t,
            bad,
        )
    )
    proc.commit()
    return docs


def test_order_change_emits_a_final_completion() -> None:
    proc, table = processor()
    assert poll(proc, table, 1, 100, 5) == []
    assert poll(proc, table, 2, 150, 7) == []
    docs = poll(proc, table, 3, 150, 7, order="2000", lot="L2")
    assert len(docs) == 1
    body = docs[0].body
    assert (body["order"], body["lot"], body["good"], body["scrap"]) == ("1000", "L1", 50, 2)
    assert body["final"] is True and body["trigger"] == "order_change"
    assert body["sequence"] == 1 and docs[0].ordering_key == "1000"
    assert body["start"].endswith("Z") and body["end"] > body["start"]


def test_lot_change_is_not_final_and_keeps_the_order() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0)
    poll(proc, table, 2, 40, 1)
    docs = poll(proc, table, 3, 40, 1, lot="L2")
    assert [(d.body["lot"], d.body["good"], d.body["final"]) for d in docs] == [("L1", 40, False)]
    poll(proc, table, 4, 70, 1, lot="L2")
    docs = poll(proc, table, 5, 70, 1, order="", lot="")
    assert [(d.body["lot"], d.body["good"], d.body["final"]) for d in docs] == [("L2", 30, True)]


def test_counts_through_reset_rollover_gap_and_duplicates() -> None:
    proc, table = processor()
    poll(proc, table, 1, 65530, 10)
    poll(proc, table, 2, 4, 10)  # 16-bit wrap: +10
    poll(proc, table, 3, 4, 10)  # duplicate
    poll(proc, table, 4, 0, 0, bad={"M1/Good", "M1/Scrap"})  # gap
    poll(proc, table, 5, 20, 12)  # +16, +2
    poll(proc, table, 6, 3, 1)  # PLC restart: +3, +1
    docs = poll(proc, table, 7, 3, 1, order="2000")
    assert (docs[0].body["good"], docs[0].body["scrap"]) == (10 + 16 + 3, 2 + 1)


def test_container_full_splits_exactly() -> None:
    proc, table = processor(
        "[order_change, lot_change, container_full]", ", container_quantity: 100"
    )
    poll(proc, table, 1, 0, 0)
    docs = poll(proc, table, 2, 230, 4)
    assert [d.body["good"] for d in docs] == [100, 100]
    assert [d.body["handling_unit"] for d in docs] == ["L1-001", "L1-002"]
    assert docs[0].body["scrap"] == 4 and docs[1].body["scrap"] == 0
    docs = poll(proc, table, 3, 240, 4, order="2000")
    assert [d.body["good"] for d in docs] == [40]


def test_a_later_sample_of_another_tag_does_not_move_the_end_of_a_completion() -> None:
    proc, table = processor("[order_change, container_full]", ", container_quantity: 100")
    polls = [poll_batch(table, t, good, 0, "1000", "L1", False) for t, good in ((1, 0), (2, 150))]
    temperature = [  # the device's temperature, read a second after each poll
        batch(table, {"M1/Temp": 21.5}, t + 1) for t in (1, 2)
    ]
    docs = []
    for pair in zip(polls, temperature, strict=True):
        docs += proc.ingest(SampleBatch.concat("M1", list(pair)))
        proc.commit()
    assert [(d.body["good"], d.body["end"]) for d in docs] == [(100, "1970-01-01T00:00:02.000Z")]


def test_idempotency_keys_are_deterministic_and_distinct() -> None:
    runs = []
    for _ in range(2):
        proc, table = processor()
        poll(proc, table, 1, 0, 0)
        poll(proc, table, 2, 10, 0)
        keys = [d.key for d in poll(proc, table, 3, 10, 0, lot="L2")]
        poll(proc, table, 4, 20, 0, lot="L2")
        keys += [d.key for d in poll(proc, table, 5, 20, 0, order="2000")]
        runs.append(keys)
    assert runs[0] == runs[1]
    assert len(set(runs[0])) == 2


def test_rollback_then_replay_gives_the_same_document() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0)
    poll(proc, table, 2, 10, 0)
    first = proc.ingest(batch(table, {"M1/Good": 12, "M1/Order": "2000"}, 3))
    proc.rollback()  # the outbox could not store it
    again = proc.ingest(batch(table, {"M1/Good": 12, "M1/Order": "2000"}, 3))
    proc.commit()
    assert [d.body for d in first] == [d.body for d in again]
    assert again[0].body["good"] == 12


def test_restore_resumes_counting_from_the_saved_state() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0)
    poll(proc, table, 2, 30, 1)
    proc.ingest(batch(table, {"M1/Good": 35}, 3))
    saved = dict(proc.snapshot())
    proc.commit()
    restarted, _ = processor()
    restarted.restore(saved)
    docs = poll(restarted, table, 9, 50, 1, order="2000")  # 15 made while the gateway was down
    assert (docs[0].body["good"], docs[0].body["sequence"]) == (50, 1)


def test_parts_without_an_order_are_not_reported() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0, order="")
    poll(proc, table, 2, 9, 0, order="")
    assert poll(proc, table, 3, 9, 0, order="3000") == []
    assert proc.warnings["parts_without_order"] == 9


def test_requested_completion() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0)
    poll(proc, table, 2, 8, 0)
    proc.request_completion()
    docs = poll(proc, table, 3, 8, 0)
    assert [(d.body["good"], d.body["trigger"], d.body["final"]) for d in docs] == [
        (8, "request", False)
    ]


def test_bad_quality_order_keeps_the_segment() -> None:
    proc, table = processor()
    poll(proc, table, 1, 0, 0)
    assert poll(proc, table, 2, 5, 0, order="", bad={"M1/Order"}) == []
    docs = poll(proc, table, 3, 6, 0, order="2000")
    assert docs[0].body["order"] == "1000" and docs[0].body["good"] == 6


SHIFTS = """
shifts:
  timezone: Europe/Berlin
  shifts:
    - {name: early, start: "06:00", end: "14:00"}
    - {name: late, start: "14:00", end: "22:00"}
processors: []
"""


def shift_processor(triggers: str = "[order_change, shift_end]") -> tuple[WorkReportProcessor, Any]:
    from gateway.config.load import load_config_text
    from tests.unit.helpers import MACHINE_CONFIG

    text = MACHINE_CONFIG.replace("processors: []", SHIFTS).replace(
        "processors: []",
        "processors: [{type: work_report, machine: M1, good: M1/Good, scrap: M1/Scrap, "
        f"order: M1/Order, lot: M1/Lot, triggers: {triggers}}}]",
    )
    config = load_config_text(text)
    table = table_of(config)
    proc = WorkReportProcessor(config.processors[0], table, "gw1", config.shifts)  # type: ignore[arg-type]
    return proc, table


def berlin(hhmm: str) -> float:
    """Seconds since the epoch of a time on 2025-07-01 in Berlin (UTC+2 in summer)."""
    hours, minutes = (int(p) for p in hhmm.split(":"))
    return datetime(2025, 7, 1, hours - 2, minutes, tzinfo=UTC).timestamp()


def test_shift_end_closes_the_segment_at_the_shift_end() -> None:
    proc, table = shift_processor()
    assert poll(proc, table, berlin("13:00"), 100, 0) == []
    # a poll taken exactly at 14:00 still counts for the early shift, which ends with it
    docs = poll(proc, table, berlin("14:00"), 150, 1)
    assert [(d.body["good"], d.body["scrap"], d.body["trigger"]) for d in docs] == [
        (50, 1, "shift_end")
    ]
    assert poll(proc, table, berlin("14:01"), 155, 1) == []
    body = docs[0].body
    assert body["end"] == "2025-07-01T12:00:00.000Z" and body["shift"] == "2025-07-01/early"
    assert body["final"] is False
    docs = poll(proc, table, berlin("15:00"), 170, 1, order="2000")
    assert [(d.body["good"], d.body["start"], d.body["shift"]) for d in docs] == [
        (20, "2025-07-01T12:00:00.000Z", "2025-07-01/late")
    ]


def test_shift_end_without_a_sample_of_the_machine() -> None:
    proc, table = shift_processor()
    poll(proc, table, berlin("13:00"), 100, 0)
    poll(proc, table, berlin("13:30"), 130, 0)
    # the machine's device is silent; another tag's batch carries the time past 14:00
    docs = proc.ingest(batch(table, {"M1/Temp": 20.5}, berlin("14:00") + 30))
    proc.commit()
    assert [(d.body["good"], d.body["trigger"], d.body["end"]) for d in docs] == [
        (30, "shift_end", "2025-07-01T12:00:00.000Z")
    ]


def test_default_calendar_closes_at_midnight_utc() -> None:
    proc, table = processor("[order_change, shift_end]")
    day = datetime(2025, 3, 3, 23, 0, tzinfo=UTC).timestamp()
    poll(proc, table, day, 0, 0)
    poll(proc, table, day + 1800, 10, 0)
    docs = poll(proc, table, day + 7200, 25, 0)
    assert [(d.body["good"], d.body["end"], d.body["shift"]) for d in docs] == [
        (10, "2025-03-04T00:00:00.000Z", "2025-03-03/day")
    ]


@st.composite
def production(draw: st.DrawFn) -> list[tuple[float, int, int, str, str, bool]]:
    """Polls of a machine: counters that count, reset and wrap; orders and lots that change."""
    polls = []
    good, scrap, order, lot = draw(st.integers(0, 65535)), 0, 1000, 1
    for step in range(draw(st.integers(2, 80))):
        event = draw(st.sampled_from(["count"] * 6 + ["order", "lot", "reset", "bad", "dup"]))
        if event == "count":
            good = (good + draw(st.integers(0, 50))) % 65536
            scrap += draw(st.integers(0, 2))
        elif event == "order":  # the last parts of an order are counted in the same poll
            order += 1
            good = (good + draw(st.integers(0, 5))) % 65536
        elif event == "lot":
            lot += 1
            good = (good + draw(st.integers(0, 5))) % 65536
        elif event == "reset":
            good, scrap = draw(st.integers(0, 5)), 0
        polls.append((1000.0 + step * 7.5, good, scrap, str(order), f"L{lot}", event == "bad"))
    return polls


def poll_batch(
    table: Any,
    stamp: float,
    good: int,
    scrap: int,
    order: str,
    lot: str,
    bad: bool,
    layout: tuple[str, ...] = (),
) -> Any:
    """One poll; `layout` names its tags in the order the device sends them (default: the
    counters, then the identity tags)."""
    values = {
        "M1/Good": good,
        "M1/Scrap": scrap,
        "M1/Order": order,
        "M1/Operation": "0010",
        "M1/Material": "FG-1",
        "M1/Lot": lot,
        "M1/Temp": 21.5,
    }
    names = layout or tuple(values)[:-1]
    return batch(table, {n: values[n] for n in names}, stamp, {"M1/Good"} if bad else None)


# polls that put the identity tags first (at one timestamp the counters still count for the
# old order) and a tag of no role between them
_LAYOUTS = [
    ("M1/Lot", "M1/Order", "M1/Temp", "M1/Operation", "M1/Material", "M1/Good", "M1/Scrap"),
    ("M1/Good", "M1/Temp", "M1/Scrap", "M1/Order", "M1/Operation", "M1/Material", "M1/Lot"),
]


@settings(max_examples=120, deadline=None)
@given(production(), st.lists(st.integers(1, 20), min_size=1, max_size=5))
def test_poll_by_poll_or_in_any_batches_gives_the_same_documents(
    polls: list[tuple[float, int, int, str, str, bool]], sizes: list[int]
) -> None:
    one, table = processor("[order_change, lot_change, shift_end]")
    expected = []
    for p in polls:
        expected += one.ingest(poll_batch(table, *p))
        one.commit()
    other, _ = processor("[order_change, lot_change, shift_end]")
    got, start, index = [], 0, 0
    while start < len(polls):
        size = sizes[index % len(sizes)]
        chunk = [poll_batch(table, *p) for p in polls[start : start + size]]
        got += other.ingest(SampleBatch.concat("M1", chunk))
        other.commit()
        start, index = start + size, index + 1
    assert [(d.key, dict(d.body)) for d in got] == [(d.key, dict(d.body)) for d in expected]
    # report by exception: an identity tag only when it changed (rows no longer cycle)
    third, _ = processor("[order_change, lot_change, shift_end]")
    counter_tags = {table.index("M1/Good"), table.index("M1/Scrap")}
    changes: list[SampleBatch] = []
    previous: dict[int, object] = {}
    for p in polls:
        full = poll_batch(table, *p)
        keep = [
            row
            for row in range(len(full))
            if full.tags[row] in counter_tags or previous.get(full.tags[row]) != full.value_of(row)
        ]
        previous.update({full.tags[row]: full.value_of(row) for row in range(len(full))})
        changes.append(full.select(np.array(keep, np.intp)))
    sparse = []
    for start in range(0, len(changes), sizes[0]):
        sparse += third.ingest(SampleBatch.concat("M1", changes[start : start + sizes[0]]))
        third.commit()
    assert [(d.key, dict(d.body)) for d in sparse] == [(d.key, dict(d.body)) for d in expected]
    for layout in _LAYOUTS:
        shuffled, _ = processor("[order_change, lot_change, shift_end]")
        found = []
        for start in range(0, len(polls), sizes[-1]):
            chunk = [poll_batch(table, *p, layout) for p in polls[start : start + sizes[-1]]]
            found += shuffled.ingest(SampleBatch.concat("M1", chunk))
            shuffled.commit()
        assert [(d.key, dict(d.body)) for d in found] == [(d.key, dict(d.body)) for d in expected]
