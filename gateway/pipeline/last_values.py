"""The last sample of every tag, for the API and commissioning tools."""

from __future__ import annotations

__all__ = ["LastValues"]

from typing import Any

import numpy as np

from gateway import quality
from gateway.batch import SampleBatch
from gateway.processors.timefmt import iso_utc
from gateway.tags import TagTable


class LastValues:
    """Columns of last value, quality and timestamp per tag, updated per batch (vectorised)."""

    def __init__(self, table: TagTable) -> None:
        n = len(table)
        self._table = table
        self.values = np.full(n, np.nan)
        self.quality = np.full(n, quality.bad("no value yet"), np.uint16)
        self.timestamps = np.zeros(n, np.int64)
        self.objects = np.full(n, None, object)

    def update(self, batch: SampleBatch) -> None:
        tags = batch.tags
        self.values[tags] = batch.values
        self.quality[tags] = batch.quality
        self.timestamps[tags] = batch.timestamps
        if batch.objects is not None:
            self.objects[tags] = batch.objects

    def as_dict(self, index: int) -> dict[str, Any]:
        info = self._table[index]
        value: Any = self.objects[index]
        if value is None:
            number = float(self.values[index])
            value = None if np.isnan(number) else number
        stamp = int(self.timestamps[index])
        return {
            "id": info.id,
            "value": value,
            "quality": quality.describe(int(self.quality[index])),
            "timestamp": iso_utc(stamp) if stamp else None,
            "unit": info.unit,
            "writable": info.writable,
        }
