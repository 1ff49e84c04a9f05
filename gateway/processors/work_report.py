"""Work reports: a machine's part counters and order/lot tags become completion documents.

A *segment* is a stretch of production with one identity (order, operation, material, lot). The
configured triggers close it and emit a completion with the good, scrap and rework parts counted
in it: an order change (the completion is *final*), a lot change, a full container (exactly
`container_quantity` good parts; the rest carries over), or a request (:meth:`request_completion`).

Within a batch, samples are taken in time order; at equal timestamps counter samples come before
order/lot changes, because a machine finishes its old order before it switches. A segment with an
empty order number collects parts made without an order: they are counted in a warning metric and
not reported to ERP.
"""

from __future__ import annotations

__all__ = ["WorkReportProcessor"]

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.config.processors import Trigger, WorkReportConfig
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.counters import counter_deltas, default_rollover
from gateway.processors.timefmt import iso_utc
from gateway.tags import TagTable

COUNTERS = ("good", "scrap", "rework")
IDENTITY = ("order", "operation", "material", "lot")
_IDENTITY_ROLE = len(COUNTERS)


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


class WorkReportProcessor:
    """One machine's work reports. See the module docstring for the rules."""

    def __init__(self, config: WorkReportConfig, table: TagTable, gateway_id: str) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self._work_center = config.work_center or config.machine
        self._role = np.full(len(table), -1, np.int8)
        self._rollover: list[int | None] = [None, None, None]
        for role, field_name in enumerate(COUNTERS):
            counter = getattr(config, field_name)
            if counter is None:
                continue
            index = table.index(counter.tag)
            self._role[index] = role
            self._rollover[role] = counter.rollover or default_rollover(table[index].type)
        for offset, field_name in enumerate(IDENTITY):
            tag_id = getattr(config, field_name)
            if tag_id is not None:
                self._role[table.index(tag_id)] = _IDENTITY_ROLE + offset
        self._closing = (
            {IDENTITY.index("order")} if Trigger.ORDER_CHANGE in config.triggers else set()
        )
        if Trigger.LOT_CHANGE in config.triggers:
            self._closing.add(IDENTITY.index("lot"))
        self._container = (
            config.container_quantity if Trigger.CONTAINER_FULL in config.triggers else None
        )
        self._committed = _State()
        self._pending: _State | None = None
        self._requested = False
        self._noticed: dict[str, int] = {}
        self._now_ns = 0

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        roles = self._role[batch.tags]
        rows = np.flatnonzero(roles >= 0)
        if len(rows) == 0 and not self._requested:
            self._pending = None
            return []
        state = copy.deepcopy(self._committed)
        self._pending = state
        documents: list[Document] = []
        now = self._now_ns = batch.received_ns
        if len(rows):
            documents += self._apply(state, batch, rows, roles[rows])
        if self._requested:
            self._requested = False
            documents += self._close(state, now, "request", final=False)
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
            self._pending = None
        self._noticed.pop("checkpoint_now", None)

    def rollback(self) -> None:
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        self._committed = _State(**fields)
        self._pending = None

    # --- API ---

    def request_completion(self) -> None:
        """Close the current segment with the next batch (the "on request" trigger)."""
        self._requested = True

    @property
    def warnings(self) -> dict[str, int]:
        """Counts of noticed conditions: counter resets, rollovers, parts without order."""
        return {k: v for k, v in self._noticed.items() if k != "checkpoint_now"}

    # --- the work ---

    def _apply(
        self, state: _State, batch: SampleBatch, rows: NDArray[np.intp], roles: NDArray[np.int8]
    ) -> list[Document]:
        stamps = batch.timestamps[rows]
        is_identity = roles >= _IDENTITY_ROLE
        order = np.lexsort((is_identity, stamps))
        rows, roles, stamps, is_identity = (
            rows[order],
            roles[order],
            stamps[order],
            is_identity[order],
        )
        # 1. where the identity changes (few rows: a Python loop is fine)
        boundaries: list[tuple[int, int, list[str], set[int]]] = []
        identity = list(state.identity)
        known = state.known
        for position in np.flatnonzero(is_identity):
            row = rows[position]
            if batch.quality[row] >> 14:
                continue  # not good: keep the last known identity
            value = batch.value_of(int(row))
            text = "" if value is None else _text(value)
            field_index = int(roles[position]) - _IDENTITY_ROLE
            if text == identity[field_index]:
                continue
            identity[field_index] = text
            if not known:
                continue
            closing = {field_index} & self._closing
            boundaries.append((int(position), int(stamps[position]), list(identity), closing))
        # 2. parts per counter sample, then per segment between boundaries
        positions = np.array([b[0] for b in boundaries], np.intp)
        segment_parts = np.zeros((len(boundaries) + 1, len(COUNTERS)), np.int64)
        for role in range(len(COUNTERS)):
            mine = np.flatnonzero(roles == role)
            if len(mine) == 0:
                continue
            result = counter_deltas(
                batch.values[rows[mine]], state.last_raw[role], self._rollover[role]
            )
            state.last_raw[role] = result.last
            if result.resets or result.rollovers:
                self._notice("counter_reset", result.resets)
                self._notice("counter_rollover", result.rollovers)
                self._noticed["checkpoint_now"] = 1
            segment = np.searchsorted(positions, mine, side="right")
            segment_parts[:, role] = np.bincount(
                segment, weights=result.deltas, minlength=len(boundaries) + 1
            ).astype(np.int64)
        # 3. walk the segments
        if not state.known:
            state.known = True
            state.identity = identity if not boundaries else state.identity
            state.start_ns = int(stamps[0])
        documents: list[Document] = []
        end_ns = int(stamps[-1])
        for index, parts in enumerate(segment_parts):
            for role in range(len(COUNTERS)):
                state.counts[role] += int(parts[role])
            documents += self._fill_containers(state, end_ns)
            if index < len(boundaries):
                _, stamp, new_identity, closing = boundaries[index]
                if closing:
                    final = IDENTITY.index("order") in closing
                    trigger = "order_change" if final else "lot_change"
                    documents += self._close(state, stamp, trigger, final=final)
                    state.start_ns = stamp
                    if IDENTITY.index("lot") in closing or final:
                        state.containers = 0
                    if final:
                        state.order_documents = 0
                state.identity = new_identity
        return documents

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


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
