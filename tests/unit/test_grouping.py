from __future__ import annotations

import numpy as np
import pytest

from gateway.processors.grouping import repeating_cycle, sorted_groups


@pytest.mark.parametrize(
    ("keys", "most", "expected"),
    [
        ([2, 0, 1, 2, 0, 1, 2], 3, [2, 0, 1]),  # the last poll cut short
        ([4, 4, 4], 3, [4]),
        ([1, 0, 1, 0], 2, [1, 0]),
        ([], 3, []),
        ([0, 1, 2, 0, 2, 1], 3, None),  # the order changes
        ([0, 1, 0, 1, 1], 2, None),
        ([0, 1, 2, 3], 3, None),  # more keys in a cycle than allowed
        ([0, 1, 1, 0, 1, 1], 3, None),  # a key twice in one cycle
    ],
)
def test_repeating_cycle(keys: list[int], most: int, expected: list[int] | None) -> None:
    assert repeating_cycle(np.array(keys, np.int8), most) == expected


def test_sorted_groups_keep_the_row_order_within_a_key() -> None:
    keys = np.array([2, 0, 2, 1, 0, 2], np.intp)
    order, bounds = sorted_groups(keys, 4)
    assert order.tolist() == [1, 4, 3, 0, 2, 5]
    assert bounds == [0, 2, 3, 6, 6]
