"""Report by exception: deadbands, quality changes, strings, max age, repeated tags."""

from __future__ import annotations

import numpy as np

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.pipeline.change import ChangeDetector
from gateway.pipeline.router import Route, Router
from gateway.tags import TagTable

CONFIG = """
gateway: {id: gw1, location: {enterprise: a, site: b, area: c, line: d}}
devices:
  - name: D
    protocol: modbus_tcp
    host: h
    tags:
      - {name: A, address: 0, deadband: 0.5}
      - {name: B, address: 1, deadband_percent: 10, span: [0, 200]}
      - {name: C, address: 2, max_age: 10}
      - {name: S, address: 3, type: string, length: 4}
      - {name: P, address: 4, deadband_percent: 10}
"""


def setup() -> tuple[TagTable, ChangeDetector]:
    config = load_config_text(CONFIG)
    table = TagTable((d.name, d.tags) for d in config.devices)
    return table, ChangeDetector(table)


def make(
    table: TagTable,
    rows: list[tuple[str, object]],
    t: float = 0,
    codes: list[int] | None = None,
    unique: bool = True,
) -> SampleBatch:
    tags = np.array([table.index(f"D/{name}") for name, _ in rows], np.int32)
    values = np.array([v if isinstance(v, float | int) else np.nan for _, v in rows], float)
    objects = np.array([v if isinstance(v, str) else None for _, v in rows], object)
    return SampleBatch(
        "D",
        tags,
        values,
        np.array(codes or [0] * len(rows), np.uint16),
        np.full(len(rows), int(t * 1e9), np.int64),
        objects if any(isinstance(v, str) for _, v in rows) else None,
        unique_tags=unique,
    )


def names(table: TagTable, batch: SampleBatch) -> list[str]:
    return [table[int(i)].name for i in batch.tags]


def test_first_values_pass_then_only_changes() -> None:
    table, change = setup()
    assert names(table, change.ingest(make(table, [("A", 1.0), ("C", 5)]))) == ["A", "C"]
    assert names(table, change.ingest(make(table, [("A", 1.0), ("C", 5)], 1))) == []


def test_absolute_deadband_against_last_reported_value() -> None:
    table, change = setup()
    change.ingest(make(table, [("A", 10.0)]))
    assert len(change.ingest(make(table, [("A", 10.4)]))) == 0
    assert len(change.ingest(make(table, [("A", 10.45)]))) == 0  # still within 0.5 of 10.0
    assert len(change.ingest(make(table, [("A", 10.6)]))) == 1  # drift adds up


def test_percent_deadband_of_span_and_of_value() -> None:
    table, change = setup()
    change.ingest(make(table, [("B", 100.0), ("P", 100.0)]))
    out = change.ingest(make(table, [("B", 115.0), ("P", 109.0)]))  # B: 10% of 200 = 20
    assert names(table, out) == []
    out = change.ingest(make(table, [("B", 121.0), ("P", 111.0)]))  # P: 10% of 100 = 10
    assert names(table, out) == ["B", "P"]


def test_quality_change_always_passes() -> None:
    table, change = setup()
    change.ingest(make(table, [("A", 1.0)]))
    out = change.ingest(make(table, [("A", np.nan)], codes=[quality.bad("timeout")]))
    assert len(out) == 1
    assert len(change.ingest(make(table, [("A", 1.0)]))) == 1


def test_strings_compare_by_value() -> None:
    table, change = setup()
    assert len(change.ingest(make(table, [("S", "L1")]))) == 1
    assert len(change.ingest(make(table, [("S", "L1")]))) == 0
    out = change.ingest(make(table, [("S", "L2")]))
    assert out.objects is not None and list(out.objects) == ["L2"]


def test_max_age_republishes_unchanged_value() -> None:
    table, change = setup()
    change.ingest(make(table, [("C", 3)], t=0))
    assert len(change.ingest(make(table, [("C", 3)], t=5))) == 0
    assert len(change.ingest(make(table, [("C", 3)], t=10))) == 1


def test_repeated_tag_in_one_batch_is_applied_in_order() -> None:
    table, change = setup()
    batch = make(table, [("A", 1.0), ("A", 1.2), ("A", 2.0), ("A", 2.1)], unique=False)
    out = change.ingest(batch)
    assert out.values.tolist() == [1.0, 2.0]


def test_router_splits_by_mask() -> None:
    table, _ = setup()
    mask_a = np.zeros(len(table), bool)
    mask_a[table.index("D/A")] = True
    router = Router([Route("all", np.ones(len(table), bool)), Route("a", mask_a)])
    batch = make(table, [("A", 1.0), ("C", 2)])
    routed = dict(router.route(batch))
    assert routed["all"] is batch
    assert names(table, routed["a"]) == ["A"]
