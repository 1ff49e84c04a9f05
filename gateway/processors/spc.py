"""Control charts and process capability, offline (a column of a CSV) and live (a stream).

Chart types by subgroup size k: individuals / moving range for k = 1, X̄/R for k = 2..10.

* k = 1: the plotted points are the values; sigma_within = mean moving range / d₂(2) = MR̄/1.128.
* k > 1: consecutive complete subgroups of k values; the plotted points are the subgroup means;
  sigma_within = mean subgroup range / d₂(k) = R̄/d₂(k).
* Centre line cl = mean of the plotted points; chart sigma s = sigma_within / sqrt(k);
  UCL, LCL = cl ± 3s.
* Cp = (USL - LSL) / 6 sigma_within, Cpk = min(USL - mean, mean - LSL) / 3 sigma_within;
  Pp and Ppk the same with sigma_overall, the sample standard deviation (n - 1) of all values.

:func:`analyze` does it for one series (``edge-gateway spc``). :class:`ControlCharts` runs many
charts on a stream: each characteristic's limits come from the config or from its first
`baseline` plotted points; every later point is checked against the eight Nelson rules
together with the 14 points before it, and each run of violations of one rule is reported once,
at the point where it starts.
"""

from __future__ import annotations

__all__ = [
    "D2",
    "ChartGroup",
    "ChartSpec",
    "ChartState",
    "ChartUpdate",
    "ControlCharts",
    "SpcAnalysis",
    "analyze",
    "capability",
]

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.processors.grouping import repeating_cycle, sorted_groups
from gateway.processors.nelson import HISTORY, nelson_bits, nelson_flags, violation_indices

D2: dict[int, float] = {
    2: 1.128,
    3: 1.693,
    4: 2.059,
    5: 2.326,
    6: 2.534,
    7: 2.704,
    8: 2.847,
    9: 2.970,
    10: 3.078,
}
"""d₂(n): expected range of n normal values in units of sigma (ASTM / Montgomery table)."""
D3: dict[int, float] = {2: 0, 3: 0, 4: 0, 5: 0, 6: 0, 7: 0.076, 8: 0.136, 9: 0.184, 10: 0.223}
D4: dict[int, float] = {
    2: 3.267,
    3: 2.574,
    4: 2.282,
    5: 2.114,
    6: 2.004,
    7: 1.924,
    8: 1.864,
    9: 1.816,
    10: 1.777,
}


def capability(
    mean: float, sigma: float, lsl: float | None, usl: float | None
) -> tuple[float, float]:
    """(Cp, Cpk) for a sigma; with one limit Cp is NaN and Cpk the one-sided index.

    A sigma of 0 gives +inf (or NaN for Cp without both limits); callers decide how to show it.
    """
    if math.isnan(mean) or math.isnan(sigma):
        return math.nan, math.nan
    sides = []
    with np.errstate(divide="ignore", invalid="ignore"):
        if usl is not None:
            sides.append(_ratio(usl - mean, 3 * sigma))
        if lsl is not None:
            sides.append(_ratio(mean - lsl, 3 * sigma))
        cp = _ratio(usl - lsl, 6 * sigma) if usl is not None and lsl is not None else math.nan
    return cp, (min(sides) if sides else math.nan)


def _ratio(numerator: float, denominator: float) -> float:
    if denominator == 0:
        if numerator == 0:
            return math.nan
        return math.copysign(math.inf, numerator)
    return numerator / denominator


