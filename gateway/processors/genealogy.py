"""Lot genealogy: for each lot a machine produces, the order, the time window, the component lots
it consumed and the min / mean / max of process values while it ran.

A lot *run* starts when the lot tag shows a new non-empty value and ends when it changes again.
During the run, every new non-empty value of a component scan tag is a consumed component lot
(one entry per component lot), and good samples of the process tags are summed (n, sum, min,
max). At equal timestamps a lot change comes first: the order, material and scans of that moment
belong to the new lot.

Documents: a ``lot_genealogy`` document when a run ends. Storage: the run is also handed to a
:class:`~gateway.processors.genealogy_store.GenealogyStore` as *records* (at the start, at each new
component, at the end), after the pipeline committed the processor's state. Records stay in the
saved state until the store confirms them, so a crash loses none; the store upserts them by
revision, so writing one twice is harmless. Without a store (``edge-gateway replay``) only the
documents come out.
"""

from __future__ import annotations

__all__ = ["GenealogyProcessor"]

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.config.processors import GenealogyConfig
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.changes import change_positions
from gateway.processors.genealogy_store import GenealogyStore
from gateway.processors.relevance import Relevance
from gateway.processors.timefmt import iso_utc
from gateway.quality import is_good
from gateway.tags import TagTable

_IDENTITY = ("lot", "order", "operation", "material")
_LOT = 0
_SCAN_ROLE = len(_IDENTITY)  # scan tags: roles 4 .. 4 + scans - 1


@dataclass
class _State:
    known: bool = False
    identity: list[str] = field(default_factory=lambda: ["", "", "", ""])
    start_ns: int = 0
    sequence: int = 0
    """Lot runs started on this machine (part of each run's key)."""
    key: str = ""
    """The current run's key ('' when no lot runs)."""
    rev: int = 0
    components: list[dict[str, Any]] = field(default_factory=list)
    last_scan: list[str] = field(default_factory=list)
    n: list[int] = field(default_factory=list)
    total: list[float] = field(default_factory=list)
    low: list[float] = field(default_factory=list)
    high: list[float] = field(default_factory=list)
    unwritten: list[dict[str, Any]] = field(default_factory=list)
    """Records not yet confirmed by the store (the latest revision of each run)."""
    saved_ns: int = 0


