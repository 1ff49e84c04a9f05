"""The request planner: valid reads, and as few as possible (checked against references)."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from drivers.modbus.config import ModbusTable, ModbusTag
from drivers.modbus.plan import (
    Element,
    PlannedRead,
    element_interval,
    minimum_reads,
    plan_reads,
    split_read,
)

_TYPES = {1: "uint16", 2: "float32", 3: "string", 4: "float64"}


def tag(name: str, address: int, size: int = 1, table: str = "holding") -> ModbusTag:
    fields: dict[str, object] = {"name": name, "address": address, "table": table}
    if table in ("coil", "discrete"):
        fields["type"] = "bool"
    else:
        fields["type"] = _TYPES[size]
        if size == 3:
            fields["length"] = 6
    return ModbusTag.model_validate(fields)


def elements_of(specs: Sequence[tuple[int, int]], table: str = "holding") -> list[Element]:
    return [(i, tag(f"t{i}", a, s, table), 0) for i, (a, s) in enumerate(specs)]


def feasible(
    start: int,
    end: int,
    served: list[tuple[int, int]],
    limit: int,
    gap: int,
    forbidden: Sequence[tuple[int, int]],
) -> bool:
    """The cost model, written out: size, bridged runs of unused registers, forbidden ranges."""
    if end - start > limit:
        return False
    if len(served) > 1 and any(start < last and first < end for first, last in forbidden):
        return False
    covered = [False] * (end - start)
    for first, last in served:
        for address in range(first, last):
            covered[address - start] = True
    run = 0
    for flag in covered:
        run = 0 if flag else run + 1
        if run > gap:
            return False
    return True


def brute_force(
    intervals: list[tuple[int, int]], limit: int, gap: int, forbidden: Sequence[tuple[int, int]]
) -> int:
    """Minimum set cover over every feasible read ``[start, end)`` (breadth-first on masks);
    a read serves every element inside its range."""
    n = len(intervals)
    candidates = set()
    for start in {a for a, _ in intervals}:
        for end in {b for _, b in intervals}:
            if end <= start:
                continue
            served = [i for i, (a, b) in enumerate(intervals) if start <= a and b <= end]
            if served and feasible(
                start, end, [intervals[i] for i in served], limit, gap, forbidden
            ):
                candidates.add(sum(1 << i for i in served))
    # a read of one element is always allowed (it is how a tag on a forbidden range is read)
    candidates |= {1 << i for i, (a, b) in enumerate(intervals) if b - a <= limit}
    full = (1 << n) - 1
    frontier, seen, depth = {0}, {0}, 0
    while full not in frontier:
        depth += 1
        frontier = {mask | c for mask in frontier for c in candidates} - seen
        assert frontier, "some element cannot be read at all"
        seen |= frontier
    return depth


def check_valid(
    reads: list[PlannedRead],
    elements: list[Element],
    limit: int,
    gap: int,
    forbidden: Sequence[tuple[int, int]] = (),
) -> None:
    served = sorted(e.tag_index for r in reads for e in r.elements)
    assert served == sorted(index for index, _, _ in elements), "each element exactly once"
    for read in reads:
        intervals = []
        for ref in read.elements:
            first = read.start + ref.offset
            assert (first, first + ref.tag.registers_per_element) == element_interval(ref.tag, 0)
            intervals.append((first, first + ref.tag.registers_per_element))
        assert min(a for a, _ in intervals) == read.start
        assert max(b for _, b in intervals) == read.end
        assert feasible(read.start, read.end, intervals, limit, gap, forbidden)


small_sets = st.lists(
    st.tuples(st.integers(0, 48), st.sampled_from([1, 1, 2, 3, 4])), min_size=1, max_size=7
)
forbidden_ranges = st.lists(
    st.tuples(st.integers(0, 55), st.integers(0, 4)).map(lambda r: (r[0], r[0] + r[1])),
    max_size=2,
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=small_sets,
    limit=st.integers(1, 24),
    gap=st.integers(0, 12),
    forbidden=forbidden_ranges,
)
def test_greedy_plan_is_minimal_against_exhaustive_search(
    specs: list[tuple[int, int]], limit: int, gap: int, forbidden: list[tuple[int, int]]
) -> None:
    assume(all(size <= limit for _, size in specs))
    elements = elements_of(specs)
    reads = plan_reads(
        elements, max_registers=limit, max_gap=gap, forbidden={ModbusTable.HOLDING: forbidden}
    )
    check_valid(reads, elements, limit, gap, forbidden)
    intervals = [(a, a + s) for a, s in specs]
    assert len(reads) == brute_force(intervals, limit, gap, forbidden)


disjoint_sets = st.lists(
    st.tuples(st.integers(0, 30), st.sampled_from([1, 1, 1, 2, 2, 4])), min_size=1, max_size=80
)


@settings(max_examples=200, deadline=None)
@given(
    specs=disjoint_sets,
    limit=st.integers(4, 125),
    gap=st.integers(0, 40),
    forbidden=st.lists(
        st.tuples(st.integers(0, 1500), st.integers(0, 6)).map(lambda r: (r[0], r[0] + r[1])),
        max_size=3,
    ),
)
def test_greedy_plan_matches_dynamic_programming_on_large_sets(
    specs: list[tuple[int, int]], limit: int, gap: int, forbidden: list[tuple[int, int]]
) -> None:
    address, laid_out = 0, []
    for skip, size in specs:  # tags one after another, with random gaps between them
        address += skip
        laid_out.append((address, size))
        address += size
    elements = elements_of(laid_out)
    banned = {ModbusTable.HOLDING: forbidden}
    reads = plan_reads(elements, max_registers=limit, max_gap=gap, forbidden=banned)
    check_valid(reads, elements, limit, gap, forbidden)
    assert len(reads) == minimum_reads(elements, max_registers=limit, max_gap=gap, forbidden=banned)


@settings(max_examples=100, deadline=None)
@given(
    addresses=st.lists(st.integers(0, 5000), min_size=1, max_size=60, unique=True),
    limit=st.integers(1, 2000),
    gap=st.integers(0, 300),
)
def test_coils_plan_with_their_own_limits(addresses: list[int], limit: int, gap: int) -> None:
    elements = [(i, tag(f"c{i}", a, table="coil"), 0) for i, a in enumerate(addresses)]
    reads = plan_reads(elements, max_bits=limit, max_bit_gap=gap, max_gap=0)
    check_valid(reads, elements, limit, gap)
    assert all(r.table is ModbusTable.COIL for r in reads)
    assert len(reads) == minimum_reads(elements, max_bits=limit, max_bit_gap=gap)


def test_tables_are_planned_apart_and_bits_of_one_register_share_a_read() -> None:
    bits = ModbusTag.model_validate(
        {"name": "flags", "address": 10, "type": "bool", "bit": 14, "count": 4}
    )
    elements: list[Element] = [(i, bits, i) for i in range(4)]
    elements += [
        (10, tag("h", 9), 0),
        (11, tag("i", 9, table="input"), 0),
        (12, tag("c", 9, table="coil"), 0),
    ]
    reads = plan_reads(elements, max_gap=0)
    described = [r.describe() for r in reads]
    assert described == [
        "holding 9..11 (3 registers, 0 unused)",
        "input 9..9 (1 registers, 0 unused)",
        "coil 9..9 (1 bits, 0 unused)",
    ]
    assert sorted((r.offset, r.bit) for r in reads[0].elements if r.bit is not None) == [
        (1, 14),
        (1, 15),
        (2, 0),
        (2, 1),
    ]


def test_gap_cost_and_device_limit() -> None:
    elements = elements_of([(0, 1), (1, 1), (5, 1), (40, 1), (41, 1)])
    assert [(r.start, r.count) for r in plan_reads(elements, max_gap=4)] == [(0, 6), (40, 2)]
    assert [(r.start, r.count) for r in plan_reads(elements, max_gap=2)] == [
        (0, 2),
        (5, 1),
        (40, 2),
    ]
    assert [(r.start, r.count) for r in plan_reads(elements, max_gap=50)] == [(0, 42)]
    assert [(r.start, r.wasted) for r in plan_reads(elements, max_gap=50, max_registers=10)] == [
        (0, 3),
        (40, 0),
    ]


def test_forbidden_range_is_never_bridged_but_a_tag_on_it_is_still_read_alone() -> None:
    elements = elements_of([(0, 1), (10, 2), (20, 1)])
    plan = plan_reads(elements, max_gap=20, forbidden={ModbusTable.HOLDING: [(11, 13)]})
    assert [(r.start, r.count) for r in plan] == [(0, 1), (10, 2), (20, 1)]
    cut = plan_reads(elements, max_gap=20, forbidden={ModbusTable.HOLDING: [(10, 10)]})
    assert [(r.start, r.count) for r in cut] == [(0, 1), (10, 11)]


def test_split_read_cuts_between_tags_near_the_middle() -> None:
    elements = elements_of([(0, 2), (2, 1), (5, 4), (12, 1)])
    (read,) = plan_reads(elements, max_gap=10)
    halves = split_read(read)
    assert halves is not None
    left, right = halves
    assert (left.start, left.end, right.start, right.end) == (0, 3, 5, 13)
    assert len(left.elements) + len(right.elements) == 4
    (single,) = plan_reads(elements_of([(7, 4)]))
    assert split_read(single) is None


def test_element_larger_than_the_limit_is_an_error() -> None:
    with pytest.raises(ValueError, match="exceed the read limit 2"):
        plan_reads(elements_of([(0, 4)]), max_registers=2)
