"""Measurement extraction: new per-part values from a ring-buffer array or a scalar tag.

*Ring mode* (a characteristic with `sequence`): the PLC writes the measurement of part number s
into slot (s - 1) mod R of an array tag and counts s in a sequence tag. When the sequence moves
from p to s, parts p+1..s are new; a sequence that fell means the PLC restarted (parts 1..s).
More than R new parts since the last read means the oldest were overwritten: they are counted as
missed. *Scalar mode*: every good sample with a new source timestamp is one measurement (for
subscriptions with a queue, where every change arrives).
"""

from __future__ import annotations

__all__ = ["RingReader", "ScalarReader"]

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.quality import is_good


class RingReader:
    """New measurements from a ring buffer; keeps a copy of the ring between batches."""

    def __init__(self, slots: NDArray[np.int32], sequence: int, n_tags: int) -> None:
        self._size = len(slots)
        self._slot_of = np.full(n_tags, -1, np.int32)
        self._slot_of[slots] = np.arange(self._size, dtype=np.int32)
        self._sequence_tag = sequence
        self._ring = np.full(self._size, np.nan)
        self.last_sequence: int | None = None
        self.missed = 0

    def read(self, batch: SampleBatch) -> NDArray[np.float64]:
        good = is_good(batch.quality)
        slots = self._slot_of[batch.tags]
        hit = (slots >= 0) & good
        if hit.any():
            self._ring[slots[hit]] = batch.values[hit]
        seq_rows = np.flatnonzero((batch.tags == self._sequence_tag) & good)
        if len(seq_rows) == 0:
            return np.empty(0)
        sequences = batch.values[seq_rows]
        sequences = sequences[~np.isnan(sequences)].astype(np.int64)
        if len(sequences) == 0:
            return np.empty(0)
        new_parts: list[int] = []
        previous = self.last_sequence
        for sequence in sequences.tolist():  # a few per batch: one per poll or publish
            if previous is None:
                previous = sequence
                continue
            first = previous + 1 if sequence >= previous else 1
            new_parts.extend(range(first, sequence + 1))
            previous = sequence
        self.last_sequence = previous
        if len(new_parts) > self._size:
            self.missed += len(new_parts) - self._size
            new_parts = new_parts[-self._size :]
        if not new_parts:
            return np.empty(0)
        index = (np.asarray(new_parts, np.int64) - 1) % self._size
        values: NDArray[np.float64] = self._ring[index]
        return values[~np.isnan(values)]


class ScalarReader:
    """Every good sample of one tag with a new timestamp is a measurement."""

    def __init__(self, tag: int) -> None:
        self._tag = tag
        self.last_ns: int = 0

    def read(self, batch: SampleBatch) -> NDArray[np.float64]:
        rows = np.flatnonzero((batch.tags == self._tag) & is_good(batch.quality))
        if len(rows) == 0:
            return np.empty(0)
        stamps = batch.timestamps[rows]
        fresh = stamps > self.last_ns
        if not fresh.any():
            return np.empty(0)
        self.last_ns = int(stamps[fresh].max())
        values = batch.values[rows[fresh]]
        return values[~np.isnan(values)]
