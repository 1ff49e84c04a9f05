"""Lot quality: ring-buffer extraction, statistics, decisions."""

from __future__ import annotations

import json
import statistics

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batch import SampleBatch
from gateway.documents import KINDS, Document
from gateway.processors.lot_quality import LotQualityProcessor, spc_alarm_key
from gateway.tags import TagTable
from tests.unit.helpers import batch, machine_config, table_of


def processor(reject: float = 0.05, hold: float = 1.0) -> tuple[LotQualityProcessor, TagTable]:
    config = machine_config(
        "[{type: lot_quality, machine: M1, lot: M1/Lot, order: M1/Order, material: M1/Material, "
        f"reject_out_of_spec_fraction: {reject}, hold_cpk_below: {hold}, "
        "characteristics: [{name: d, values: M1/Ring, sequence: M1/Seq, lsl: 9.0, usl: 11.0}]}]"
    )
    table = table_of(config)
    return LotQualityProcessor(config.processors[0], table, "gw1"), table  # type: ignore[arg-type]


class Ring:
    """A PLC ring buffer of 4 slots, written part by part."""

    def __init__(self) -> None:
        self.slots = [0.0] * 4
        self.seq = 0

    def make(self, value: float) -> None:
        self.seq += 1
        self.slots[(self.seq - 1) % 4] = value

    def poll(self, table: TagTable, t: float, lot: str = "L1") -> SampleBatch:
        values: dict[str, object] = {f"M1/Ring[{i}]": v for i, v in enumerate(self.slots)}
        values |= {"M1/Seq": self.seq, "M1/Lot": lot, "M1/Order": "1000", "M1/Material": "FG"}
        return batch(table, values, t)


def test_every_part_counted_once_and_lot_result_on_change() -> None:
    proc, table = processor()
    ring = Ring()
    made: list[float] = []
    rng = np.random.default_rng(3)
    proc.ingest(ring.poll(table, 0))
    proc.commit()
    for step in range(1, 30):
        for _ in range(int(rng.integers(0, 4))):  # up to 3 parts between polls (ring holds 4)
            value = float(rng.normal(10, 0.1))
            ring.make(value)
            made.append(value)
        assert proc.ingest(ring.poll(table, step)) == []
        proc.commit()
    docs = proc.ingest(ring.poll(table, 31, lot="L2"))
    proc.commit()
    assert len(docs) == 1
    result = docs[0].body
    characteristic = result["characteristics"][0]
    assert result["lot"] == "L1" and result["order"] == "1000"
    assert characteristic["n"] == len(made)
    assert characteristic["mean"] == pytest.approx(statistics.fmean(made), abs=1e-6)
    assert characteristic["std"] == pytest.approx(statistics.stdev(made), abs=1e-6)
    assert characteristic["min"] == pytest.approx(min(made))
    assert result["decision"] == "accept"


def test_out_of_spec_rejects_and_low_cpk_holds() -> None:
    for values, expected in [([10.0, 12.0, 10.1, 9.9], "reject"), ([9.2, 10.8, 9.3, 10.7], "hold")]:
        proc, table = processor(reject=0.2, hold=1.33)
        ring = Ring()
        proc.ingest(ring.poll(table, 0))
        proc.commit()
        for value in values:
            ring.make(value)
        proc.ingest(ring.poll(table, 1))
        proc.commit()
        docs = proc.ingest(ring.poll(table, 2, lot="L2"))
        assert docs[0].body["decision"] == expected, values


def test_plc_restart_of_sequence_counts_new_parts() -> None:
    proc, table = processor()
    ring = Ring()
    proc.ingest(ring.poll(table, 0))
    proc.commit()
    for value in (10.0, 10.1, 10.3):
        ring.make(value)
    proc.ingest(ring.poll(table, 0.5))
    proc.commit()
    ring.seq = 0  # PLC restart: the sequence falls from 3 to 2
    ring.make(10.2)
    ring.make(10.4)
    proc.ingest(ring.poll(table, 1))
    proc.commit()
    docs = proc.ingest(ring.poll(table, 2, lot="L2"))
    assert docs[0].body["characteristics"][0]["n"] == 5
    assert docs[0].body["characteristics"][0]["max"] == pytest.approx(10.4)


