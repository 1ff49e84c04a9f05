"""Exact part counts from PLC counters: deltas through resets, rollovers, gaps and duplicates.

Rules, applied to the good-quality samples of one counter in time order, each compared with the
previous good sample (bad samples are skipped, so a gap is bridged by the next good value):

* the value rose by d → d parts;
* the value is unchanged (a duplicate or a stopped machine) → 0 parts;
* the value fell, the previous value was within `window` of the rollover point and the new value
  is below `window` → the counter wrapped: ``new + rollover - previous`` parts;
* the value fell otherwise → the PLC restarted its counter from 0: ``new`` parts;
* the very first sample only sets the baseline (0 parts).

A delta is therefore never negative and no part is counted twice. `window` defaults to a sixteenth
of the rollover range (4096 parts for a 16-bit counter).
"""

from __future__ import annotations

__all__ = [
    "CounterDeltas",
    "CounterSegments",
    "counter_deltas",
    "counter_segments",
    "default_rollover",
]

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

import numpy as np
from numpy.typing import NDArray

from gateway.datatypes import DataType


def default_rollover(data_type: DataType) -> int | None:
    """The value an integer counter of this type wraps to 0 at (None for 64-bit and floats)."""
    if data_type.is_integer and 1 < data_type.bits < 64:
        return 1 << data_type.bits
    return None


@dataclass(frozen=True, slots=True)
class CounterDeltas:
    """Parts per sample, and what the counter did."""

    deltas: NDArray[np.int64]
    last: int | None
    """The last good raw value (the next call's `previous`)."""
    resets: int
    rollovers: int


def counter_deltas(
    raw: NDArray[np.float64],
    previous: int | None,
    rollover: int | None,
    window: int | None = None,
) -> CounterDeltas:
    """Parts counted by each sample of `raw` (NaN = bad sample, counted as 0)."""
    n = len(raw)
    if n == 0:
        return CounterDeltas(np.zeros(0, np.int64), previous, 0, 0)
    good = raw == raw  # not NaN
    all_good = bool(good.all())
    if not all_good and not good.any():
        return CounterDeltas(np.zeros(n, np.int64), previous, 0, 0)
    values = raw.astype(np.int64) if all_good else raw[good].astype(np.int64)
    prev = np.empty_like(values)
    prev[1:] = values[:-1]
    if previous is None:
        prev[0] = values[0]
    else:
        prev[0] = previous
    step = values - prev
    fell = step < 0
    resets = rollovers = 0
    if fell.any():
        if rollover is not None:
            width = window if window is not None else max(1, rollover // 16)
            wrapped = fell & (prev >= rollover - width) & (values < width)
        else:
            wrapped = np.zeros_like(fell)
        rollovers = int(wrapped.sum())
        resets = int(fell.sum()) - rollovers
        step = np.where(wrapped, values + (rollover or 0) - prev, np.where(fell, values, step))
    if all_good:
        return CounterDeltas(step, int(values[-1]), resets, rollovers)
    deltas = np.zeros(n, np.int64)
    deltas[good] = step
    return CounterDeltas(deltas, int(values[-1]), resets, rollovers)


@dataclass(frozen=True, slots=True)
class CounterSegments:
    """Parts counted per segment of a run of samples, and what the counter did."""

    parts: list[int]
    last: int | None
    """The last good raw value (the next call's `previous`)."""
    resets: int
    rollovers: int


def counter_segments(
    raw: NDArray[np.float64],
    previous: int | None,
    rollover: int | None,
    cuts: Sequence[int] = (),
) -> CounterSegments:
    """Parts counted in each segment ``[0, cuts[0]), [cuts[0], cuts[1]), ..., [cuts[-1], n)`` of
    `raw` (`cuts` ascending): the sums of :func:`counter_deltas` over the segments.

    The usual run, a counter that never falls, is a telescoping sum: a segment's parts are the
    difference of the good raw values at its ends, with no per-sample arithmetic.
    """
    n = len(raw)
    ends = [0, *cuts, n]
    values, good = raw, None
    if math.isnan(float(raw.sum())):  # a bad sample (NaN) shows in the sum
        good = raw == raw
        values = raw[good]
    if len(values):
        base = float(values[0]) if previous is None else float(previous)
        if values[0] >= base and not (values[1:] < values[:-1]).any():
            # good samples before each end of a segment
            kept = ends if good is None else [int(np.count_nonzero(good[:end])) for end in ends]
            counted = [0.0 if k == 0 else float(values[k - 1]) - base for k in kept]
            parts = [int(b - a) for a, b in pairwise(counted)]
            return CounterSegments(parts, int(values[-1]), 0, 0)
    result = counter_deltas(raw, previous, rollover)
    running = np.concatenate(([0], result.deltas.cumsum()))
    return CounterSegments(
        np.diff(running[ends]).tolist(), result.last, result.resets, result.rollovers
    )
