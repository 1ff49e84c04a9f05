"""The eight Nelson rules on crafted sequences that must and must not fire, and the streaming
charts against the offline evaluation under any slicing into batches."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.processors.nelson import nelson_bits, nelson_flags
from gateway.processors.spc import ChartSpec, ControlCharts

# centre line 0, chart sigma 1 throughout
CASES = [
    # (rule, points, indices where it must fire)
    (1, [0, 0.5, 3.01, -3.5, 3.0, -3.0], [2, 3]),  # |p| = 3 exactly does not
    (2, [0.1] * 9, [8]),
    (2, [-0.2] * 10, [8, 9]),
    (2, [0.1] * 8 + [0.0], []),  # a point on the centre line breaks the run
    (2, [0.1] * 4 + [-0.1] + [0.1] * 4, []),
    (3, [0, 0.1, 0.2, 0.3, 0.4, 0.5], [5]),
    (3, [0.5, 0.4, 0.3, 0.2, 0.1, 0.0, -0.1], [5, 6]),
    (3, [0, 0.1, 0.2, 0.2, 0.3, 0.4], []),  # equal neighbours are not steady
    (3, [0, 0.1, 0.2, 0.3, 0.4], []),  # five points only
    (4, [0.1, -0.1] * 7, [13]),
    (4, [0.1, -0.1] * 8, [13, 14, 15]),
    (4, [0.1, -0.1] * 6 + [-0.1, 0.1], []),  # a zero difference breaks the alternation
    (4, [0.1, -0.1] * 6 + [0.1], []),  # 13 points
    (5, [0, 2.5, 0, 2.5], [3]),
    (5, [2.1, 2.2, -3.0], [2]),  # not at index 1: the first window is complete at 2
    (5, [2.5, 0, -2.5, 0], []),  # one above, one below
    (5, [2.0, 2.0, 2.0], []),  # exactly 2 sigma is not beyond
    (6, [1.5, 1.5, 0, 1.5, 1.5], [4]),
    (6, [-1.2, -1.1, -1.3, 0, -1.4], [4]),
    (6, [1.5, 1.5, 0, 0, 1.5], []),
    (6, [1.5, 1.5, -1.5, 1.5, 0], []),
    (7, [0.5, -0.5] * 7 + [0.9], [14]),
    (7, [0.2] * 14 + [1.0], []),  # |p| = 1 is not within
    (7, [0.2] * 14, []),
    (8, [1.5, -1.5] * 4, [7]),
    (8, [1.5] * 7 + [-1.1, 1.2], [7, 8]),
    (8, [1.5] * 8, []),  # all on one side
    (8, [1.5, -1.5] * 3 + [1.0, -1.5], []),  # |p| = 1 is not beyond
]


@pytest.mark.parametrize(("rule", "points", "expected"), CASES)
def test_rule(rule: int, points: list[float], expected: list[int]) -> None:
    flags = nelson_flags(np.array(points, float), 0.0, 1.0)
    assert np.flatnonzero(flags[rule - 1]).tolist() == expected


def test_scaled_limits() -> None:
    # cl = 10, s = 0.01: rule 1 beyond 10.03, rule 5 beyond 10.02
    flags = nelson_flags(np.array([10.0, 10.025, 10.021, 10.031]), 10.0, 0.01)
    assert np.flatnonzero(flags[0]).tolist() == [3]
    assert np.flatnonzero(flags[4]).tolist() == [2, 3]


def test_windows_do_not_reach_into_another_chart() -> None:
    points = np.array([0.1] * 5 + [0.1] * 9)
    bits = nelson_bits(points, 0.0, 1.0, [0, 5])
    assert np.flatnonzero(bits & 2).tolist() == [13]  # rule 2 only at the 9th of the 2nd
    assert np.flatnonzero(nelson_bits(points, 0.0, 1.0) & 2).tolist() == [8, 9, 10, 11, 12, 13]
    # a run shorter than the longest window: every rule cleared where its window is short
    bits = nelson_bits(np.array([5.0] * 3 + [-5.0] * 20), 0.0, 1.0, [0, 1, 3])
    assert bits[:3].tolist() == [1, 1, 1]  # runs 1 and 2 too short for any rule but rule 1
    assert np.flatnonzero(bits & 16)[0] == 5  # rule 5: the 3rd point of run 3
    assert np.flatnonzero(bits & 2).tolist() == list(range(11, 23))


# --- streaming ------------------------------------------------------------------------------


def offline_starts(points: np.ndarray, cl: float, s: float) -> set[tuple[int, int]]:
    flags = nelson_flags(points, cl, s)
    previous = np.zeros_like(flags)
    previous[:, 1:] = flags[:, :-1]
    rules, indices = np.nonzero(flags & ~previous)
    return {(int(i), int(r) + 1) for r, i in zip(rules, indices, strict=True)}


@st.composite
def stream(draw: st.DrawFn) -> tuple[list[float], list[int], int]:
    size = draw(st.integers(20, 300))
    drift = draw(st.floats(-0.05, 0.05))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    values = (rng.normal(0, 1, size) + drift * np.arange(size)).round(2).tolist()
    cuts = sorted(draw(st.lists(st.integers(1, size - 1), max_size=12, unique=True)))
    subgroup = draw(st.sampled_from([1, 2, 5]))
    return values, cuts, subgroup


@settings(max_examples=150, deadline=None)
@given(stream())
def test_any_slicing_gives_the_offline_result(case: tuple[list[float], list[int], int]) -> None:
    values, cuts, k = case
    charts = ControlCharts([ChartSpec(subgroup=k, center=0.0, sigma=1.0 / k**0.5)])
    state = charts.fresh_state()
    found: set[tuple[int, int]] = set()
    data = np.array(values)
    for part in np.split(np.arange(len(values)), cuts):
        update = charts.ingest(
            state, np.zeros(len(part), np.intp), data[part], part.astype(np.int64)
        )
        for point in np.flatnonzero(update.starts):
            for rule in range(1, 9):
                if update.starts[point] >> (rule - 1) & 1:
                    found.add((int(update.index[point]), rule))
    groups = len(values) // k
    points = data[: groups * k].reshape(groups, k).mean(axis=1)
    assert found == offline_starts(points, 0.0, 1.0 / k**0.5)


def test_baseline_then_rules_and_charts_kept_apart() -> None:
    charts = ControlCharts([ChartSpec(subgroup=1, baseline=4), ChartSpec(subgroup=1, baseline=4)])
    state = charts.fresh_state()
    # chart 0: baseline 10, 11, 9, 10 -> cl 10, MR-bar 4/3, sigma 1.182; chart 1 interleaved
    chart = np.array([0, 1, 0, 1, 0, 1, 0, 1, 0, 1], np.intp)
    values = np.array([10, 50, 11, 51, 9, 49, 10, 50, 20, 50.5])
    update = charts.ingest(state, chart, values, np.arange(10, dtype=np.int64))
    assert charts.limits(state, 0) == pytest.approx(
        (10.0, 10 + 3 * (4 / 3) / 1.128, 10 - 3 * (4 / 3) / 1.128)
    )
    assert update.evaluated.tolist() == [False] * 4 + [True] + [False] * 4 + [True]
    assert update.index.tolist() == [0, 1, 2, 3, 4] * 2
    assert update.bits.tolist()[4] & 1  # 20 is beyond 3 sigma of chart 0
    assert update.bits.tolist()[9] == 0  # 50.5 is within chart 1's limits


def test_state_round_trip_continues_the_runs() -> None:
    spec = [ChartSpec(subgroup=1, center=0.0, sigma=1.0)]
    charts = ControlCharts(spec)
    state = charts.fresh_state()
    charts.ingest(state, np.zeros(5, np.intp), np.full(5, 0.1), np.arange(5, dtype=np.int64))
    from gateway.processors.spc import ChartState

    restored = ChartState.from_dict(state.as_dict(), spec)
    update = charts.ingest(
        restored, np.zeros(4, np.intp), np.full(4, 0.1), np.arange(5, 9, dtype=np.int64)
    )
    assert update.starts.tolist() == [0, 0, 0, 2]  # rule 2 starts at the 9th point


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 4))
def test_row_order_across_charts_does_not_matter(seed: int, cycles: int) -> None:
    """Rows cycling through the charts (tags polled together) and rows in any other order
    that keeps each chart's own order give the same points and the same rule bits."""
    rng = np.random.default_rng(seed)
    specs = [ChartSpec(subgroup=k, center=0.0, sigma=1.0) for k in (1, 2, 5)]
    per_chart = rng.normal(0, 1.2, (3, 30 * cycles)).round(2)

    def points_of(order: np.ndarray) -> dict[tuple[int, int], tuple[float, int]]:
        charts = ControlCharts(specs)
        state = charts.fresh_state()
        taken = [0, 0, 0]
        values = []
        for c in order.tolist():
            values.append(per_chart[c, taken[c]])
            taken[c] += 1
        update = charts.ingest(
            state, order.astype(np.intp), np.array(values), np.arange(len(order), dtype=np.int64)
        )
        return {
            (int(c), int(i)): (float(v), int(b))
            for c, i, v, b in zip(
                update.chart, update.index, update.value, update.bits, strict=True
            )
        }

    cycling = np.tile(np.arange(3), per_chart.shape[1])
    shuffled = rng.permutation(cycling)  # each chart's values still taken in their own order
    assert points_of(cycling) == points_of(shuffled)
    assert len(points_of(cycling)) == (30 + 15 + 6) * cycles  # subgroups of 1, 2 and 5


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 299), max_size=10, unique=True))
def test_several_charts_in_slices_give_each_chart_its_offline_result(
    seed: int, cuts: list[int]
) -> None:
    """Charts fed together, batch after batch: each finds what it finds alone in one pass."""
    rng = np.random.default_rng(seed)
    per_chart = (rng.normal(0, 1, (3, 100)) + np.linspace(0, 2, 100)).round(2)
    charts = ControlCharts([ChartSpec(subgroup=1, center=0.0, sigma=1.0)] * 3)
    state = charts.fresh_state()
    chart = rng.permutation(np.repeat(np.arange(3), 100))
    rank = np.zeros(300, np.intp)
    for c in range(3):
        rank[chart == c] = np.arange(100)
    values = per_chart[chart, rank]
    found: set[tuple[int, int, int]] = set()
    for part in np.split(np.arange(300), sorted(cuts)):
        update = charts.ingest(state, chart[part], values[part], part.astype(np.int64))
        for point in np.flatnonzero(update.starts):
            for rule in range(1, 9):
                if update.starts[point] >> (rule - 1) & 1:
                    found.add((int(update.chart[point]), int(update.index[point]), rule))
    expected = {(c, i, r) for c in range(3) for i, r in offline_starts(per_chart[c], 0.0, 1.0)}
    assert found == expected