# --- offline: one series ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpcAnalysis:
    """Result of :func:`analyze` (the fields of ``edge-gateway spc --json``)."""

    n: int
    subgroup: int
    mean: float
    sigma_within: float
    sigma_overall: float
    cp: float
    cpk: float
    pp: float
    ppk: float
    cl: float
    ucl: float
    lcl: float
    violations: dict[str, list[int]]
    points: NDArray[np.float64] = field(repr=False)
    ranges: NDArray[np.float64] = field(repr=False)
    """Moving ranges (k = 1, n - 1 of them) or subgroup ranges (k > 1)."""

    def as_dict(self) -> dict[str, Any]:
        """The JSON object, in the documented key order; non-finite numbers become None."""
        out: dict[str, Any] = {"n": self.n, "subgroup": self.subgroup}
        for name in ("mean", "sigma_within", "sigma_overall", "cp", "cpk", "pp", "ppk"):
            out[name] = _finite(getattr(self, name))
        for name in ("cl", "ucl", "lcl"):
            out[name] = _finite(getattr(self, name))
        out["violations"] = self.violations
        return out


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def analyze(
    values: Sequence[float] | NDArray[np.float64],
    *,
    lsl: float,
    usl: float,
    subgroup: int = 1,
) -> SpcAnalysis:
    """Chart, capability and Nelson rules of one series (semantics in the module docstring).

    Raises ValueError when the series is too short for the chart or the limits are reversed.
    """
    data = np.asarray(values, np.float64)
    if not lsl < usl:
        raise ValueError(f"the lower specification limit {lsl} must be below the upper {usl}")
    if not 1 <= subgroup <= 10:
        raise ValueError(f"subgroup must be 1 (individuals) or 2..10 (X-bar/R), not {subgroup}")
    n = len(data)
    if subgroup == 1:
        if n < 2:
            raise ValueError(f"an individuals chart needs at least 2 values, got {n}")
        points = data
        ranges = np.abs(np.diff(data))
        sigma_within = float(ranges.mean()) / D2[2]
    else:
        groups = n // subgroup
        if groups < 1 or n < 2:
            raise ValueError(
                f"an X-bar/R chart with subgroup {subgroup} needs at least {subgroup} values, "
                f"got {n}"
            )
        block = data[: groups * subgroup].reshape(groups, subgroup)
        points = block.mean(axis=1)
        ranges = block.max(axis=1) - block.min(axis=1)
        sigma_within = float(ranges.mean()) / D2[subgroup]
    mean = float(data.mean())
    sigma_overall = float(data.std(ddof=1))
    cp, cpk = capability(mean, sigma_within, lsl, usl)
    pp, ppk = capability(mean, sigma_overall, lsl, usl)
    cl = float(points.mean())
    s = sigma_within / math.sqrt(subgroup)
    flags = nelson_flags(points, cl, s)
    return SpcAnalysis(
        n=n,
        subgroup=subgroup,
        mean=mean,
        sigma_within=sigma_within,
        sigma_overall=sigma_overall,
        cp=cp,
        cpk=cpk,
        pp=pp,
        ppk=ppk,
        cl=cl,
        ucl=cl + 3 * s,
        lcl=cl - 3 * s,
        violations=violation_indices(flags),
        points=points,
        ranges=ranges,
    )


# --- live: many charts on a stream --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChartSpec:
    """One chart's fixed settings."""

    subgroup: int = 1
    baseline: int = 25
    center: float | None = None
    """Fixed centre line (with `sigma`); None: from the baseline."""
    sigma: float | None = None
    """Fixed chart sigma s (already divided by sqrt(subgroup))."""


@dataclass
class ChartState:
    """Everything the charts remember between batches (JSON-able through :meth:`as_dict`)."""

    points: NDArray[np.int64]
    """Plotted points so far, per chart."""
    center: NDArray[np.float64]
    """Centre line per chart; NaN while the baseline is being collected."""
    sigma: NDArray[np.float64]
    """Chart sigma s per chart."""
    history: list[list[float]]
    """The last :data:`HISTORY` plotted points of each chart."""
    firing: NDArray[np.uint8]
    """Per chart, the rules that fired at its last point (bit r-1 for rule r)."""
    pending: list[list[float]]
    """Values of each chart's incomplete subgroup."""
    baseline: list[list[float]]
    """Plotted points collected for the limits (k = 1) ..."""
    baseline_ranges: list[list[float]]
    """... and the subgroup ranges (k > 1)."""

    @classmethod
    def fresh(cls, specs: Sequence[ChartSpec]) -> ChartState:
        count = len(specs)
        return cls(
            np.zeros(count, np.int64),
            np.array([np.nan if s.center is None else s.center for s in specs], np.float64),
            np.array([np.nan if s.sigma is None else s.sigma for s in specs], np.float64),
            [[] for _ in specs],
            np.zeros(count, np.uint8),
            [[] for _ in specs],
            [[] for _ in specs],
            [[] for _ in specs],
        )

    def copy(self) -> ChartState:
        return ChartState(
            self.points.copy(),
            self.center.copy(),
            self.sigma.copy(),
            [list(h) for h in self.history],
            self.firing.copy(),
            [list(p) for p in self.pending],
            [list(b) for b in self.baseline],
            [list(b) for b in self.baseline_ranges],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "points": self.points.tolist(),
            "center": [None if math.isnan(c) else c for c in self.center.tolist()],
            "sigma": [None if math.isnan(s) else s for s in self.sigma.tolist()],
            "history": self.history,
            "firing": self.firing.tolist(),
            "pending": self.pending,
            "baseline": self.baseline,
            "baseline_ranges": self.baseline_ranges,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], specs: Sequence[ChartSpec]) -> ChartState:
        """Saved state; a chart whose count does not match the specs starts afresh."""
        fresh = cls.fresh(specs)
        try:
            state = cls(
                np.array(data["points"], np.int64),
                np.array([np.nan if c is None else c for c in data["center"]], np.float64),
                np.array([np.nan if s is None else s for s in data["sigma"]], np.float64),
                [list(map(float, h)) for h in data["history"]],
                np.array(data["firing"], np.uint8),
                [list(map(float, p)) for p in data["pending"]],
                [list(map(float, b)) for b in data["baseline"]],
                [list(map(float, b)) for b in data["baseline_ranges"]],
            )
        except (KeyError, TypeError, ValueError):
            return fresh
        if len(state.points) != len(specs):
            return fresh
        for index, spec in enumerate(specs):  # configured limits win over saved ones
            if spec.center is not None:
                state.center[index] = spec.center
                state.sigma[index] = spec.sigma if spec.sigma is not None else np.nan
        return state


