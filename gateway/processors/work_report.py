"""Work reports: a machine's part counters and order/lot tags become completion documents.

A *segment* is a stretch of production with one identity (order, operation, material, lot). The
configured triggers close it and emit a completion with the good, scrap and rework parts counted
in it: an order change (the completion is *final*), a lot change, a full container (exactly
`container_quantity` good parts; the rest carries over), a shift end (from the shift calendar,
at the shift's end time), or a request (:meth:`request_completion`).

Within a batch, samples are taken in time order; at equal timestamps counter samples come before
order/lot changes, because a machine finishes its old order before it switches. A counter sample
taken exactly at a shift's end belongs to that shift. Time is the samples' own timestamps (the
latest one seen in any batch), never the wall clock, so a replay of recorded data gives the same
documents. A segment with an empty order number collects parts made without an order: they are
counted in a warning metric and not reported to ERP.

The hot path is vectorised: polls of one device are read where they lie (strided views), a
counter's parts per segment are a telescoping sum of its values (per-sample deltas only after a
reset or rollover), identity tags are compared as arrays and only their changes are looked at one
by one.
"""

from __future__ import annotations

__all__ = ["WorkReportProcessor"]

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.config.processors import Trigger, WorkReportConfig
from gateway.config.shifts import ShiftCalendarConfig
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.changes import change_positions
from gateway.processors.counters import counter_segments, default_rollover
from gateway.processors.grouping import (
    MOST_TAGS_PER_POLL,
    repeating_cycle,
    sorted_groups,
    time_order,
)
from gateway.processors.relevance import Relevance
from gateway.processors.shifts import ShiftCalendar
from gateway.processors.timefmt import iso_utc
from gateway.quality import is_good
from gateway.tags import TagTable

COUNTERS = ("good", "scrap", "rework")
IDENTITY = ("order", "operation", "material", "lot")
_IDENTITY_ROLE = len(COUNTERS)
_ROLE_COUNT = len(COUNTERS) + len(IDENTITY)
_ORDER, _LOT = IDENTITY.index("order"), IDENTITY.index("lot")


@dataclass
class _State:
    identity: list[str] = field(default_factory=lambda: ["", "", "", ""])
    known: bool = False
    """Whether the identity tags have been seen (after start-up or restore)."""
    start_ns: int = 0
    counts: list[int] = field(default_factory=lambda: [0, 0, 0])
    last_raw: list[int | None] = field(default_factory=lambda: [None, None, None])
    sequence: int = 0
    """Completions emitted by this machine so far (part of each idempotency key)."""
    order_documents: int = 0
    """Completions emitted for the current order."""
    containers: int = 0
    unassigned: int = 0
    saved_ns: int = 0
    clock_ns: int = 0
    """The latest sample timestamp seen: shift ends up to here are done."""


@dataclass(frozen=True, slots=True)
class _Event:
    """Something that happens between two rows of the sorted batch."""

    position: int
    """Rows before this index come before the event."""
    stamp: int
    identity: list[str] | None
    """The identity after an identity change; None for a shift end."""
    closing: frozenset[int]
    """Identity fields whose change closes the segment."""