def spc_processor(
    extra: str = "", kind: str = "lot_quality"
) -> tuple[LotQualityProcessor, TagTable]:
    lot = "lot: M1/Lot, " if kind == "lot_quality" else ""
    config = machine_config(
        f"[{{type: {kind}, machine: M1, {lot}order: M1/Order, material: M1/Material, "
        "characteristics: [{name: temp, values: M1/Temp, lsl: 0, usl: 100, unit: degC, "
        f"control_limits: {{center: 50, sigma: 1}}{extra}}}]}}]"
    )
    table = table_of(config)
    return LotQualityProcessor(config.processors[0], table, "gw1"), table  # type: ignore[arg-type]


def feed(
    proc: LotQualityProcessor,
    table: TagTable,
    values: list[float],
    lot: str = "L1",
    start: int = 0,
) -> list[Document]:
    docs: list[Document] = []
    for step, value in enumerate(values, start):
        docs += proc.ingest(
            batch(
                table,
                {"M1/Temp": value, "M1/Lot": lot, "M1/Order": "1000", "M1/Material": "FG"},
                step + 1,
            )
        )
        proc.commit()
    return docs


def test_spc_alarm_at_the_start_of_a_run_of_violations() -> None:
    proc, table = spc_processor()
    values = [50.0] * 3 + [54.0] + [50.5] * 10  # rule 1 at the 4th point, rule 2 from the 9th
    docs = [d for d in feed(proc, table, values) if d.kind == "spc_alarm"]
    found = [(d.body["rule"], d.body["point"]) for d in docs]
    assert (1, 3) in found
    # indices 3..11 are 9 points above the centre line: rule 2 fires at 11, 12, 13; alarm once
    assert [p for r, p in found if r == 2] == [11]
    alarm = next(d.body for d in docs if d.body["rule"] == 1)
    assert alarm["value"] == 54.0 and alarm["cl"] == 50.0 and alarm["ucl"] == 53.0
    assert alarm["lot"] == "L1" and alarm["characteristic"] == "temp" and alarm["unit"] == "degC"
    assert alarm["time"] == "1970-01-01T00:00:04.000Z"
    assert set(alarm) == set(KINDS["spc_alarm"].fields)
    assert docs[0].ordering_key == "M1/temp"
    # keys: deterministic, 32 hex digits, one per characteristic, rule and point
    keys = [d.key for d in docs]
    assert all(d.key == d.body["idempotency_key"] for d in docs)
    assert all(len(k) == 32 and int(k, 16) >= 0 for k in keys) and len(set(keys)) == len(keys)
    assert spc_alarm_key("gw1", "M1", "temp", 1, 3) in keys
    assert spc_alarm_key("gw1", "M1", "temp", 2, 11) in keys
    assert spc_alarm_key("gw1", "M1", "temp", 1, 11) != spc_alarm_key("gw1", "M1", "temp", 2, 11)
    assert spc_alarm_key("gw1", "M1", "temp", 1, 3) != spc_alarm_key("gw1", "M1", "temp2", 1, 3)
    assert spc_alarm_key("gw1", "M1", "temp", 1, 2**36) != spc_alarm_key("gw1", "M1", "temp", 1, 0)
    proc2, table2 = spc_processor()  # the same history gives the same keys
    assert [d.key for d in feed(proc2, table2, values) if d.kind == "spc_alarm"] == keys


def test_alarm_rules_can_be_chosen_and_violations_counted_in_the_lot() -> None:
    proc, table = spc_processor(", rules: [2]")
    docs = feed(proc, table, [50.0] * 3 + [54.0] + [50.5] * 10)
    assert [d.body["rule"] for d in docs if d.kind == "spc_alarm"] == [2]
    result = feed(proc, table, [50.0], lot="L2")[0].body
    violations = result["characteristics"][0]["violations"]
    assert violations["1"] == 1 and violations["2"] == 3  # points 11, 12 and 13
    assert result["decision"] == "hold"  # hold_on_rules defaults to [1]
    assert result["reasons"] == ["temp: Nelson rule 1 at 1 points"]


