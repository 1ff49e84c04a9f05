"""Lot quality: ring-buffer extraction, statistics, decisions."""

from __future__ import annotations

import statistics

import numpy as np
import pytest

from gateway.batch import SampleBatch
from gateway.processors.lot_quality import LotQualityProcessor
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