class WorkReportProcessor:
    """One machine's work reports. See the module docstring for the rules."""

    def __init__(
        self,
        config: WorkReportConfig,
        table: TagTable,
        gateway_id: str,
        shifts: ShiftCalendarConfig | ShiftCalendar | None = None,
    ) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self._work_center = config.work_center or config.machine
        self._calendar = shifts if isinstance(shifts, ShiftCalendar) else ShiftCalendar(shifts)
        self._role = np.full(len(table), -1, np.int8)
        self._rollover: list[int | None] = [None, None, None]
        for role, field_name in enumerate(COUNTERS):
            counter = getattr(config, field_name)
            if counter is None:
                continue
            index = table.index(counter.tag)
            self._role[index] = role
            self._rollover[role] = counter.rollover or default_rollover(table[index].type)
        self._identity_numeric = [False] * len(IDENTITY)
        self._identity_fields = [i for i, f in enumerate(IDENTITY) if getattr(config, f)]
        self._counter_roles = [i for i, f in enumerate(COUNTERS) if getattr(config, f)]
        self._roles_used = self._counter_roles + [_IDENTITY_ROLE + i for i in self._identity_fields]
        for offset, field_name in enumerate(IDENTITY):
            tag_id = getattr(config, field_name)
            if tag_id is not None:
                index = table.index(tag_id)
                self._role[index] = _IDENTITY_ROLE + offset
                self._identity_numeric[offset] = table[index].type.is_numeric
        self._closing = {_ORDER} if Trigger.ORDER_CHANGE in config.triggers else set()
        if Trigger.LOT_CHANGE in config.triggers:
            self._closing.add(_LOT)
        self._container = (
            config.container_quantity if Trigger.CONTAINER_FULL in config.triggers else None
        )
        self._relevance = Relevance(table, self._role >= 0)
        self._shift_end = Trigger.SHIFT_END in config.triggers
        self._next_end_ns = 0
        """Cache: the first shift end after the committed clock (0 = not computed)."""
        self._committed = _State()
        self._pending: _State | None = None
        self._requested = False
        self._noticed: dict[str, int] = {}
        self._now_ns = 0

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        shift_due = False
        if self._shift_end and len(batch) and self._committed.known:
            due_ns = self._next_shift_end(self._committed.clock_ns)
            shift_due = int(batch.timestamps.max()) >= due_ns
        if not (shift_due or self._requested or self._relevance.concerns(batch)):
            self._pending = None
            return []
        arranged = _arrange(batch, self._role, self._roles_used)
        state = _copy(self._committed)
        self._pending = state
        documents: list[Document] = []
        now = self._now_ns = batch.received_ns
        if arranged.first_ns is not None or shift_due:
            documents += self._apply(state, batch, arranged)
        if self._requested:
            self._requested = False
            documents += self._close(state, max(now, state.clock_ns), "request", final=False)
        return documents

    @property
    def needs_checkpoint(self) -> bool:
        state = self._pending
        if state is None:
            return False
        if self._noticed.get("checkpoint_now"):
            return True
        interval_ns = int(self._config.checkpoint_interval * 1e9)
        return self._now_ns - state.saved_ns >= interval_ns

    def snapshot(self) -> Mapping[str, Any]:
        state = self._pending or self._committed
        state.saved_ns = self._now_ns
        return asdict(state)

    def commit(self) -> None:
        if self._pending is not None:
            self._committed = self._pending
            if self._committed.clock_ns >= self._next_end_ns:
                self._next_end_ns = 0
            self._pending = None
        self._noticed.pop("checkpoint_now", None)

    def rollback(self) -> None:
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        self._committed = _State(**fields)
        self._pending = None
        self._next_end_ns = 0

    # --- API ---

    def request_completion(self) -> None:
        """Close the current segment with the next batch (the "on request" trigger)."""
        self._requested = True

    @property
    def warnings(self) -> dict[str, int]:
        """Counts of noticed conditions: counter resets, rollovers, parts without order."""
        return {k: v for k, v in self._noticed.items() if k != "checkpoint_now"}

    # --- the work ---

    def _apply(self, state: _State, batch: SampleBatch, arranged: _Rows) -> list[Document]:
        stamps, first_ns, last_ns = arranged.stamps, arranged.first_ns, arranged.last_ns
        known = state.known
        start_clock = state.clock_ns
        if last_ns is not None:
            state.clock_ns = max(state.clock_ns, last_ns)
        if self._shift_end:
            state.clock_ns = max(state.clock_ns, int(batch.timestamps.max()))
        # 1. events: identity changes and shift ends, in row order
        events, identity = self._identity_events(state, batch, arranged, known)
        if self._shift_end and known and state.clock_ns >= self._next_shift_end(start_clock):
            for shift in self._calendar.ended_between(start_clock, state.clock_ns):
                position = int(np.searchsorted(stamps, shift.end_ns, side="right"))
                events.append(_Event(position, shift.end_ns, None, frozenset()))
            events.sort(key=lambda e: (e.position, e.stamp))
        # 2. parts per segment between events: a row at an event's position belongs to the
        # segment after it
        positions = [e.position for e in events]
        segment_parts = [[0] * len(COUNTERS) for _ in range(len(events) + 1)]
        for role in self._counter_roles:
            mine = arranged.positions[role]
            if len(mine) == 0:
                continue
            result = counter_segments(
                batch.values[arranged.columns[role]],
                state.last_raw[role],
                self._rollover[role],
                np.searchsorted(mine, positions, side="left").tolist() if events else (),
            )
            state.last_raw[role] = result.last
            if result.resets or result.rollovers:
                self._notice("counter_reset", result.resets)
                self._notice("counter_rollover", result.rollovers)
                self._noticed["checkpoint_now"] = 1
            for parts, counted in zip(segment_parts, result.parts, strict=True):
                parts[role] = counted
        # 3. walk the segments
        if not state.known:
            if first_ns is None:
                return []
            state.known = True
            state.identity = identity
            state.start_ns = first_ns
        documents: list[Document] = []
        end_ns = last_ns if last_ns is not None else state.clock_ns
        for index, parts in enumerate(segment_parts):
            for role in range(len(COUNTERS)):
                state.counts[role] += parts[role]
            if index == len(events):
                documents += self._fill_containers(state, end_ns)
                break
            event = events[index]
            documents += self._fill_containers(state, event.stamp)
            if event.identity is None:
                documents += self._close(state, event.stamp, "shift_end", final=False)
                state.start_ns = event.stamp
                continue
            if event.closing:
                final = _ORDER in event.closing
                trigger = "order_change" if final else "lot_change"
                documents += self._close(state, event.stamp, trigger, final=final)
                state.start_ns = event.stamp
                if _LOT in event.closing or final:
                    state.containers = 0
                if final:
                    state.order_documents = 0
            state.identity = event.identity
        return documents

    def _next_shift_end(self, clock_ns: int) -> int:
        """The first shift end after the committed clock (cached until a commit passes it)."""
        if not self._next_end_ns:
            self._next_end_ns = self._calendar.next_end_after(clock_ns)
        return self._next_end_ns

    def _identity_events(
        self, state: _State, batch: SampleBatch, arranged: _Rows, known: bool
    ) -> tuple[list[_Event], list[str]]:
        """Identity changes (vectorised compare; only the changes are looked at one by one)."""
        identity = list(state.identity)
        rows, stamps = arranged.rows, arranged.stamps
        candidates: list[tuple[int, int]] = []  # (position, field)
        for offset in self._identity_fields:
            role = _IDENTITY_ROLE + offset
            mine = arranged.positions[role]
            if len(mine) == 0:
                continue
            where = arranged.columns[role]
            codes = batch.quality[where]
            if codes.any():
                mine = mine[is_good(codes)]
                if len(mine) == 0:
                    continue
                where = mine if rows is None else rows[mine]
            objects = None if self._identity_numeric[offset] else batch.objects
            keys: NDArray[Any] = batch.values[where] if objects is None else objects[where]
            positions = change_positions(keys)
            candidates.append((int(mine[0]), offset))
            if len(positions):
                candidates += [(int(mine[p + 1]), offset) for p in positions.tolist()]
        candidates.sort()
        if not known:
            # the first batch ever: each field's first value is where we start (no event)
            first: dict[int, int] = {}
            for position, offset in candidates:
                first.setdefault(offset, position)
            for offset, position in first.items():
                value = batch.value_of(int(position if rows is None else rows[position]))
                identity[offset] = "" if value is None else _text(value)
            start = list(identity)
            candidates = [(p, o) for p, o in candidates if first[o] != p]
        events: list[_Event] = []
        for position, offset in candidates:
            value = batch.value_of(int(position if rows is None else rows[position]))
            text = "" if value is None else _text(value)
            if text == identity[offset]:
                continue
            identity[offset] = text
            closing = frozenset({offset} & self._closing)
            events.append(_Event(position, int(stamps[position]), list(identity), closing))
        return events, (identity if known else start)

    def _fill_containers(self, state: _State, stamp: int) -> list[Document]:
        if self._container is None:
            return []
        documents = []
        while state.counts[0] >= self._container:
            rest = state.counts[0] - self._container
            state.counts[0] = self._container
            state.containers += 1
            documents += self._close(state, stamp, "container_full", final=False)
            state.counts[0] = rest
            state.start_ns = stamp
        return documents

    def _close(self, state: _State, end_ns: int, trigger: str, *, final: bool) -> list[Document]:
        good, scrap, rework = state.counts
        order, operation, material, lot = state.identity
        state.counts = [0, 0, 0]
        if good == scrap == rework == 0 and not (final and state.order_documents):
            # nothing to report; a final with 0 parts only flags an order reported before
            return []
        if not order:
            self._notice("parts_without_order", good + scrap + rework)
            state.unassigned += good + scrap + rework
            return []
        state.sequence += 1
        state.order_documents += 1
        key = idempotency_key(
            self._gateway, self._config.machine, order, operation, lot, state.sequence
        )
        shift = self._calendar.at(end_ns - 1 if trigger == "shift_end" else end_ns)
        body: dict[str, Any] = {
            "gateway": self._gateway,
            "machine": self._config.machine,
            "work_center": self._work_center,
            "order": order,
            "operation": operation,
            "material": material,
            "lot": lot,
            "good": good,
            "scrap": scrap,
            "rework": rework,
            "unit": self._config.unit,
            "start": iso_utc(state.start_ns or end_ns),
            "end": iso_utc(end_ns),
            "sequence": state.sequence,
            "final": final,
            "trigger": trigger,
            "shift": shift.id if shift is not None else "",
            "idempotency_key": key,
        }
        if trigger == "container_full":
            body["handling_unit"] = f"{lot or order}-{state.containers:03d}"
        return [
            Document(DocumentKind.COMPLETION, key, self._config.machine, body, ordering_key=order)
        ]

    def _notice(self, kind: str, count: int) -> None:
        if count:
            self._noticed[kind] = self._noticed.get(kind, 0) + count


