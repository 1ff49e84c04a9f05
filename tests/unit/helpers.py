"""Small builders for unit tests: a tag table and batches from plain values."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.load import load_config_text
from gateway.config.model import GatewayConfig
from gateway.tags import TagTable

MACHINE_CONFIG = """
gateway: {id: gw1, location: {enterprise: acme, site: s, area: a, line: l}}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: Good, address: 0, type: uint16}
      - {name: Scrap, address: 1, type: uint32}
      - {name: Order, address: 10, type: string, length: 16}
      - {name: Operation, address: 18, type: string, length: 4}
      - {name: Material, address: 20, type: string, length: 16}
      - {name: Lot, address: 28, type: string, length: 16}
      - {name: Ring, address: 40, type: float32, count: 4}
      - {name: Seq, address: 50, type: uint32}
      - {name: Temp, address: 60, type: float32, deadband: 0.5}
processors: []
"""


def machine_config(processors: str = "[]") -> GatewayConfig:
    return load_config_text(MACHINE_CONFIG.replace("processors: []", f"processors: {processors}"))


def table_of(config: GatewayConfig) -> TagTable:
    return TagTable((d.name, d.tags) for d in config.devices)


def batch(
    table: TagTable,
    values: Mapping[str, object],
    stamp_s: float,
    bad: set[str] | None = None,
) -> SampleBatch:
    """One poll: tag id → value (str for string tags), all at one timestamp."""
    ids = list(values)
    tags = np.array([table.index(i) for i in ids], np.int32)
    numbers = np.array(
        [float(v) if isinstance(v, int | float) else np.nan for v in values.values()]
    )
    objects = None
    if any(isinstance(v, str) for v in values.values()):
        objects = np.array([v if isinstance(v, str) else None for v in values.values()], object)
    codes = np.array(
        [quality.bad("timeout") if bad and i in bad else quality.GOOD for i in ids], np.uint16
    )
    if bad:
        numbers[[ids.index(i) for i in bad]] = np.nan
    stamp = int(stamp_s * 1e9)
    return SampleBatch(
        "M1", tags, numbers, codes, np.full(len(ids), stamp, np.int64), objects, received_ns=stamp
    )
