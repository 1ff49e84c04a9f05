"""Counter arithmetic: exact deltas through resets, rollovers, gaps and duplicates."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.datatypes import DataType
from gateway.processors.counters import counter_deltas, counter_segments, default_rollover

NAN = float("nan")


def deltas(
    raw: list[float], previous: int | None = None, rollover: int | None = 65536
) -> list[int]:
    result: list[int] = counter_deltas(np.array(raw, float), previous, rollover).deltas.tolist()
    return result


def test_first_sample_sets_the_baseline() -> None:
    assert deltas([100, 103, 110]) == [0, 3, 7]


def test_previous_value_carries_over() -> None:
    assert deltas([103, 110], previous=100) == [3, 7]


def test_duplicates_count_nothing() -> None:
    assert deltas([5, 5, 5, 6], previous=5) == [0, 0, 0, 1]


def test_16_bit_rollover() -> None:
    assert deltas([65530, 65535, 3], previous=65520) == [10, 5, 4]


def test_reset_to_zero_and_to_a_lower_value() -> None:
    assert deltas([500, 0, 7], previous=490) == [10, 0, 7]
    assert deltas([20], previous=3000) == [20]


def test_bad_samples_are_bridged() -> None:
    result = counter_deltas(np.array([12, NAN, NAN, 20]), 10, 65536)
    assert result.deltas.tolist() == [2, 0, 0, 8]
    assert result.last == 20


def test_reset_and_rollover_are_counted() -> None:
    result = counter_deltas(np.array([65535, 2, 100, 5]), 65530, 65536)
    assert result.deltas.tolist() == [5, 3, 98, 5]
    assert (result.rollovers, result.resets) == (1, 1)


def test_default_rollover_by_type() -> None:
    assert default_rollover(DataType.UINT16) == 65536
    assert default_rollover(DataType.UINT32) == 2**32
    assert default_rollover(DataType.FLOAT64) is None


@st.composite
def counter_history(draw: st.DrawFn) -> tuple[list[float], int, int]:
    """A PLC counter's samples as a poller sees them, and the parts really made.

    Resets are generated only where they are observable (the documented rule): the value after
    the reset is below the last value seen, and the last value was not in the rollover window.
    """
    bits = draw(st.sampled_from([16, 32]))
    rollover = 1 << bits
    window = rollover // 16
    value = draw(st.integers(0, rollover - 1))
    samples: list[float] = [float(value)]
    made = 0
    for _ in range(draw(st.integers(1, 60))):
        event = draw(st.sampled_from(["count", "count", "count", "reset", "gap", "dup"]))
        if event == "count":
            step = draw(st.integers(0, 400))
            made += step
            value = (value + step) % rollover
            samples.append(float(value))
        elif event == "reset":
            if not 0 < value < rollover - window:
                continue
            step = draw(st.integers(0, min(400, value - 1)))
            made += step
            value = step  # the PLC restarted, then made `step` parts before the next poll
            samples.append(float(value))
        elif event == "gap":
            samples.append(NAN)
        else:
            samples.append(samples[-1])
    return samples, rollover, made


@settings(max_examples=400, deadline=None)
@given(counter_history())
def test_total_is_conserved(history: tuple[list[float], int, int]) -> None:
    samples, rollover, made = history
    result = counter_deltas(np.array(samples), None, rollover)
    assert (result.deltas >= 0).all()
    assert int(result.deltas.sum()) == made


@settings(max_examples=200, deadline=None)
@given(counter_history(), st.integers(1, 20))
def test_splitting_into_batches_changes_nothing(
    history: tuple[list[float], int, int], chunk: int
) -> None:
    samples, rollover, made = history
    total, previous = 0, None
    for start in range(0, len(samples), chunk):
        part = counter_deltas(np.array(samples[start : start + chunk]), previous, rollover)
        total += int(part.deltas.sum())
        previous = part.last
    assert total == made


@st.composite
def _split(draw: st.DrawFn) -> tuple[list[float], int, int | None, list[int]]:
    """A counter history, a previous value (None: the first batch) and ascending cuts."""
    samples, rollover, _ = draw(counter_history())
    previous = draw(st.none() | st.integers(0, rollover - 1))
    cuts = sorted(draw(st.lists(st.integers(0, len(samples)), max_size=4)))
    return samples, rollover, previous, cuts


@settings(max_examples=300, deadline=None)
@given(_split())
def test_segments_are_the_sums_of_the_deltas_between_the_cuts(
    case: tuple[list[float], int, int | None, list[int]],
) -> None:
    samples, rollover, previous, cuts = case
    raw = np.array(samples)
    expected = counter_deltas(raw, previous, rollover)
    ends = [0, *cuts, len(samples)]
    sums = [int(expected.deltas[a:b].sum()) for a, b in pairwise(ends)]
    found = counter_segments(raw, previous, rollover, cuts)
    assert found.parts == sums
    assert (found.last, found.resets, found.rollovers) == (
        expected.last,
        expected.resets,
        expected.rollovers,
    )


def test_segments_of_a_counter_that_only_counts_up() -> None:
    found = counter_segments(np.array([100.0, 103.0, 103.0, 110.0]), 98, 65536, [1, 3])
    assert found.parts == [2, 3, 7]
    assert found.last == 110