@dataclass(frozen=True, slots=True)
class ChartUpdate:
    """What one call of :meth:`ControlCharts.ingest` plotted and found."""

    chart: NDArray[np.intp]
    """Chart of each new plotted point (grouped by chart, in time order within a chart)."""
    index: NDArray[np.int64]
    """0-based number of each point within its chart."""
    value: NDArray[np.float64]
    stamp_ns: NDArray[np.int64]
    """Timestamp of the point's last measurement."""
    ranges: NDArray[np.float64]
    """Subgroup range of each point (NaN for individuals)."""
    evaluated: NDArray[np.bool_]
    """Whether the point was checked (its chart had limits)."""
    bits: NDArray[np.uint8]
    """Rules that fired at each point (bit r-1 for rule r); 0 where not evaluated."""
    starts: NDArray[np.uint8]
    """Rules whose run of violations starts at each point."""

    def __len__(self) -> int:
        return len(self.chart)

    @property
    def flags(self) -> NDArray[np.bool_]:
        """`bits` as an (8, points) boolean array, row r-1 for rule r."""
        from gateway.processors.nelson import unpack

        return unpack(self.bits)


_EMPTY_UPDATE_F = np.empty(0, np.float64)


ChartGroup = tuple[int, NDArray[np.float64], NDArray[np.int64]]
"""One chart's new measurements: (chart, values, timestamps), in time order."""
_Plotted = dict[int, tuple[NDArray[np.float64], NDArray[np.int64], NDArray[np.float64]]]
"""Per chart: its new plotted points, their timestamps and their subgroup ranges."""


def _per_chart(
    chart: NDArray[np.intp], values: NDArray[np.float64], stamps: NDArray[np.int64], count: int
) -> list[ChartGroup]:
    """Each chart's measurements (in their order), by chart number."""
    cycle = repeating_cycle(chart, count)
    if cycle is not None:  # strided views
        period = len(cycle)
        return sorted(
            (c, values[offset::period], stamps[offset::period]) for offset, c in enumerate(cycle)
        )
    order, bounds = sorted_groups(chart, count)
    values, stamps = values[order], stamps[order]
    return [
        (c, values[bounds[c] : bounds[c + 1]], stamps[bounds[c] : bounds[c + 1]])
        for c in range(count)
        if bounds[c] < bounds[c + 1]
    ]


