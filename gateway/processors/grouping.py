"""A batch's rows grouped by a small integer key (a chart, a role), each group in row order.

The rows of a poll cycle through the same tags in the same order, so each key's rows are evenly
spaced and can be read as strided views without moving anything; any other batch is grouped by
one stable sort of the keys.
"""

from __future__ import annotations

__all__ = ["MOST_TAGS_PER_POLL", "repeating_cycle", "sorted_groups", "time_order"]

from typing import Any

import numpy as np
from numpy.typing import NDArray

MOST_TAGS_PER_POLL = 256
"""The longest cycle of tags looked for in a batch (the polls of one device, one after another)."""


def repeating_cycle(keys: NDArray[np.integer[Any]], most: int) -> list[int] | None:
    """The keys of one cycle when `keys` repeats one cycle of at most `most` distinct keys over
    and over (the last repetition may be cut short); None when it does not."""
    n = len(keys)
    if n == 0:
        return []
    again = np.flatnonzero(keys[1 : most + 1] == keys[0])
    period = int(again[0]) + 1 if len(again) else n
    if period > most:
        return None
    cycle: list[int] = keys[:period].tolist()
    if len(set(cycle)) == period and (keys[period:] == keys[:-period]).all():
        return cycle
    return None


def sorted_groups(keys: NDArray[np.integer[Any]], count: int) -> tuple[NDArray[np.intp], list[int]]:
    """One stable sort of `keys` (each 0 <= key < count): the rows in key order, and the
    ``count + 1`` bounds of each key's run in that order."""
    narrow = keys if keys.dtype.itemsize <= 2 or count >= 32_000 else keys.astype(np.int16)
    order = np.argsort(narrow, kind="stable")  # a radix sort for 8- and 16-bit keys
    bounds = np.concatenate(([0], np.cumsum(np.bincount(keys, minlength=count)))).tolist()
    return order, bounds


def time_order(
    stamps: NDArray[np.int64], last_at_a_moment: NDArray[np.bool_]
) -> NDArray[np.intp] | None:
    """The stable order of rows by time in which, at one moment, the `last_at_a_moment` rows
    (a new order, a state change) come after the others (the counters that still belong to
    what was before); None when the rows are in that order already."""
    late = last_at_a_moment
    if len(stamps) > 1 and (
        (stamps[1:] < stamps[:-1]).any()
        or (late[:-1] & ~late[1:] & (stamps[1:] == stamps[:-1])).any()
    ):
        order: NDArray[np.intp] = np.lexsort((late, stamps))
        return order
    return None