class GenealogyProcessor:
    """One machine's lot genealogy. See the module docstring."""

    def __init__(
        self,
        config: GenealogyConfig,
        table: TagTable,
        gateway_id: str,
        *,
        store: GenealogyStore | None = None,
    ) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self.genealogy_store = store
        self._role = np.full(len(table), -1, np.int16)
        self._identity_numeric = [False] * len(_IDENTITY)
        for offset, field_name in enumerate(_IDENTITY):
            tag_id = getattr(config, field_name)
            if tag_id is not None:
                index = table.index(tag_id)
                self._role[index] = offset
                self._identity_numeric[offset] = table[index].type.is_numeric
        self._scan_materials = [c.material for c in config.components]
        for offset, component in enumerate(config.components):
            self._role[table.index(component.tag)] = _SCAN_ROLE + offset
        self._process_names = list(config.process)
        self._process_of = np.full(len(table), -1, np.intp)
        for offset, tag_id in enumerate(config.process):
            self._process_of[table.index(tag_id)] = offset
        self._relevance = Relevance(table, (self._role >= 0) | (self._process_of >= 0))
        self._committed = self._fresh()
        self._pending: _State | None = None
        self._submitted: dict[str, int] = {}
        """Run key → revision handed to the store by this process."""
        self._now_ns = 0

    def _fresh(self) -> _State:
        state = _State(last_scan=[""] * len(self._scan_materials))
        self._reset_process(state)
        return state

    def _reset_process(self, state: _State) -> None:
        count = len(self._process_names)
        state.n, state.total = [0] * count, [0.0] * count
        state.low, state.high = [math.inf] * count, [-math.inf] * count

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        confirmed = self._confirmed() if self._committed.unwritten else set()
        if not confirmed and not self._relevance.concerns(batch):
            self._pending = None
            return []
        roles = self._role[batch.tags]
        process = self._process_of[batch.tags]
        relevant = (roles >= 0) | (process >= 0)
        if not relevant.any() and not confirmed:
            self._pending = None
            return []
        state = copy.deepcopy(self._committed)
        self._pending = state
        self._now_ns = batch.received_ns
        if confirmed:
            state.unwritten = [r for r in state.unwritten if (r["key"], r["rev"]) not in confirmed]
        if not relevant.any():
            return []
        return self._apply(state, batch, roles, process)

    @property
    def needs_checkpoint(self) -> bool:
        state = self._pending
        if state is None:
            return False
        if state.unwritten != self._committed.unwritten:
            return True
        return self._now_ns - state.saved_ns >= int(self._config.checkpoint_interval * 1e9)

    def snapshot(self) -> Mapping[str, Any]:
        state = self._pending or self._committed
        state.saved_ns = self._now_ns
        data = asdict(state)
        data["low"] = [None if math.isinf(v) else v for v in state.low]
        data["high"] = [None if math.isinf(v) else v for v in state.high]
        return data

    def commit(self) -> None:
        if self._pending is not None:
            self._committed = self._pending
            self._pending = None
        self._hand_over()

    def rollback(self) -> None:
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        restored = _State(**fields)
        count = len(self._process_names)
        if len(restored.n) != count:
            self._reset_process(restored)
        else:
            restored.low = [math.inf if v is None else float(v) for v in restored.low]
            restored.high = [-math.inf if v is None else float(v) for v in restored.high]
        if len(restored.last_scan) != len(self._scan_materials):
            restored.last_scan = [""] * len(self._scan_materials)
        self._committed = restored
        self._pending = None
        self._submitted.clear()
        self._hand_over()  # records saved before a crash are written again

    # --- the store ---

    def _hand_over(self) -> None:
        store = self.genealogy_store
        if store is None:
            return
        records = [
            r
            for r in self._committed.unwritten
            if self._submitted.get(r["key"], -1) < r["rev"]
            or (store.failures and store.written_rev(r["key"]) < r["rev"])
        ]
        if records:
            store.submit(records)
            for r in records:
                self._submitted[r["key"]] = r["rev"]

    def _confirmed(self) -> set[tuple[str, int]]:
        store = self.genealogy_store
        if store is None:
            done = {(r["key"], r["rev"]) for r in self._committed.unwritten}
            return done
        done = set()
        for r in self._committed.unwritten:
            if store.written_rev(r["key"]) >= r["rev"]:
                done.add((r["key"], r["rev"]))
                if r["end_ns"] is not None:
                    store.forget(r["key"])
                    self._submitted.pop(r["key"], None)
        return done

    # --- the work ---

    def _apply(
        self,
        state: _State,
        batch: SampleBatch,
        roles: NDArray[np.int16],
        process: NDArray[np.intp],
    ) -> list[Document]:
        good = is_good(batch.quality)
        events = self._events(state, batch, roles, good)
        if not state.known:
            # the first values seen: the lot already running (its true start is unknown)
            if not any(e[1] < _SCAN_ROLE for e in events):
                return []
            state.known = True
            firsts: set[int] = set()
            later = []
            for event in events:  # each identity field's first value is where we start
                _, role, text = event
                if role < _SCAN_ROLE and role not in firsts:
                    firsts.add(role)
                    state.identity[role] = text
                else:
                    later.append(event)
            events = later
            if state.identity[_LOT]:
                self._start(state, int(batch.timestamps.min()))
        # process values between lot changes: vectorised sums per stretch
        lot_changes = np.array([e[0] for e in events if e[1] == _LOT], np.int64)
        rows = np.flatnonzero((process >= 0) & good & ~np.isnan(batch.values))
        stretch_stats = self._process_stats(batch, rows, process, lot_changes)
        documents: list[Document] = []
        stretch = 0
        for stamp, role, text in events:
            if role == _LOT:
                self._merge(state, stretch_stats, stretch)
                stretch += 1
                documents += self._end(state, stamp)
                state.identity[_LOT] = str(text)
                if text:
                    self._start(state, stamp)
            elif role < _SCAN_ROLE:
                state.identity[role] = str(text)
                if state.key:
                    self._record(state, None)
            else:
                self._scan(state, role - _SCAN_ROLE, str(text), stamp)
        self._merge(state, stretch_stats, stretch)
        return documents

    def _events(
        self,
        state: _State,
        batch: SampleBatch,
        roles: NDArray[np.int16],
        good: NDArray[np.bool_],
    ) -> list[tuple[int, int, str]]:
        """(timestamp, role, text) of identity changes and new scans, in time order."""
        events: list[tuple[int, int, str]] = []
        top = _SCAN_ROLE + len(self._scan_materials)
        for role in range(top):
            rows = np.flatnonzero((roles == role) & good)
            if len(rows) == 0:
                continue
            if len(rows) > 1:
                rows = rows[np.argsort(batch.timestamps[rows], kind="stable")]
            if (role < _SCAN_ROLE and self._identity_numeric[role]) or batch.objects is None:
                keys: NDArray[Any] = batch.values[rows]
            else:
                keys = batch.objects[rows]
            picks = np.concatenate(([0], change_positions(keys) + 1))
            current = (
                state.identity[role] if role < _SCAN_ROLE else state.last_scan[role - _SCAN_ROLE]
            )
            for pick in picks.tolist():
                value = batch.value_of(int(rows[pick]))
                text = "" if value is None else _text(value)
                if text == current:
                    continue
                current = text
                events.append((int(batch.timestamps[rows[pick]]), role, text))
        events.sort(key=lambda e: (e[0], e[1]))
        return events

    def _process_stats(
        self,
        batch: SampleBatch,
        rows: NDArray[np.intp],
        process: NDArray[np.intp],
        lot_changes: NDArray[np.int64],
    ) -> list[
        tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
    ]:
        """(n, sum, min, max) per process tag for each stretch between lot changes."""
        count = len(self._process_names)
        stretches = len(lot_changes) + 1
        if len(rows) == 0 or count == 0:
            return []
        tag = process[rows]
        values = batch.values[rows]
        stretch = np.searchsorted(lot_changes, batch.timestamps[rows], side="right")
        group = stretch * count + tag
        size = stretches * count
        n = np.bincount(group, minlength=size).astype(np.int64)
        total = np.bincount(group, weights=values, minlength=size).astype(np.float64)
        low = np.full(size, np.inf)
        high = np.full(size, -np.inf)
        np.minimum.at(low, group, values)
        np.maximum.at(high, group, values)
        return [
            (
                n[s * count : (s + 1) * count],
                total[s * count : (s + 1) * count],
                low[s * count : (s + 1) * count],
                high[s * count : (s + 1) * count],
            )
            for s in range(stretches)
        ]

    def _merge(
        self,
        state: _State,
        stats: list[
            tuple[NDArray[np.int64], NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]
        ],
        stretch: int,
    ) -> None:
        if stretch >= len(stats) or not state.key:
            return
        n, total, low, high = stats[stretch]
        state.n = (np.asarray(state.n, np.int64) + n).tolist()
        state.total = (np.asarray(state.total) + total).tolist()
        state.low = np.minimum(np.asarray(state.low), low).tolist()
        state.high = np.maximum(np.asarray(state.high), high).tolist()

    def _start(self, state: _State, stamp: int) -> None:
        state.sequence += 1
        lot = state.identity[_LOT]
        state.key = idempotency_key(
            self._gateway, self._config.machine, "genealogy", lot, state.sequence
        )
        state.start_ns = stamp
        state.rev = 0
        state.components = []
        self._reset_process(state)
        self._record(state, None)

    def _scan(self, state: _State, scan: int, text: str, stamp: int) -> None:
        state.last_scan[scan] = text
        if not text or not state.key:
            return
        material = self._scan_materials[scan]
        if any(c["lot"] == text and c["material"] == material for c in state.components):
            return
        state.components.append({"lot": text, "material": material, "first_ns": stamp})
        self._record(state, None)

    def _process_summary(self, state: _State) -> dict[str, Any]:
        return {
            name: {
                "n": n,
                "min": None if not n else round(low, 6),
                "mean": None if not n else round(total / n, 6),
                "max": None if not n else round(high, 6),
            }
            for name, n, total, low, high in zip(
                self._process_names, state.n, state.total, state.low, state.high, strict=True
            )
        }

    def _record(self, state: _State, end_ns: int | None) -> None:
        """The current run as a store record (replacing its earlier revision)."""
        state.rev += 1
        lot, order, operation, material = state.identity
        record = {
            "key": state.key,
            "rev": state.rev,
            "gateway": self._gateway,
            "machine": self._config.machine,
            "lot": lot,
            "order": order,
            "operation": operation,
            "material": material,
            "start_ns": state.start_ns,
            "end_ns": end_ns,
            "components": [dict(c) for c in state.components],
            "process": self._process_summary(state),
        }
        state.unwritten = [r for r in state.unwritten if r["key"] != state.key] + [record]

    def _end(self, state: _State, stamp: int) -> list[Document]:
        if not state.key:
            return []
        self._record(state, stamp)
        lot, order, operation, material = state.identity
        key = state.key
        body = {
            "gateway": self._gateway,
            "machine": self._config.machine,
            "lot": lot,
            "order": order,
            "operation": operation,
            "material": material,
            "start": iso_utc(state.start_ns),
            "end": iso_utc(stamp),
            "components": [
                {"lot": c["lot"], "material": c["material"], "first_seen": iso_utc(c["first_ns"])}
                for c in state.components
            ],
            "process": self._process_summary(state),
            "idempotency_key": key,
        }
        state.key = ""
        state.components = []
        return [
            Document(DocumentKind.LOT_GENEALOGY, key, self._config.machine, body, ordering_key=lot)
        ]


def _text(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()