class ControlCharts:
    """Many control charts fed together; pure computation over a :class:`ChartState`."""

    def __init__(self, specs: Sequence[ChartSpec]) -> None:
        self.specs = tuple(specs)
        self._nan = np.full(1024, np.nan)

    def fresh_state(self) -> ChartState:
        return ChartState.fresh(self.specs)

    def ingest(
        self,
        state: ChartState,
        chart: NDArray[np.intp],
        values: NDArray[np.float64],
        stamps: NDArray[np.int64],
    ) -> ChartUpdate:
        """Add measurements (in time order per chart) to `state`; returns the new points."""
        return self.ingest_groups(state, _per_chart(chart, values, stamps, len(self.specs)))

    def ingest_groups(self, state: ChartState, groups: Sequence[ChartGroup]) -> ChartUpdate:
        """:meth:`ingest` with the measurements already grouped by chart, in chart order."""
        # 1. plotted points per chart (subgroup means), baselines and limits
        present: list[int] = []
        sizes: list[int] = []
        firsts: list[int] = []
        history_sizes: list[int] = []
        segments: list[NDArray[np.float64]] = []
        point_parts: list[NDArray[np.float64]] = []
        stamp_parts: list[NDArray[np.int64]] = []
        range_parts: list[NDArray[np.float64]] = []
        eval_parts: list[NDArray[np.bool_] | None] = []
        plotted = self._plotted_points(state, groups)
        for c, _, _ in groups:
            points, point_ns, ranges = plotted[c]
            m = len(points)
            if m == 0:
                continue
            evaluated = (
                None
                if not math.isnan(state.center[c])
                else self._baseline(state, c, points, ranges)
            )
            present.append(c)
            sizes.append(m)
            firsts.append(int(state.points[c]))
            state.points[c] += m
            history = state.history[c]
            history_sizes.append(len(history))
            segments.append(np.array(history, np.float64))
            segments.append(points)
            point_parts.append(points)
            stamp_parts.append(point_ns)
            range_parts.append(ranges)
            eval_parts.append(evaluated)
            if m >= HISTORY:
                state.history[c] = points[-HISTORY:].tolist()
            else:
                state.history[c] = (history + points.tolist())[-HISTORY:]
        if not present:
            empty_u8 = np.zeros(0, np.uint8)
            return ChartUpdate(
                np.empty(0, np.intp),
                np.empty(0, np.int64),
                _EMPTY_UPDATE_F,
                np.empty(0, np.int64),
                _EMPTY_UPDATE_F,
                np.empty(0, bool),
                empty_u8,
                empty_u8,
            )
        size = np.array(sizes, np.int64)
        total = int(size.sum())
        first_new = np.concatenate(([0], np.cumsum(size)[:-1]))
        charts = np.repeat(np.array(present, np.intp), size)
        index = np.arange(total, dtype=np.int64) + np.repeat(np.array(firsts) - first_new, size)
        present_charts = np.array(present, np.intp)
        all_evaluated = all(e is None for e in eval_parts)
        if all_evaluated:
            evaluated = np.ones(total, bool)
        else:
            evaluated = np.concatenate(
                [
                    np.ones(m, bool) if e is None else e
                    for m, e in zip(sizes, eval_parts, strict=True)
                ]
            )
        # 2. every rule on every new point, windows reaching into each chart's history
        lengths = size + np.array(history_sizes, np.int64)
        seg_start = np.concatenate(([0], np.cumsum(lengths)[:-1]))
        all_points = np.concatenate(segments) if len(segments) > 1 else segments[0]
        seg_chart = np.repeat(np.array(present, np.intp), lengths)
        # a chart with a full history only keeps points whose windows are all its own
        complete = min(history_sizes) >= HISTORY
        bits_all = nelson_bits(
            all_points,
            state.center[seg_chart],
            state.sigma[seg_chart],
            () if complete else seg_start,
        )
        if any(history_sizes):  # the new points: each segment after its history
            firsts_new = (seg_start + np.array(history_sizes, np.int64)).tolist()
            ends = (seg_start + lengths).tolist()
            bits = np.concatenate([bits_all[a:b] for a, b in zip(firsts_new, ends, strict=True)])
        else:
            bits = bits_all
        if not all_evaluated:
            bits[~evaluated] = 0
        # 3. where a run of violations starts (compared with the chart's previous point)
        previous = np.empty_like(bits)
        previous[1:] = bits[:-1]
        previous[first_new] = state.firing[present_charts]
        run_starts = bits & ~previous
        last_new = first_new + size - 1
        keep = ~evaluated[last_new]
        state.firing[present_charts] = np.where(keep, state.firing[present_charts], bits[last_new])
        return ChartUpdate(
            charts,
            index,
            np.concatenate(point_parts) if len(point_parts) > 1 else point_parts[0],
            np.concatenate(stamp_parts) if len(stamp_parts) > 1 else stamp_parts[0],
            np.concatenate(range_parts) if len(range_parts) > 1 else range_parts[0],
            evaluated,
            bits,
            run_starts,
        )

    def _plotted_points(
        self,
        state: ChartState,
        groups: Sequence[ChartGroup],
    ) -> _Plotted:
        """Per chart: its new plotted points, their timestamps and subgroup ranges.

        Individuals plot the values as they are. The subgroups of all charts with one subgroup
        size k > 1 are reduced together, in one pass over their joined complete subgroups.
        """
        plotted: _Plotted = {}
        by_size: dict[int, list[ChartGroup]] = {}
        for c, values, stamps in groups:
            k = self.specs[c].subgroup
            if k == 1:
                if len(self._nan) < len(values):
                    self._nan = np.full(max(len(values), 2 * len(self._nan)), np.nan)
                plotted[c] = (values, stamps, self._nan[: len(values)])
            else:
                by_size.setdefault(k, []).append((c, values, stamps))
        for k, members in by_size.items():
            plotted.update(self._subgroup_means(state, k, members))
        return plotted

    def _subgroup_means(
        self,
        state: ChartState,
        k: int,
        members: list[ChartGroup],
    ) -> _Plotted:
        """Means and ranges of the complete subgroups of charts of subgroup size k; the values
        of an incomplete last subgroup wait in the chart's `pending` list."""
        complete: list[NDArray[np.float64]] = []
        counts: list[int] = []
        point_stamps: list[NDArray[np.int64]] = []
        for c, values, stamps in members:
            pending = state.pending[c]
            carried = len(pending)
            data = np.concatenate((np.array(pending, np.float64), values)) if carried else values
            count = len(data) // k
            used = count * k
            state.pending[c] = data[used:].tolist()
            complete.append(data[:used])
            counts.append(count)
            # each subgroup's last value is a new one (fewer than k values are carried)
            point_stamps.append(stamps[k - 1 - carried :: k][:count])
        data = np.concatenate(complete) if len(complete) > 1 else complete[0]
        used = len(data)
        # column-wise over the k members: faster than reducing rows of length k, and the sum
        # is taken in the members' order, as a plain sum() would
        total = data[0:used:k].copy()
        high = total.copy()
        low = total.copy()
        for member in range(1, k):
            column = data[member:used:k]
            total += column
            np.maximum(high, column, out=high)
            np.minimum(low, column, out=low)
        means = total / k
        ranges = high - low
        out: _Plotted = {}
        first = 0
        for (c, _, _), count, stamps in zip(members, counts, point_stamps, strict=True):
            out[c] = (means[first : first + count], stamps, ranges[first : first + count])
            first += count
        return out

    def _baseline(
        self,
        state: ChartState,
        c: int,
        points: NDArray[np.float64],
        ranges: NDArray[np.float64],
    ) -> NDArray[np.bool_]:
        """Collect baseline points; returns which of `points` are checked against limits."""
        if not np.isnan(state.center[c]):
            return np.ones(len(points), bool)
        spec = self.specs[c]
        need = spec.baseline - len(state.baseline[c])
        take = min(need, len(points))
        state.baseline[c].extend(points[:take].tolist())
        if spec.subgroup > 1:
            state.baseline_ranges[c].extend(ranges[:take].tolist())
        evaluated = np.zeros(len(points), bool)
        if len(state.baseline[c]) >= spec.baseline:
            # math.fsum: correctly rounded, so the limits do not depend on summation order
            base: list[float] = state.baseline[c]
            if spec.subgroup == 1:
                moving = np.abs(np.diff(np.asarray(base, np.float64))).tolist()
                sigma_within = math.fsum(moving) / len(moving) / D2[2]
            else:
                spreads = state.baseline_ranges[c]
                sigma_within = math.fsum(spreads) / len(spreads) / D2[spec.subgroup]
            state.center[c] = math.fsum(base) / len(base)
            state.sigma[c] = sigma_within / math.sqrt(spec.subgroup)
            state.baseline[c] = []
            state.baseline_ranges[c] = []
            evaluated[take:] = True
        return evaluated

    def limits(self, state: ChartState, c: int) -> tuple[float, float, float] | None:
        """(cl, ucl, lcl) of a chart, or None while its baseline is being collected."""
        center, sigma = float(state.center[c]), float(state.sigma[c])
        if math.isnan(center) or math.isnan(sigma):
            return None
        return center, center + 3 * sigma, center - 3 * sigma