@dataclass(frozen=True, slots=True)
class _Rows:
    """A work report's rows of one batch, in the order in which they are applied."""

    rows: NDArray[np.intp] | None
    """The batch row at each position; None: positions are batch rows (the batch is in order)."""
    stamps: NDArray[np.int64]
    """The timestamp at each position."""
    positions: dict[int, NDArray[np.intp]]
    """Per role: its positions, ascending."""
    columns: dict[int, slice | NDArray[np.intp]]
    """Per role: its batch rows (a slice when evenly spaced: a view, no copy)."""
    first_ns: int | None
    """The timestamp of the first and the last of the work report's rows (None: no rows)."""
    last_ns: int | None


def _arrange(batch: SampleBatch, role_of_tag: NDArray[np.int8], used: list[int]) -> _Rows:
    """A batch's rows of the work report's roles, in time order; at one timestamp, counter
    samples before identity samples."""
    return _arrange_polls(batch, role_of_tag, used) or _arrange_any(batch, role_of_tag, used)


def _arrange_polls(
    batch: SampleBatch, role_of_tag: NDArray[np.int8], used: list[int]
) -> _Rows | None:
    """The usual batch, polls of one device in time order (each poll the same tags in the same
    order), as it is, without moving a row; None for any other batch."""
    cycle = repeating_cycle(batch.tags, MOST_TAGS_PER_POLL)
    if not cycle:
        return None
    stamps = batch.timestamps
    if (stamps[1:] < stamps[:-1]).any():
        return None
    n, period = len(batch), len(cycle)
    ours = [(o, role) for o, role in enumerate(role_of_tag[cycle].tolist()) if role >= 0]
    if not ours:
        return None
    # an identity sample followed by a counter sample of the same timestamp must be swapped
    following = [*ours[1:], (ours[0][0] + period, ours[0][1])]
    for (offset, role), (next_offset, next_role) in zip(ours, following, strict=True):
        if role >= _IDENTITY_ROLE > next_role:
            before, after = stamps[offset::period], stamps[next_offset::period]
            if (before[: len(after)] == after).any():
                return None
    offsets = {role: o for o, role in ours}
    last_row = max(o + (n - 1 - o) // period * period for o, _ in ours)
    return _Rows(
        None,
        stamps,
        {r: np.arange(offsets[r], n, period) if r in offsets else _NO_ROWS for r in used},
        {r: slice(offsets[r], n, period) if r in offsets else _NO_ROWS for r in used},
        int(stamps[ours[0][0]]),
        int(stamps[last_row]),
    )


def _arrange_any(batch: SampleBatch, role_of_tag: NDArray[np.int8], used: list[int]) -> _Rows:
    roles = role_of_tag[batch.tags]
    rows = np.flatnonzero(roles >= 0)
    roles = roles[rows]
    stamps = batch.timestamps[rows]
    order = time_order(stamps, roles >= _IDENTITY_ROLE)
    if order is not None:
        rows, roles, stamps = rows[order], roles[order], stamps[order]
    by_role, bounds = sorted_groups(roles, _ROLE_COUNT)
    positions = {role: by_role[bounds[role] : bounds[role + 1]] for role in used}
    return _Rows(
        rows,
        stamps,
        positions,
        {role: _strided(rows[at]) for role, at in positions.items()},
        int(stamps[0]) if len(stamps) else None,
        int(stamps[-1]) if len(stamps) else None,
    )


_NO_ROWS: NDArray[np.intp] = np.empty(0, np.intp)


def _strided(at: NDArray[np.intp]) -> NDArray[np.intp] | slice:
    """`at` as a slice when its rows are evenly spaced (a tag polled in every row group): a
    strided view reads the column without gathering it (no copy, no reference counting)."""
    if len(at) > 2:
        step = int(at[1] - at[0])
        evenly = step > 0 and int(at[-1] - at[0]) == (len(at) - 1) * step
        if evenly and (at[1:] - at[:-1] == step).all():
            return slice(int(at[0]), int(at[-1]) + 1, step)
    return at


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _copy(state: _State) -> _State:
    """A copy to work on (the committed state stays as it is until commit)."""
    return _State(
        list(state.identity),
        state.known,
        state.start_ns,
        list(state.counts),
        list(state.last_raw),
        state.sequence,
        state.order_documents,
        state.containers,
        state.unassigned,
        state.saved_ns,
        state.clock_ns,
    )
