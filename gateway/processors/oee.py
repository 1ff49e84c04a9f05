"""OEE per shift and per order, and downtime events, from a machine's state tag and counters.

Every moment of a machine's time is in one category, from its state code (mapped through the
PackML table or the config) and, while it is stopped, its reason code:

=================  ============================================================================
running            producing; run time
minor_stop         blocked, starved, short stops; counted in run time (a performance loss)
unplanned_stop     down; an availability loss
planned_stop       planned (maintenance, no order planned); not planned production time
unknown            no good state value (device unreachable, gateway restarted); not counted
=================  ============================================================================

Over a window (one shift instance, or one order), with P the calendar's planned time (shift time
minus breaks) inside each stretch of a category:

* planned production time PPT = running time + P(minor stops) + P(unplanned stops)
  (running outside the calendar counts: the machine was producing)
* run time = running time + P(minor stops)
* availability = run time / PPT; performance = Σ(ideal cycle time × parts) / run time (capped
  at 1; more means the ideal cycle time is wrong, counted as a warning); quality = good / (good
  + scrap + rework); OEE = availability × performance × quality.

Each maximal stop with one state code becomes a ``downtime`` event (start, end, duration,
category, state, the last non-zero reason code seen during it) when it ends. A shift's ``oee``
document goes out at the shift's end, an order's when the order tag changes. Time is the samples'
own timestamps (the latest seen in any batch), so a replay gives the same documents.
"""

from __future__ import annotations

__all__ = ["PACKML_CATEGORIES", "OeeProcessor"]

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.config.processors import OeeConfig, StateCategory
from gateway.config.shifts import ShiftCalendarConfig
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.changes import change_positions
from gateway.processors.counters import counter_deltas, default_rollover
from gateway.processors.grouping import time_order
from gateway.processors.relevance import Relevance
from gateway.processors.shifts import ShiftCalendar
from gateway.processors.timefmt import iso_utc
from gateway.quality import is_good
from gateway.tags import TagTable

RUNNING = StateCategory.RUNNING.value
MINOR = StateCategory.MINOR_STOP.value
UNPLANNED = StateCategory.UNPLANNED_STOP.value
PLANNED = StateCategory.PLANNED_STOP.value
UNKNOWN = "unknown"
_STOPS = (MINOR, UNPLANNED, PLANNED)

PACKML_CATEGORIES: dict[int, str] = {code: UNPLANNED for code in range(18)} | {
    6: RUNNING,  # Execute
    5: MINOR,  # Suspended (blocked / starved)
    13: MINOR,  # Suspending
    14: MINOR,  # Unsuspending
}
"""PackML (ISA-TR88.00.02) state number → category."""

_COUNTERS = ("good", "scrap", "rework")
_STATE, _REASON, _ORDER, _MATERIAL = 3, 4, 5, 6
# event kinds, in the order they apply at one row position and timestamp
_SHIFT, _EV_ORDER, _EV_MATERIAL, _EV_REASON, _EV_STATE, _END = range(6)
_NS = 1_000_000_000


@dataclass
class _Totals:
    """What one window (a shift, an order) has accumulated."""

    start_ns: int = 0
    planned_ns: int = 0
    run_ns: int = 0
    minor_ns: int = 0
    unplanned_ns: int = 0
    planned_stop_ns: int = 0
    unknown_ns: int = 0
    good: int = 0
    scrap: int = 0
    rework: int = 0
    ideal_s: float = 0.0
    unrated: int = 0
    """Parts of materials without an ideal cycle time."""


@dataclass
class _State:
    known: bool = False
    clock_ns: int = 0
    """Time is accounted up to here."""
    code: int = -1
    """Current state code; -1 when unknown."""
    reason: int = 0
    category: str = UNKNOWN
    order: str = ""
    material: str = ""
    last_raw: list[int | None] = field(default_factory=lambda: [None, None, None])
    shift_id: str = ""
    shift_end_ns: int = 0
    shift: _Totals | None = None
    order_sequence: int = 0
    order_totals: _Totals | None = None
    stop_start_ns: int = 0
    """Start of the current stop (0: not stopped)."""
    stop_code: int = -1
    stop_reason: int = 0
    stop_shift: str = ""
    stop_order: str = ""
    saved_ns: int = 0


@dataclass(frozen=True, slots=True)
class _Event:
    position: int
    stamp: int
    kind: int
    value: int | str = 0


