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


def _all(condition: NDArray[np.bool_], width: int) -> NDArray[np.bool_]:
    """Whether all of `width` consecutive values are true, per window (n - width + 1 of them).

    Doubling: AND the array with itself shifted by 1, 2, 4, ... then once more for the rest;
    byte-wise operations that stay fast on a million points.
    """
    out, span = condition, 1
    while span * 2 <= width:
        out = out[:-span] & out[span:]
        span *= 2
    if span < width:
        out = out[: len(out) - (width - span)] & out[width - span :]
    return out


def _count(condition: NDArray[np.bool_], width: int) -> NDArray[np.uint8]:
    """How many of `width` consecutive values are true, per window (width <= 255)."""
    n = len(condition) - width + 1
    codes = condition.view(np.uint8)
    out = codes[:n].copy()
    for k in range(1, width):
        out += codes[k : k + n]
    return out


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
    n = len(points)
    bits = np.zeros(n, np.uint8)
    if n == 0:
        return bits
    dev = points - np.asarray(center, np.float64)
    neg = -dev  # exact: neg > x is dev < -x
    mag = np.abs(dev)  # exact: mag > x is dev > x or dev < -x
    s = np.asarray(sigma, np.float64)
    s2 = 2 * s
    above, below = dev > 0, dev < 0
    step = points[1:] - points[:-1]
    # rising[j] / falling[j]: point j + 1 is above / below point j
    rising, falling = step > 0, step < 0
    alternating = (rising[1:] & falling[:-1]) | (falling[1:] & rising[:-1])
    a2, b2 = dev > s2, neg > s2
    a1, b1 = dev > s, neg > s
    beyond1 = mag > s

    def put(rule: int, width: int, window: NDArray[np.bool_]) -> None:
        target = bits[width - 1 :]
        target |= window.view(np.uint8) << (rule - 1)

    put(1, 1, mag > 3 * s)
    if n >= 9:
        put(2, 9, _all(above, 9) | _all(below, 9))
    if n >= 6:
        put(3, 6, _all(rising, 5) | _all(falling, 5))
    if n >= 14:
        put(4, 14, _all(alternating, 12))
    if n >= 3:
        put(5, 3, (_count(a2, 3) >= 2) | (_count(b2, 3) >= 2))
    if n >= 5:
        put(6, 5, (_count(a1, 5) >= 4) | (_count(b1, 5) >= 4))
    if n >= 15:
        put(7, 15, _all(mag < s, 15))
    if n >= 8:
        put(8, 8, _all(beyond1, 8) & ~_all(a1, 8) & ~_all(b1, 8))
    _clear_incomplete(bits, starts)
    return bits


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
