"""The eight Nelson rules, vectorised: every rule on every point with a few numpy passes.

For plotted points p with centre line cl and chart sigma s, rule r fires at index i when the
window of the last w(r) points ending at i satisfies it (Nelson, Journal of Quality Technology,
October 1984; the exact reading used here, ties included, is in ``docs/mes.md``):

1. |p_i - cl| > 3s
2. the 9 points all > cl, or all < cl
3. the 6 points strictly increasing, or strictly decreasing
4. the 14 points' 13 successive differences all non-zero and alternating in sign
5. of the 3 points, at least 2 > cl + 2s, or at least 2 < cl - 2s
6. of the 5 points, at least 4 > cl + s, or at least 4 < cl - s
7. the 15 points all have |p - cl| < s
8. the 8 points all have |p - cl| > s, at least one above cl and one below

Windows are evaluated with shifted boolean arrays (an AND doubling for "all of w", a byte sum for
"k of w"), a fixed number of byte-wise array passes per rule. Points of several charts can
be evaluated together: `starts` gives where each chart's run of points begins, and a window that
would reach into another chart's points is not complete.
"""

from __future__ import annotations

__all__ = [
    "HISTORY",
    "RULES",
    "WINDOWS",
    "nelson_bits",
    "nelson_flags",
    "unpack",
    "violation_indices",
]

import numpy as np
from numpy.typing import ArrayLike, NDArray

RULES: dict[int, str] = {
    1: "one point more than 3 sigma from the centre line",
    2: "nine points in a row on the same side of the centre line",
    3: "six points in a row steadily increasing or decreasing",
    4: "fourteen points in a row alternating up and down",
    5: "two of three points more than 2 sigma from the centre line on the same side",
    6: "four of five points more than 1 sigma from the centre line on the same side",
    7: "fifteen points in a row within 1 sigma of the centre line",
    8: "eight points in a row more than 1 sigma from the centre line, on both sides",
}
WINDOWS: dict[int, int] = {1: 1, 2: 9, 3: 6, 4: 14, 5: 3, 6: 5, 7: 15, 8: 8}
"""Points in each rule's window."""
HISTORY = max(WINDOWS.values()) - 1
"""Earlier points a chart must keep so that every window of a new point is complete (14)."""


def _all(
    condition: NDArray[np.bool_], width: int, out: NDArray[np.bool_] | None = None
) -> NDArray[np.bool_]:
    """Whether all of `width` (>= 2) consecutive values are true, per window (n - width + 1).

    Doubling: AND the array with itself shifted by 1, 2, 4, ... then once more for the rest;
    byte-wise operations that stay fast on a million points. The last one writes to `out`.
    """
    shifts = []
    span = 1
    while span * 2 <= width:
        shifts.append(span)
        span *= 2
    if span < width:
        shifts.append(width - span)
    result = condition
    for shift in shifts[:-1]:
        result = result[: len(result) - shift] & result[shift:]
    last = shifts[-1]
    return np.bitwise_and(result[: len(result) - last], result[last:], out=out)


def _window_sum(codes: NDArray[np.uint8], width: int) -> NDArray[np.uint8]:
    """Sums of `width` consecutive bytes (3 or 5), from sums of pairs."""
    pairs = codes[:-1] + codes[1:]
    if width == 3:
        return pairs[:-1] + codes[2:]
    if width == 5:
        fours = pairs[:-2] + pairs[2:]
        return fours[:-1] + codes[4:]
    raise ValueError(f"no window sum of width {width}")


