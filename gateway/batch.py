"""Columnar sample batches: how tag values travel through the gateway.

One batch per device poll or subscription publish. Numeric values (bools and integers included)
sit in a float64 column; strings, datetimes and byte strings in an optional object column, with
NaN in the numeric column for those rows. Per-tag Python objects exist only at the edges (a JSON
payload for one tag, the API).
"""

from __future__ import annotations

__all__ = ["SampleBatch", "now_ns"]

import time
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from gateway.quality import GOOD


def now_ns() -> int:
    """Wall-clock time in nanoseconds since the Unix epoch."""
    return time.time_ns()


@dataclass(frozen=True, slots=True)
class SampleBatch:
    """Samples of many tags, as parallel arrays of equal length."""

    source: str
    """The device (or component) the samples come from."""
    tags: NDArray[np.int32]
    """Tag-table index of each sample."""
    values: NDArray[np.float64]
    """Numeric value after scaling; NaN for non-numeric rows and for bad samples."""
    quality: NDArray[np.uint16]
    """Quality code of each sample (see :mod:`gateway.quality`)."""
    timestamps: NDArray[np.int64]
    """Source timestamp of each sample, ns since the epoch."""
    objects: NDArray[np.object_] | None = None
    """Non-numeric values (str, datetime, bytes) aligned with the rows; None if all numeric."""
    received_ns: int = field(default_factory=now_ns)
    """When the gateway received the samples."""
    unique_tags: bool = True
    """True when no tag appears twice (a poll); False for queued subscription values."""

    def __post_init__(self) -> None:
        n = len(self.tags)
        if not (len(self.values) == len(self.quality) == len(self.timestamps) == n) or (
            self.objects is not None and len(self.objects) != n
        ):
            raise ValueError(f"batch from {self.source}: columns differ in length")

    def __len__(self) -> int:
        return len(self.tags)

    @classmethod
    def empty(cls, source: str) -> SampleBatch:
        return cls(
            source,
            np.empty(0, np.int32),
            np.empty(0, np.float64),
            np.empty(0, np.uint16),
            np.empty(0, np.int64),
        )

    @classmethod
    def uniform(
        cls,
        source: str,
        tags: NDArray[np.int32],
        values: NDArray[np.float64],
        timestamp_ns: int,
        quality_code: int = GOOD,
        objects: NDArray[np.object_] | None = None,
    ) -> SampleBatch:
        """A batch whose samples share one timestamp and one quality (a poll)."""
        n = len(tags)
        return cls(
            source,
            tags,
            values,
            np.full(n, quality_code, np.uint16),
            np.full(n, timestamp_ns, np.int64),
            objects,
        )

    @classmethod
    def bad(cls, source: str, tags: NDArray[np.int32], code: int, timestamp_ns: int) -> SampleBatch:
        """Every tag in `tags` marked bad (device timeout, disconnect)."""
        return cls.uniform(source, tags, np.full(len(tags), np.nan), timestamp_ns, code)

    def select(self, mask: NDArray[np.bool_] | NDArray[np.intp]) -> SampleBatch:
        """The rows picked by a boolean mask or an index array, as a new batch."""
        return SampleBatch(
            self.source,
            self.tags[mask],
            self.values[mask],
            self.quality[mask],
            self.timestamps[mask],
            None if self.objects is None else self.objects[mask],
            self.received_ns,
            self.unique_tags,
        )

    def value_of(self, row: int) -> object:
        """The Python value of one row (for the edges: JSON, the API)."""
        if self.objects is not None and self.objects[row] is not None:
            return self.objects[row]
        value = float(self.values[row])
        return None if np.isnan(value) else value

    @staticmethod
    def concat(source: str, batches: list[SampleBatch]) -> SampleBatch:
        """Join batches (of one source) into one."""
        if not batches:
            return SampleBatch.empty(source)
        if len(batches) == 1:
            return batches[0]
        objects = None
        if any(b.objects is not None for b in batches):
            objects = np.concatenate(
                [
                    b.objects if b.objects is not None else np.full(len(b), None, object)
                    for b in batches
                ]
            )
        return SampleBatch(
            source,
            np.concatenate([b.tags for b in batches]),
            np.concatenate([b.values for b in batches]),
            np.concatenate([b.quality for b in batches]),
            np.concatenate([b.timestamps for b in batches]),
            objects,
            max(b.received_ns for b in batches),
            False,
        )