def test_spc_without_lots_only_raises_alarms() -> None:
    proc, table = spc_processor(kind="spc")
    docs = feed(proc, table, [50.0, 56.0, 50.0]) + feed(proc, table, [50.0], lot="L2")
    assert [d.kind for d in docs] == ["spc_alarm"]


def test_baseline_limits_and_restart_keep_the_chart() -> None:
    config = machine_config(
        "[{type: spc, machine: M1, characteristics: [{name: temp, values: M1/Temp, baseline: 5}]}]"
    )
    table = table_of(config)
    proc = LotQualityProcessor(config.processors[0], table, "gw1")  # type: ignore[arg-type]
    feed(proc, table, [10.0, 11.0, 10.0, 11.0, 10.0])  # cl 10.4, MR-bar 1
    saved = dict(proc.snapshot())
    again = LotQualityProcessor(config.processors[0], table, "gw1")  # type: ignore[arg-type]
    again.restore(json.loads(json.dumps(saved)))
    docs = [d.body for d in feed(again, table, [10.4 + 3 / 1.128 + 0.01], start=5)]
    assert [(d["rule"], d["point"]) for d in docs] == [(1, 5)]
    assert docs[0]["cl"] == pytest.approx(10.4)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 12), st.booleans())
def test_polls_one_by_one_in_runs_or_scattered_raise_the_same_alarms(
    seed: int, chunk: int, with_lot: bool
) -> None:
    """Whether the polls of a device come one by one, in runs (the rows cycling through the
    tags), scattered with stale and bad rows among them, or twice, the charts see the same
    points."""
    config = machine_config(
        "[{type: spc, machine: M1, characteristics: ["
        "{name: t, values: M1/Temp, baseline: 5}, "
        "{name: g, values: M1/Good, subgroup: 2, baseline: 4}, "
        "{name: s, values: M1/Seq, subgroup: 5, baseline: 3}]}]"
    )
    table = table_of(config)
    rng = np.random.default_rng(seed)
    drift = np.linspace(0, 3, 80)
    polls: list[dict[str, object]] = [
        {
            "M1/Temp": round(float(rng.normal(20, 1) + drift[i]), 2),
            "M1/Good": round(float(rng.normal(100, 2) - drift[i]), 2),
            "M1/Seq": round(float(rng.normal(5, 0.5)), 2),
            **({"M1/Lot": "L1"} if with_lot else {}),
        }
        for i in range(80)
    ]
    single = [  # now and then the thermometer does not answer
        batch(table, values, i + 1, bad={"M1/Temp"} if i % 13 == 7 else None)
        for i, values in enumerate(polls)
    ]
    runs = [SampleBatch.concat("M1", single[i : i + chunk]) for i in range(0, 80, chunk)]
    scattered = []
    for i in range(0, 80, chunk):
        extra = [batch(table, {"M1/Temp": 999.0}, i + 0.5, bad={"M1/Temp"})]  # bad
        if i:
            extra.append(batch(table, {"M1/Temp": 999.0}, 1))  # older than the last: stale
        rows = SampleBatch.concat("M1", [*single[i : i + chunk], *extra])
        scattered.append(rows.select(rng.permutation(len(rows))))

    def alarms(batches: list[SampleBatch]) -> list[tuple[str, dict[str, object]]]:
        proc = LotQualityProcessor(config.processors[0], table, "gw1")  # type: ignore[arg-type]
        docs = []
        for one in batches:
            docs += proc.ingest(one)
            proc.commit()
        return sorted((d.key, dict(d.body)) for d in docs)

    # a poll delivered twice (say, again after a reconnect), alone or within one batch
    repeated = [again for one in single for again in (one, one)]
    doubled = [SampleBatch.concat("M1", [run, run]) for run in runs]
    expected = alarms(single)
    assert expected  # the drift raises alarms
    for other in (runs, scattered, repeated, doubled):
        assert alarms(other) == expected
