"""The lot genealogy database (SQLite, ``<data_dir>/genealogy.db``), with its own worker thread.

Tables:

``lot_runs``
    one row per produced lot on one machine (a lot made in two operations has two runs): order,
    operation, material, start, end (NULL while it runs), process values; keyed by the run's
    idempotency key and upserted by revision, so writing a record twice changes nothing.
``consumptions``
    (lot, component lot) pairs, from scan tags or posted through the API, unique per pair.

Every database call runs in one worker thread (a single-thread executor owning the connection):
the event loop only hands records over (:meth:`GenealogyStore.submit`) or awaits a query.
Records the processor handed over stay in its saved state until the store confirms them, so a
crash between the outbox commit and the write loses nothing: they are written again after the
restart (idempotently).
"""

from __future__ import annotations

__all__ = ["GenealogyStore", "backward", "forward", "parse_components"]

import asyncio
import json
import logging
import sqlite3
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from gateway.processors.timefmt import iso_utc

log = logging.getLogger(__name__)
T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS lot_runs (
    key TEXT PRIMARY KEY,
    rev INTEGER NOT NULL,
    gateway TEXT NOT NULL,
    machine TEXT NOT NULL,
    lot TEXT NOT NULL,
    order_no TEXT NOT NULL DEFAULT '',
    operation TEXT NOT NULL DEFAULT '',
    material TEXT NOT NULL DEFAULT '',
    start_ns INTEGER NOT NULL,
    end_ns INTEGER,
    process TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX IF NOT EXISTS lot_runs_lot ON lot_runs (lot, start_ns);
CREATE TABLE IF NOT EXISTS consumptions (
    lot TEXT NOT NULL,
    component_lot TEXT NOT NULL,
    component_material TEXT NOT NULL DEFAULT '',
    quantity REAL,
    unit TEXT NOT NULL DEFAULT '',
    machine TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL,
    first_ns INTEGER NOT NULL,
    PRIMARY KEY (lot, component_lot)
);
CREATE INDEX IF NOT EXISTS consumptions_component ON consumptions (component_lot);
"""

_MAX_DEPTH = 50


class GenealogyStore:
    """One genealogy database; thread-confined to its own worker."""

    _shared: ClassVar[dict[Path, GenealogyStore]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genealogy")
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()
        self._written: dict[str, int] = {}
        self.failures = 0
        self.last_error = ""

    @classmethod
    def shared(cls, path: str | Path) -> GenealogyStore:
        """The one store of a database file (processors of several machines share it)."""
        key = Path(path).resolve()
        with cls._shared_lock:
            store = cls._shared.get(key)
            if store is None:
                store = cls._shared[key] = cls(key)
            return store

    # --- worker-thread side ---

    def _connect(self) -> sqlite3.Connection:
        if self._db is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA busy_timeout=5000")
            db.executescript(SCHEMA)
            self._db = db
        return self._db

    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        try:
            db = self._connect()
            db.execute("BEGIN IMMEDIATE")
            try:
                for record in records:
                    _upsert_run(db, record)
                    for component in record.get("components", []):
                        _upsert_consumption(
                            db,
                            record["lot"],
                            component,
                            source="scan",
                            machine=record["machine"],
                        )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except (sqlite3.Error, OSError, KeyError, TypeError) as exc:
            self.failures += 1
            self.last_error = str(exc)
            log.error("genealogy records not written to %s (kept for a retry): %s", self.path, exc)
            return
        with self._lock:
            for record in records:
                key, rev = str(record["key"]), int(record["rev"])
                if self._written.get(key, -1) < rev:
                    self._written[key] = rev

    # --- event-loop side ---

    def submit(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Hand records over for writing; never blocks. See :meth:`written_rev`."""
        if records:
            self._executor.submit(self._write, [dict(r) for r in records])

    def written_rev(self, key: str) -> int:
        """The highest revision of a record known to be written (-1: none)."""
        with self._lock:
            return self._written.get(key, -1)

    def forget(self, key: str) -> None:
        """Drop a finished record's confirmation (the processor no longer asks about it)."""
        with self._lock:
            self._written.pop(key, None)

    async def _run(self, work: Callable[[sqlite3.Connection], T]) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(self._connect()))

    def run_sync(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run one call in the worker thread and wait (for tools and tests, not the loop)."""
        return self._executor.submit(lambda: work(self._connect())).result()

    async def add_components(
        self, lot: str, components: Sequence[Mapping[str, Any]], now_ns: int
    ) -> int:
        """Record component lots consumed by `lot` (from the API); returns how many."""

        def work(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            try:
                for component in components:
                    _upsert_consumption(
                        db, lot, {**component, "first_ns": now_ns}, source="api", machine=""
                    )
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
            return len(components)

        return await self._run(work)

    async def backward(self, lot: str, depth: int = 10) -> dict[str, Any] | None:
        """What went into `lot` (recursively), and where and when it was made; None if unknown."""
        return await self._run(lambda db: backward(db, lot, depth))

    async def forward(self, lot: str, depth: int = 10) -> dict[str, Any] | None:
        """Which lots consumed `lot` (recursively); None if unknown."""
        return await self._run(lambda db: forward(db, lot, depth))

    def flush(self) -> None:
        """Wait until everything submitted so far is written (tests, shutdown)."""
        self._executor.submit(lambda: None).result()

    def close(self) -> None:
        def _close() -> None:
            if self._db is not None:
                self._db.close()
                self._db = None

        self._executor.submit(_close).result()
        self._executor.shutdown(wait=True)
        with self._shared_lock:
            if self._shared.get(self.path.resolve()) is self:
                del self._shared[self.path.resolve()]


def _upsert_run(db: sqlite3.Connection, record: Mapping[str, Any]) -> None:
    db.execute(
        "INSERT INTO lot_runs (key, rev, gateway, machine, lot, order_no, operation, material, "
        "start_ns, end_ns, process) VALUES (?,?,?,?,?,?,?,?,?,?,?) "
        "ON CONFLICT(key) DO UPDATE SET rev=excluded.rev, order_no=excluded.order_no, "
        "operation=excluded.operation, material=excluded.material, start_ns=excluded.start_ns, "
        "end_ns=excluded.end_ns, process=excluded.process WHERE excluded.rev >= lot_runs.rev",
        (
            record["key"],
            int(record["rev"]),
            record.get("gateway", ""),
            record["machine"],
            record["lot"],
            record.get("order", ""),
            record.get("operation", ""),
            record.get("material", ""),
            int(record["start_ns"]),
            record.get("end_ns"),
            json.dumps(record.get("process", {}), separators=(",", ":")),
        ),
    )


def _upsert_consumption(
    db: sqlite3.Connection,
    lot: str,
    component: Mapping[str, Any],
    *,
    source: str,
    machine: str,
) -> None:
    quantity = component.get("quantity")
    db.execute(
        "INSERT INTO consumptions (lot, component_lot, component_material, quantity, unit, "
        "machine, source, first_ns) VALUES (?,?,?,?,?,?,?,?) "
        "ON CONFLICT(lot, component_lot) DO UPDATE SET "
        "component_material=CASE WHEN excluded.component_material != '' "
        "THEN excluded.component_material ELSE component_material END, "
        "quantity=COALESCE(excluded.quantity, quantity), "
        "unit=CASE WHEN excluded.unit != '' THEN excluded.unit ELSE unit END, "
        "first_ns=MIN(first_ns, excluded.first_ns)",
        (
            lot,
            str(component["lot"]),
            str(component.get("material", "")),
            None if quantity is None else float(quantity),
            str(component.get("unit", "")),
            machine,
            source,
            int(component.get("first_ns", 0)),
        ),
    )


def _runs(db: sqlite3.Connection, lot: str) -> list[dict[str, Any]]:
    rows = db.execute(
        "SELECT machine, order_no, operation, material, start_ns, end_ns, process, gateway "
        "FROM lot_runs WHERE lot=? ORDER BY start_ns",
        (lot,),
    ).fetchall()
    return [
        {
            "machine": r[0],
            "order": r[1],
            "operation": r[2],
            "material": r[3],
            "start": iso_utc(r[4]),
            "end": None if r[5] is None else iso_utc(r[5]),
            "process": json.loads(r[6]),
            "gateway": r[7],
        }
        for r in rows
    ]


def _links(db: sqlite3.Connection, lot: str, *, forward: bool) -> list[dict[str, Any]]:
    if forward:
        sql = (
            "SELECT lot, component_material, quantity, unit, source, first_ns, machine "
            "FROM consumptions WHERE component_lot=? ORDER BY first_ns, lot"
        )
    else:
        sql = (
            "SELECT component_lot, component_material, quantity, unit, source, first_ns, machine "
            "FROM consumptions WHERE lot=? ORDER BY first_ns, component_lot"
        )
    return [
        {
            "lot": r[0],
            "material": r[1],
            "quantity": r[2],
            "unit": r[3],
            "source": r[4],
            "first_seen": iso_utc(r[5]) if r[5] else None,
            "machine": r[6],
        }
        for r in db.execute(sql, (lot,)).fetchall()
    ]


def _tree(db: sqlite3.Connection, lot: str, depth: int, *, forward: bool) -> dict[str, Any] | None:
    depth = max(0, min(depth, _MAX_DEPTH))
    runs = _runs(db, lot)
    links = _links(db, lot, forward=forward)
    if not runs and not links:
        return None
    field = "used_in" if forward else "components"
    root: dict[str, Any] = {"lot": lot, "runs": runs, field: []}
    seen = {lot}
    level = [(root, links)]
    for _ in range(depth):
        following = []
        for node, found in level:
            children = []
            for link in found:
                child = dict(link)
                child["runs"] = _runs(db, link["lot"])
                child[field] = []
                if link["lot"] in seen:  # a cycle in the data: do not follow it again
                    child["cycle"] = True
                    children.append(child)
                    continue
                seen.add(link["lot"])
                children.append(child)
                following.append((child, _links(db, link["lot"], forward=forward)))
            node[field] = children
        level = following
        if not level:
            break
    for node, found in level:
        if found:
            node[field + "_truncated"] = len(found)
    return root


def backward(db: sqlite3.Connection, lot: str, depth: int = 10) -> dict[str, Any] | None:
    """The backward genealogy tree of a lot (see :meth:`GenealogyStore.backward`)."""
    return _tree(db, lot, depth, forward=False)


def forward(db: sqlite3.Connection, lot: str, depth: int = 10) -> dict[str, Any] | None:
    """The forward (where-used) tree of a lot (see :meth:`GenealogyStore.forward`)."""
    return _tree(db, lot, depth, forward=True)


_COMPONENT_FIELDS: dict[str, type | tuple[type, ...]] = {
    "lot": str,
    "material": str,
    "quantity": (int, float),
    "unit": str,
}


def parse_components(body: Any) -> list[dict[str, Any]]:
    """Consumed components posted to the API: ``{"components": [{"lot": ..., "material": ...,
    "quantity": ..., "unit": ...}]}`` or one such object. Raises ValueError naming the field."""
    if isinstance(body, dict) and "components" in body:
        if set(body) != {"components"}:
            extra = sorted(set(body) - {"components"})[0]
            raise ValueError(f"{extra}: unknown field (expected components)")
        items, where = body["components"], "components"
    elif isinstance(body, dict):
        items, where = [body], ""
    else:
        raise ValueError('the body must be {"components": [{"lot": "...", ...}]}')
    if not isinstance(items, list) or not items:
        raise ValueError(f"{where or 'components'}: a non-empty list of components is expected")
    parsed = []
    for index, item in enumerate(items):
        path = f"{where}[{index}]" if where else ""
        prefix = f"{path}." if path else ""
        if not isinstance(item, dict):
            raise ValueError(f"{path or 'body'}: a component must be an object")
        for key, value in item.items():
            kind = _COMPONENT_FIELDS.get(key)
            if kind is None:
                raise ValueError(f"{prefix}{key}: unknown field (lot, material, quantity, unit)")
            if value is None and key != "lot":
                continue
            if isinstance(value, bool) or not isinstance(value, kind):
                raise ValueError(f"{prefix}{key}: wrong type {type(value).__name__}")
        lot = item.get("lot")
        if not isinstance(lot, str) or not lot.strip():
            raise ValueError(f"{prefix}lot: a non-empty lot number is required")
        quantity = item.get("quantity")
        if quantity is not None and not (0 <= float(quantity) < float("inf")):
            raise ValueError(f"{prefix}quantity: must be a finite number >= 0")
        parsed.append(
            {
                "lot": lot.strip(),
                "material": str(item.get("material") or ""),
                "quantity": None if quantity is None else float(quantity),
                "unit": str(item.get("unit") or ""),
            }
        )
    return parsed
