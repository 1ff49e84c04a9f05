"""Report by exception: which samples of a batch are worth sending on.

A sample passes when its tag has never been reported, its quality changed, its value moved by
more than the tag's deadband since the last *reported* value (so a slow drift is reported once it
adds up), it turned NaN or back, or the last report is older than the tag's `max_age`.
Everything is vectorised over the batch; only non-numeric rows (strings) are compared one by one.
"""

from __future__ import annotations

__all__ = ["ChangeDetector"]

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.tags import TagTable


class ChangeDetector:
    """Per-tag memory of the last reported sample; :meth:`ingest` filters a batch."""

    def __init__(self, table: TagTable) -> None:
        n = len(table)
        self._deadband = table.deadband
        self._percent = table.deadband_percent
        self._span = table.span_width
        self._max_age = table.max_age_ns
        self._uses_percent = bool((table.deadband_percent > 0).any())
        self._uses_max_age = bool((table.max_age_ns > 0).any())
        self._value = np.full(n, np.nan)
        self._quality = np.full(n, _NEVER, np.uint16)
        self._sent_ns = np.zeros(n, np.int64)
        self._object: NDArray[np.object_] = np.full(n, None, object)

    def reset(self) -> None:
        """Forget everything: the next sample of every tag is reported."""
        self._quality[:] = _NEVER
        self._object[:] = None
        self._value[:] = np.nan

    def ingest(self, batch: SampleBatch) -> SampleBatch:
        """The rows of `batch` that changed, as a new batch (or `batch` itself if all did)."""
        if len(batch) == 0:
            return batch
        if batch.unique_tags:
            keep = self._changed(batch, None)
        else:
            keep = np.zeros(len(batch), bool)
            for rows in _occurrence_groups(batch.tags):
                keep[rows] = self._changed(batch, rows)
        if keep.all():
            return batch
        return batch.select(np.flatnonzero(keep))

    def _changed(self, batch: SampleBatch, rows: NDArray[np.intp] | None) -> NDArray[np.bool_]:
        if rows is None:
            tags, values, qualities = batch.tags, batch.values, batch.quality
        else:
            tags, values, qualities = batch.tags[rows], batch.values[rows], batch.quality[rows]
        last = self._value[tags]
        threshold = self._deadband[tags]
        if self._uses_percent:
            span = self._span[tags]
            base = np.where(np.isnan(span), np.abs(last), span)
            threshold = np.maximum(threshold, self._percent[tags] * 0.01 * base)
        with np.errstate(invalid="ignore"):
            diff = np.abs(values - last)
            changed = diff > threshold
        # a value turning NaN or back is a change; NaN followed by NaN is not
        gone = np.isnan(diff)
        if gone.any():
            changed |= gone & (np.isnan(values) != np.isnan(last))
        changed |= qualities != self._quality[tags]  # first samples: _NEVER never matches
        if self._uses_max_age:
            stamps = batch.timestamps if rows is None else batch.timestamps[rows]
            max_age = self._max_age[tags]
            changed |= (max_age > 0) & (stamps - self._sent_ns[tags] >= max_age)
        objects = batch.objects
        if objects is not None:
            row_objects = objects if rows is None else objects[rows]
            for position in np.flatnonzero(row_objects != None):  # noqa: E711 (elementwise)
                tag = tags[position]
                if row_objects[position] != self._object[tag]:
                    changed[position] = True
                    self._object[tag] = row_objects[position]
        picked = np.flatnonzero(changed)
        hit = tags[picked]
        self._value[hit] = values[picked]
        self._quality[hit] = qualities[picked]
        if self._uses_max_age:
            stamps = batch.timestamps if rows is None else batch.timestamps[rows]
            self._sent_ns[hit] = stamps[picked]
        result: NDArray[np.bool_] = changed
        return result


_NEVER = 0xFFFF
"""A quality code no sample carries: the "last quality" of a tag never reported."""


def _occurrence_groups(tags: NDArray[np.int32]) -> list[NDArray[np.intp]]:
    """Row indices split so that each group holds a tag at most once, in arrival order.

    Group k holds the (k+1)-th occurrence of every tag, so processing the groups in order applies
    a tag's samples in the order they arrived.
    """
    order = np.argsort(tags, kind="stable")
    sorted_tags = tags[order]
    starts = np.r_[True, sorted_tags[1:] != sorted_tags[:-1]]
    group_start = np.maximum.accumulate(np.where(starts, np.arange(len(tags)), 0))
    rank = np.arange(len(tags)) - group_start
    groups = []
    for k in range(int(rank.max()) + 1 if len(rank) else 0):
        rows = np.sort(order[rank == k])
        groups.append(rows)
    return groups
