"""Where a column of tag values changes from one row to the next.

Identity tags (order, lot, material) hold the same value for hours, so the common column has
no change at all. An object column is first checked with ``list.count``, which compares by
identity before it calls ``==``: a driver that hands on the same string object while the
register bytes stay the same (the Modbus codec does) makes that a pointer comparison per row.
"""

from __future__ import annotations

__all__ = ["change_positions"]

from typing import Any

import numpy as np
from numpy.typing import NDArray

_NONE: NDArray[np.intp] = np.empty(0, np.intp)


def change_positions(keys: NDArray[Any]) -> NDArray[np.intp]:
    """The positions p at which ``keys[p + 1]`` differs from ``keys[p]``, ascending.

    Objects compare with ``==``; numbers compare as floats, and NaN (a missing value) equals NaN.
    """
    if len(keys) < 2:
        return _NONE
    if keys.dtype == object:
        items = keys.tolist()
        if items.count(items[0]) == len(items):
            return _NONE
        return np.flatnonzero(keys[1:] != keys[:-1])
    changed = keys[1:] != keys[:-1]
    if not changed.any():
        return _NONE
    changed &= ~(np.isnan(keys[1:]) & np.isnan(keys[:-1]))
    return np.flatnonzero(changed)