class OeeProcessor:
    """One machine's OEE and downtime events. See the module docstring for the rules."""

    def __init__(
        self,
        config: OeeConfig,
        table: TagTable,
        gateway_id: str,
        shifts: ShiftCalendarConfig | ShiftCalendar | None = None,
    ) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self._calendar = shifts if isinstance(shifts, ShiftCalendar) else ShiftCalendar(shifts)
        self._role = np.full(len(table), -1, np.int8)
        self._rollover: list[int | None] = [None, None, None]
        for role, name in enumerate(_COUNTERS):
            counter = getattr(config, name)
            if counter is not None:
                index = table.index(counter.tag)
                self._role[index] = role
                self._rollover[role] = counter.rollover or default_rollover(table[index].type)
        for role, tag in (
            (_STATE, config.state),
            (_REASON, config.reason),
            (_ORDER, config.order),
            (_MATERIAL, config.material),
        ):
            if tag is not None:
                self._role[table.index(tag)] = role
        self._numeric_text = {
            role: tag is not None and table[table.index(tag)].type.is_numeric
            for role, tag in ((_ORDER, config.order), (_MATERIAL, config.material))
        }
        """Whether the order / material tag is a number (read from the value column)."""
        self._relevance = Relevance(table, self._role >= 0)
        self._states: dict[int, str] = (
            dict(PACKML_CATEGORIES) if config.state_model == "packml" else {}
        )
        self._states.update({code: c.value for code, c in config.states.items()})
        self._reasons = {code: c.value for code, c in config.reasons.items()}
        self._committed = _State()
        self._pending: _State | None = None
        self._resumed = False
        self._next_boundary_ns = 0
        self._noticed: dict[str, int] = {}
        self._now_ns = 0

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        due = False
        if len(batch) and self._committed.known:
            if not self._next_boundary_ns:
                self._next_boundary_ns = self._calendar.next_boundary_after(
                    self._committed.clock_ns
                )
            due = int(batch.timestamps.max()) >= self._next_boundary_ns
        if not due and not self._relevance.concerns(batch):
            self._pending = None
            return []
        roles = self._role[batch.tags]
        rows = np.flatnonzero(roles >= 0)
        if len(rows) == 0 and not due:
            self._pending = None
            return []
        state = copy.deepcopy(self._committed)
        self._pending = state
        self._now_ns = batch.received_ns
        documents: list[Document] = []
        if self._resumed and state.known:
            # the gateway was down: what happened since the last saved moment is unknown
            state.code = -1
            documents += self._recategorize(state, state.clock_ns)
        documents += self._apply(state, batch, rows, roles[rows])
        return documents

    @property
    def needs_checkpoint(self) -> bool:
        state = self._pending
        if state is None:
            return False
        return self._now_ns - state.saved_ns >= int(self._config.checkpoint_interval * 1e9)

    def snapshot(self) -> Mapping[str, Any]:
        state = self._pending or self._committed
        state.saved_ns = self._now_ns
        return asdict(state)

    def commit(self) -> None:
        if self._pending is not None:
            self._committed = self._pending
            self._pending = None
            self._resumed = False
            if self._committed.clock_ns >= self._next_boundary_ns:
                self._next_boundary_ns = 0

    def rollback(self) -> None:
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        for name in ("shift", "order_totals"):
            if isinstance(fields.get(name), Mapping):
                fields[name] = _Totals(**fields[name])
        self._committed = _State(**fields)
        self._pending = None
        self._resumed = True
        self._next_boundary_ns = 0

    @property
    def warnings(self) -> dict[str, int]:
        """Counts of noticed conditions (counter resets and rollovers, performance over 100 %)."""
        return dict(self._noticed)

    # --- the work ---

    def _apply(
        self, state: _State, batch: SampleBatch, rows: NDArray[np.intp], roles: NDArray[np.int8]
    ) -> list[Document]:
        stamps = batch.timestamps[rows]
        order = time_order(stamps, roles >= _STATE)
        if order is not None:
            rows, roles, stamps = rows[order], roles[order], stamps[order]
        end = max(state.clock_ns, int(batch.timestamps.max()))
        documents: list[Document] = []
        if not state.known:
            if len(rows) == 0:
                return []
            state.known = True
            state.clock_ns = int(stamps[0])
            self._open_shift(state, state.clock_ns)
        good = is_good(batch.quality[rows])
        events = self._events(state, batch, rows, roles, stamps, good, end)
        parts = self._parts(state, batch, rows, roles, events)
        t = state.clock_ns
        for index, event in enumerate(events):
            stamp = max(event.stamp, t)
            self._account(state, t, stamp)
            self._add_parts(state, parts[index])
            t = stamp
            if event.kind == _SHIFT:
                documents += self._shift_boundary(state, t)
            elif event.kind == _EV_STATE:
                state.code = int(event.value)
                documents += self._recategorize(state, t)
            elif event.kind == _EV_REASON:
                state.reason = int(event.value)
                documents += self._recategorize(state, t)
            elif event.kind == _EV_ORDER:
                documents += self._order_change(state, t, str(event.value))
            elif event.kind == _EV_MATERIAL:
                state.material = str(event.value)
        state.clock_ns = t
        return documents

    def _events(
        self,
        state: _State,
        batch: SampleBatch,
        rows: NDArray[np.intp],
        roles: NDArray[np.int8],
        stamps: NDArray[np.int64],
        good: NDArray[np.bool_],
        end: int,
    ) -> list[_Event]:
        events: list[_Event] = []
        for role, kind, previous in (
            (_STATE, _EV_STATE, state.code),
            (_REASON, _EV_REASON, state.reason),
        ):
            mine = np.flatnonzero(roles == role)
            if role == _REASON:
                mine = mine[good[mine]]
            if len(mine) == 0:
                continue
            raw = batch.values[rows[mine]]
            valid = good[mine] & ~np.isnan(raw)
            codes = np.where(valid, np.nan_to_num(raw), -1).astype(np.int64)
            before = np.concatenate(([previous], codes[:-1]))
            for i in np.flatnonzero(codes != before).tolist():
                events.append(_Event(int(mine[i]), int(stamps[mine[i]]), kind, int(codes[i])))
        for role, kind, current in (
            (_ORDER, _EV_ORDER, state.order),
            (_MATERIAL, _EV_MATERIAL, state.material),
        ):
            mine = np.flatnonzero((roles == role) & good)
            if len(mine) == 0:
                continue
            objects = None if self._numeric_text[role] else batch.objects
            at = rows[mine]
            keys: NDArray[Any] = batch.values[at] if objects is None else objects[at]
            text = current
            # only where the raw value changes (order and material change rarely)
            for i in mine[np.concatenate(([0], change_positions(keys) + 1))].tolist():
                value = batch.value_of(int(rows[i]))
                new = "" if value is None else _text(value)
                if new != text:
                    events.append(_Event(i, int(stamps[i]), kind, new))
                    text = new
        for moment in self._calendar.boundaries(state.clock_ns, end):
            position = int(np.searchsorted(stamps, moment, side="right"))
            events.append(_Event(position, moment, _SHIFT))
        events.sort(key=lambda e: (e.position, e.stamp, e.kind))
        events.append(_Event(len(rows), end, _END))
        return events

    def _parts(
        self,
        state: _State,
        batch: SampleBatch,
        rows: NDArray[np.intp],
        roles: NDArray[np.int8],
        events: list[_Event],
    ) -> NDArray[np.int64]:
        """Parts per counter and per stretch before each event: (events, 3)."""
        positions = np.array([e.position for e in events[:-1]], np.intp)
        parts = np.zeros((len(events), len(_COUNTERS)), np.int64)
        for role in range(len(_COUNTERS)):
            mine = np.flatnonzero(roles == role)
            if len(mine) == 0:
                continue
            result = counter_deltas(
                batch.values[rows[mine]], state.last_raw[role], self._rollover[role]
            )
            state.last_raw[role] = result.last
            self._notice("counter_reset", result.resets)
            self._notice("counter_rollover", result.rollovers)
            segment = np.searchsorted(positions, mine, side="right")
            parts[:, role] = np.bincount(
                segment, weights=result.deltas, minlength=len(events)
            ).astype(np.int64)
        return parts

    def _category(self, code: int, reason: int) -> str:
        if code < 0:
            return UNKNOWN
        category = self._states.get(code, self._config.unknown_state.value)
        if category != RUNNING and reason in self._reasons:
            category = self._reasons[reason]
        return category

    def _recategorize(self, state: _State, t: int) -> list[Document]:
        """Apply a new state or reason code at t: end and start stops."""
        documents: list[Document] = []
        category = self._category(state.code, state.reason)
        if state.stop_start_ns and (category not in _STOPS or state.code != state.stop_code):
            documents += self._downtime(state, t)
        if category in _STOPS:
            if not state.stop_start_ns:
                state.stop_start_ns = t
                state.stop_code = state.code
                state.stop_reason = state.reason
                state.stop_shift = state.shift_id
                state.stop_order = state.order
            elif state.reason:
                state.stop_reason = state.reason
        state.category = category
        return documents

    def _downtime(self, state: _State, end_ns: int) -> list[Document]:
        start = state.stop_start_ns
        state.stop_start_ns = 0
        duration = (end_ns - start) / _NS
        if duration <= 0 or duration < self._config.min_downtime:
            return []
        machine = self._config.machine
        key = idempotency_key(self._gateway, machine, "downtime", start)
        body = {
            "gateway": self._gateway,
            "machine": machine,
            "category": state.category,
            "state": state.stop_code,
            "reason": state.stop_reason,
            "start": iso_utc(start),
            "end": iso_utc(end_ns),
            "duration": round(duration, 3),
            "shift": state.stop_shift,
            "order": state.stop_order,
            "idempotency_key": key,
        }
        return [Document(DocumentKind.DOWNTIME, key, machine, body, ordering_key=machine)]

    def _account(self, state: _State, start: int, end: int) -> None:
        """Time [start, end) in the current category, into the shift and order windows."""
        if end <= start:
            return
        windows = [w for w in (state.shift, state.order_totals) if w is not None]
        if not windows:
            return
        category = state.category
        span = end - start
        planned = span if category == RUNNING else self._calendar.planned_ns(start, end)
        for w in windows:
            if category == RUNNING:
                w.run_ns += span
                w.planned_ns += span
            elif category == MINOR:
                w.minor_ns += planned
                w.run_ns += planned
                w.planned_ns += planned
            elif category == UNPLANNED:
                w.unplanned_ns += planned
                w.planned_ns += planned
            elif category == PLANNED:
                w.planned_stop_ns += planned
            else:
                w.unknown_ns += planned

    def _add_parts(self, state: _State, parts: NDArray[np.int64]) -> None:
        good, scrap, rework = (int(p) for p in parts)
        total = good + scrap + rework
        if not total:
            return
        ideal = self._config.ideal_cycle_times.get(state.material, self._config.ideal_cycle_time)
        for w in (state.shift, state.order_totals):
            if w is None:
                continue
            w.good += good
            w.scrap += scrap
            w.rework += rework
            if ideal is None:
                w.unrated += total
            else:
                w.ideal_s += ideal * total

    def _open_shift(self, state: _State, t: int) -> None:
        shift = self._calendar.at(t)
        if shift is None:
            state.shift, state.shift_id, state.shift_end_ns = None, "", 0
        else:
            state.shift = _Totals(start_ns=t)
            state.shift_id, state.shift_end_ns = shift.id, shift.end_ns

    def _shift_boundary(self, state: _State, t: int) -> list[Document]:
        documents: list[Document] = []
        if state.shift is not None and t >= state.shift_end_ns:
            documents.append(self._report(state, "shift", state.shift, t))
            state.shift, state.shift_id = None, ""
        if state.shift is None:
            self._open_shift(state, t)
        return documents

    def _order_change(self, state: _State, t: int, order: str) -> list[Document]:
        documents: list[Document] = []
        if state.order_totals is not None and state.order:
            documents.append(self._report(state, "order", state.order_totals, t))
        state.order = order
        state.order_totals = None
        if order:
            state.order_sequence += 1
            state.order_totals = _Totals(start_ns=t)
        return documents

    def _report(self, state: _State, scope: str, w: _Totals, end_ns: int) -> Document:
        machine = self._config.machine
        if scope == "shift":
            key = idempotency_key(self._gateway, machine, "oee", scope, state.shift_id)
            shift, order, material = state.shift_id, "", ""
        else:
            key = idempotency_key(
                self._gateway, machine, "oee", scope, state.order, state.order_sequence
            )
            shift, order, material = "", state.order, state.material
        total = w.good + w.scrap + w.rework
        availability = w.run_ns / w.planned_ns if w.planned_ns else None
        performance: float | None = None
        if w.run_ns and not w.unrated:
            performance = w.ideal_s / (w.run_ns / _NS)
            if performance > 1.0:
                self._notice("performance_above_100", 1)
                performance = 1.0
        quality = w.good / total if total else None
        if availability is not None and performance is not None and quality is not None:
            oee: float | None = availability * performance * quality
        elif w.planned_ns and not total:
            oee = 0.0  # planned time and not a single part
        else:
            oee = None
        body = {
            "gateway": self._gateway,
            "machine": machine,
            "scope": scope,
            "shift": shift,
            "order": order,
            "material": material,
            "start": iso_utc(w.start_ns),
            "end": iso_utc(end_ns),
            "planned_time": round(w.planned_ns / _NS, 3),
            "run_time": round(w.run_ns / _NS, 3),
            "unplanned_stop_time": round(w.unplanned_ns / _NS, 3),
            "planned_stop_time": round(w.planned_stop_ns / _NS, 3),
            "minor_stop_time": round(w.minor_ns / _NS, 3),
            "unknown_time": round(w.unknown_ns / _NS, 3),
            "availability": _ratio(availability),
            "performance": _ratio(performance),
            "quality": _ratio(quality),
            "oee": _ratio(oee),
            "good": w.good,
            "scrap": w.scrap,
            "rework": w.rework,
            "total": total,
            "ideal_time": round(w.ideal_s, 3),
            "idempotency_key": key,
        }
        return Document(DocumentKind.OEE, key, machine, body, ordering_key=machine)

    def _notice(self, kind: str, count: int) -> None:
        if count:
            self._noticed[kind] = self._noticed.get(kind, 0) + count


def _ratio(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