def _flags(points: NDArray[np.float64], center: ArrayLike, sigma: ArrayLike) -> NDArray[np.bool_]:
    """Every rule on every point as an (8, n) boolean array, before incomplete windows are
    cleared. Each rule's last operation writes its row (from the window's last point on)."""
    n = len(points)
    flags = np.zeros((8, n), bool)
    dev = points - np.asarray(center, np.float64)
    neg = -dev  # exact: neg > x is dev < -x
    mag = np.abs(dev)  # exact: mag > x is dev > x or dev < -x
    s = np.asarray(sigma, np.float64)
    s2 = 2 * s
    np.greater(mag, 3 * s, out=flags[0])
    a1, b1 = dev > s, neg > s
    if n >= 3:
        a2, b2 = (dev > s2).view(np.uint8), (neg > s2).view(np.uint8)
        np.bitwise_or(_window_sum(a2, 3) >= 2, _window_sum(b2, 3) >= 2, out=flags[4, 2:])
    if n >= 5:
        above4 = _window_sum(a1.view(np.uint8), 5) >= 4
        np.bitwise_or(above4, _window_sum(b1.view(np.uint8), 5) >= 4, out=flags[5, 4:])
    if n >= 6:
        step = points[1:] - points[:-1]
        # rising[j] / falling[j]: point j + 1 is above / below point j
        rising, falling = step > 0, step < 0
        np.bitwise_or(_all(rising, 5), _all(falling, 5), out=flags[2, 5:])
        if n >= 14:
            alternating = (rising[1:] & falling[:-1]) | (falling[1:] & rising[:-1])
            _all(alternating, 12, out=flags[3, 13:])
    if n >= 8:
        above8, below8 = _all(dev > 0, 8), _all(dev < 0, 8)
        if n >= 9:  # nine in a row: two overlapping runs of eight
            above9, below9 = above8[:-1] & above8[1:], below8[:-1] & below8[1:]
            np.bitwise_or(above9, below9, out=flags[1, 8:])
        # beyond 1 sigma all eight, not all on one side (x > y is x and not y for booleans)
        np.greater(_all(a1 | b1, 8), above8 | below8, out=flags[7, 7:])
    if n >= 15:
        _all(mag < s, 15, out=flags[6, 14:])
    return flags


def nelson_bits(
    points: NDArray[np.float64],
    center: ArrayLike,
    sigma: ArrayLike,
    starts: ArrayLike | None = None,
) -> NDArray[np.uint8]:
    """Which rules fire at which point, one byte per point: bit r-1 is set when rule r fires.

    `center` and `sigma` are scalars or one value per point. `points` may hold the runs of
    several charts one after another: `starts` (default ``[0]``) gives the index where each run
    begins, in increasing order; a window reaching before the start of its run is not complete.
    An empty `starts` says that every window is complete (the points that follow only the
    caller's history of at least ``HISTORY`` points are the ones it keeps).
    """
    if len(points) == 0:
        return np.zeros(0, np.uint8)
    bits = _pack(_flags(points, center, sigma))
    _clear_incomplete(bits, starts)
    return bits


def _pack(flags: NDArray[np.bool_]) -> NDArray[np.uint8]:
    """An (8, n) boolean array as n bytes, row r in bit r: pairs of rows, then pairs of pairs
    (six byte-wise passes; much faster than ``np.packbits`` along the short axis)."""
    rows = flags.view(np.uint8)
    pairs = rows[0::2] | (rows[1::2] << 1)
    quads = pairs[0::2] | (pairs[1::2] << 2)
    packed: NDArray[np.uint8] = quads[0] | (quads[1] << 4)
    return packed


def _clear_incomplete(bits: NDArray[np.uint8], starts: ArrayLike | None) -> None:
    """Clear the rules whose window is not complete in the first points of each run."""
    firsts = [0] if starts is None else np.asarray(starts).tolist()
    if not firsts:
        return
    ends = [*firsts[1:], len(bits)]
    for first, end in zip(firsts, ends, strict=True):  # a few slices per chart, not per point
        width = min(HISTORY, end - first)
        bits[first : first + width] &= _COMPLETE[:width]


_COMPLETE = np.array(
    [sum(1 << (r - 1) for r, w in WINDOWS.items() if w - 1 <= pos) for pos in range(HISTORY)],
    np.uint8,
)
"""Rules whose window is complete at each position 0..13 of a chart's run."""


def unpack(bits: NDArray[np.uint8]) -> NDArray[np.bool_]:
    """Bytes of :func:`nelson_bits` as an (8, n) boolean array, row r-1 for rule r."""
    shifts = np.arange(8, dtype=np.uint8)[:, None]
    unpacked: NDArray[np.bool_] = ((bits[None, :] >> shifts) & 1).astype(bool)
    return unpacked


def nelson_flags(
    points: NDArray[np.float64],
    center: ArrayLike,
    sigma: ArrayLike,
    starts: ArrayLike | None = None,
) -> NDArray[np.bool_]:
    """Which rules fire at which point: a (8, n) boolean array, row r-1 for rule r."""
    return unpack(nelson_bits(points, center, sigma, starts))


def violation_indices(flags: NDArray[np.bool_]) -> dict[str, list[int]]:
    """``{"1": [indices...], ..., "8": [...]}`` from :func:`nelson_flags`' result."""
    return {str(rule): np.flatnonzero(flags[rule - 1]).tolist() for rule in range(1, 9)}
