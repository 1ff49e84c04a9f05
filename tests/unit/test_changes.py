from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from numpy.typing import NDArray

from gateway.processors.changes import change_positions


def _reference(values: Sequence[object]) -> list[int]:
    def same(a: object, b: object) -> bool:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return a == b

    return [p for p in range(len(values) - 1) if not same(values[p], values[p + 1])]


def _objects(values: Sequence[object]) -> NDArray[np.object_]:
    array = np.empty(len(values), object)
    array[:] = values
    return array


def test_a_lot_that_comes_back_is_two_changes() -> None:
    keys = _objects(["L1", "L1", "L2", "L2", "L1"])
    assert change_positions(keys).tolist() == [1, 3]


def test_equal_strings_that_are_different_objects_are_no_change() -> None:
    first = "".join(["L", "7"])
    second = "".join(["L", "7"])
    assert first is not second
    assert change_positions(_objects([first, second, first])).tolist() == []


def test_missing_numbers_are_no_change_among_themselves() -> None:
    keys = np.array([1.0, np.nan, np.nan, 1.0, 2.0])
    assert change_positions(keys).tolist() == [0, 2, 3]


@given(st.lists(st.sampled_from(["L1", "L2", "L3", None]), max_size=40))
def test_objects_change_where_neighbours_differ(values: list[str | None]) -> None:
    # copies, so that equal strings are mostly different objects
    copies = [v if v is None else "".join(list(v)) for v in values]
    assert change_positions(_objects(copies)).tolist() == _reference(values)


@given(st.lists(st.sampled_from([1.0, 2.0, math.nan]), max_size=40))
def test_numbers_change_where_neighbours_differ(values: list[float]) -> None:
    assert change_positions(np.array(values, np.float64)).tolist() == _reference(values)
