"""The outbox's SQLite storage (WAL). Synchronous; used from one thread at a time.

Tables:

``documents``
    one row per business document, unique by its idempotency key: storing a document a second
    time (after a crash, before the producing state was saved) is a no-op.
``deliveries``
    one row per (document, destination): ``pending`` until the destination acknowledged it
    (``delivered``) or refused it (``dead``, the dead-letter queue). Delivered rows are kept
    for audit until the retention time has passed.
``processor_state``
    the processors' saved state, written in the same transaction as their documents.

A partial index over the undelivered rows keeps the dispatchers' scans proportional to the
backlog, not to the audit history.
"""

from __future__ import annotations

__all__ = ["DeliveryRow", "OpenRow", "OutboxStore", "StoredDocument"]

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from gateway.documents import Document
from gateway.errors import OutboxError

SCHEMA_VERSION = 2

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id INTEGER PRIMARY KEY,
    key TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    cell TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    body TEXT NOT NULL,
    created_ns INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    document_id INTEGER NOT NULL REFERENCES documents(id) ON DELETE CASCADE,
    destination TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'dead')),
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_ns INTEGER NOT NULL DEFAULT 0,
    last_error TEXT NOT NULL DEFAULT '',
    reference TEXT NOT NULL DEFAULT '',
    created_ns INTEGER NOT NULL,
    finished_ns INTEGER,
    last_attempt_ns INTEGER,
    UNIQUE (document_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_open
    ON deliveries (destination, id) WHERE state != 'delivered';
CREATE INDEX IF NOT EXISTS deliveries_finished ON deliveries (state, finished_ns);
CREATE TABLE IF NOT EXISTS processor_state (
    name TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    updated_ns INTEGER NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A document as read back from the outbox."""

    id: int
    kind: str
    key: str
    cell: str
    ordering_key: str
    body: dict[str, Any]
    created_ns: int

    def as_document(self) -> Document:
        return Document(
            self.kind, self.key, self.cell, self.body, self.ordering_key, self.created_ns
        )


@dataclass(frozen=True, slots=True)
class DeliveryRow:
    """One document's delivery to one destination."""

    id: int
    destination: str
    state: str
    attempts: int
    next_attempt_ns: int
    last_error: str
    reference: str
    created_ns: int
    finished_ns: int | None
    last_attempt_ns: int | None
    document: StoredDocument


@dataclass(frozen=True, slots=True)
class OpenRow:
    """What the dispatcher needs to schedule an undelivered delivery (no body)."""

    id: int
    ordering_key: str
    state: str
    next_attempt_ns: int
    created_ns: int


@dataclass(frozen=True, slots=True)
class Outcome:
    """One attempt's result as stored: state, reference, error, next attempt (ns)."""

    delivery_id: int
    state: str
    reference: str
    error: str
    next_attempt_ns: int


_DELIVERY_COLUMNS = (
    "d.id, d.destination, d.state, d.attempts, d.next_attempt_ns, d.last_error, d.reference, "
    "d.created_ns, d.finished_ns, d.last_attempt_ns, doc.id, doc.kind, doc.key, doc.cell, "
    "doc.ordering_key, doc.body, doc.created_ns"
)
_FROM = "FROM deliveries d JOIN documents doc ON doc.id = d.document_id"


def _row(values: Sequence[Any]) -> DeliveryRow:
    document = StoredDocument(
        values[10], values[11], values[12], values[13], values[14], orjson.loads(values[15]),
        values[16],
    )  # fmt: skip
    return DeliveryRow(
        values[0], values[1], values[2], values[3], values[4], values[5], values[6], values[7],
        values[8], values[9], document,
    )  # fmt: skip


def _marks(count: int) -> str:
    return ",".join("?" * count)


class OutboxStore:
    """SQLite access for the outbox. Every writing method is one transaction."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._migrate()
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc

    def _migrate(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version >= SCHEMA_VERSION:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            tables = {r[0] for r in self._db.execute("SELECT name FROM sqlite_master")}
            if "deliveries" in tables:
                columns = {r[1] for r in self._db.execute("PRAGMA table_info(deliveries)")}
                if "last_attempt_ns" not in columns:
                    self._db.execute("ALTER TABLE deliveries ADD COLUMN last_attempt_ns INTEGER")
                self._db.execute("DROP INDEX IF EXISTS deliveries_pending")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def close(self) -> None:
        self._db.close()

    def _transaction(self, work: Callable[[sqlite3.Connection], Any]) -> Any:
        try:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                result = work(self._db)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            return result
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc

    def _read(self, sql: str, parameters: Sequence[Any] = ()) -> list[Any]:
        try:
            return self._db.execute(sql, parameters).fetchall()
        except sqlite3.Error as exc:
            raise OutboxError(f"outbox {self.path}: {exc}") from exc

    # --- writing ---

    def store(
        self,
        batches: Iterable[tuple[Sequence[Document], Mapping[str, Mapping[str, Any]]]],
        destinations_for: Callable[[str], Sequence[str]],
        now_ns: int,
    ) -> tuple[int, dict[str, int]]:
        """Store documents and processor states of several requests in one transaction.

        Documents no destination receives are not kept. Returns how many documents were new
        (a repeated key is ignored) and the new deliveries per destination.
        """

        def work(db: sqlite3.Connection) -> tuple[int, dict[str, int]]:
            new = 0
            per_destination: dict[str, int] = {}
            rows: list[tuple[int, str, str, int]] = []
            for documents, states in batches:
                for doc in documents:
                    names = destinations_for(doc.kind)
                    if not names:
                        continue
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO documents "
                        "(key, kind, cell, ordering_key, body, created_ns) VALUES (?,?,?,?,?,?)",
                        (
                            doc.key,
                            doc.kind,
                            doc.cell,
                            doc.ordering_key,
                            orjson.dumps(doc.body, default=str).decode(),
                            doc.created_ns,
                        ),
                    )
                    if cursor.rowcount == 0:
                        continue
                    new += 1
                    document_id = cursor.lastrowid
                    assert document_id is not None
                    for name in names:
                        rows.append((document_id, name, doc.ordering_key, now_ns))
                        per_destination[name] = per_destination.get(name, 0) + 1
                if states:
                    db.executemany(
                        "INSERT INTO processor_state (name, state, updated_ns) VALUES (?,?,?) "
                        "ON CONFLICT(name) DO UPDATE SET state=excluded.state, "
                        "updated_ns=excluded.updated_ns",
                        [
                            (name, json.dumps(state, separators=(",", ":")), now_ns)
                            for name, state in states.items()
                        ],
                    )
            if rows:
                db.executemany(
                    "INSERT OR IGNORE INTO deliveries "
                    "(document_id, destination, ordering_key, created_ns) VALUES (?,?,?,?)",
                    rows,
                )
            return new, per_destination

        result: tuple[int, dict[str, int]] = self._transaction(work)
        return result

    def finish(self, outcomes: Sequence[Outcome], now_ns: int) -> None:
        """Record delivery attempts' outcomes."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE deliveries SET state=?, reference=?, last_error=?, next_attempt_ns=?, "
                "attempts=attempts+1, last_attempt_ns=?, "
                "finished_ns=CASE WHEN ?='pending' THEN NULL ELSE ? END WHERE id=?",
                [
                    (o.state, o.reference, o.error, o.next_attempt_ns, now_ns, o.state, now_ns,
                     o.delivery_id)
                    for o in outcomes
                ],
            )  # fmt: skip

        self._transaction(work)

    def requeue(
        self,
        delivery_ids: Sequence[int] | None = None,
        *,
        destination: str | None = None,
        include_pending: bool = False,
    ) -> dict[str, tuple[int, int]]:
        """Make dead (and with `include_pending`, waiting) deliveries pending and due now.

        By ids, or every dead one (of `destination`, when given). Delivered ones are never
        touched. Returns, per destination, (rows made due, of which were dead).
        """
        states = "('dead', 'pending')" if include_pending else "('dead')"
        if delivery_ids is not None:
            where = f"id IN ({_marks(len(delivery_ids))}) AND state IN {states}"
            parameters: list[Any] = list(delivery_ids)
        else:
            where = f"state IN {states} AND (? IS NULL OR destination=?)"
            parameters = [destination, destination]

        def work(db: sqlite3.Connection) -> dict[str, tuple[int, int]]:
            found = db.execute(
                f"SELECT destination, state FROM deliveries WHERE {where}", parameters
            ).fetchall()
            db.execute(
                "UPDATE deliveries SET state='pending', next_attempt_ns=0, finished_ns=NULL "
                f"WHERE {where}",
                parameters,
            )
            out: dict[str, tuple[int, int]] = {}
            for name, state in found:
                total, dead = out.get(name, (0, 0))
                out[name] = (total + 1, dead + (state == "dead"))
            return out

        result: dict[str, tuple[int, int]] = self._transaction(work)
        return result

    def reset_backoff(self, destination: str, now_ns: int) -> int:
        """Make every waiting pending delivery of `destination` due now (after an outage)."""

        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "UPDATE deliveries SET next_attempt_ns=0 WHERE destination=? "
                "AND state='pending' AND next_attempt_ns > ?",
                (destination, now_ns),
            )
            return cursor.rowcount

        result: int = self._transaction(work)
        return result

    def drop(self, delivery_ids: Sequence[int]) -> list[tuple[int, str, str]]:
        """Remove undelivered deliveries for good (an operator's decision).

        Returns (id, destination, state) of each removed one.
        """

        def work(db: sqlite3.Connection) -> list[tuple[int, str, str]]:
            marks = _marks(len(delivery_ids))
            removed = db.execute(
                f"SELECT id, destination, state, document_id FROM deliveries WHERE id IN ({marks})"
                " AND state != 'delivered'",
                list(delivery_ids),
            ).fetchall()
            if not removed:
                return []
            db.execute(
                f"DELETE FROM deliveries WHERE id IN ({_marks(len(removed))})",
                [r[0] for r in removed],
            )
            self._delete_orphans(db, [r[3] for r in removed])
            return [(r[0], r[1], r[2]) for r in removed]

        result: list[tuple[int, str, str]] = self._transaction(work)
        return result

    @staticmethod
    def _delete_orphans(db: sqlite3.Connection, document_ids: Sequence[int]) -> None:
        unique = sorted(set(document_ids))
        for start in range(0, len(unique), 500):
            chunk = unique[start : start + 500]
            db.execute(
                f"DELETE FROM documents WHERE id IN ({_marks(len(chunk))}) AND NOT EXISTS "
                "(SELECT 1 FROM deliveries WHERE document_id = documents.id)",
                chunk,
            )

    def purge(self, finished_before_ns: int, limit: int = 5000) -> int:
        """Remove up to `limit` delivered entries finished before the cut-off (audit
        retention), and their documents once no delivery refers to them."""

        def work(db: sqlite3.Connection) -> int:
            rows = db.execute(
                "SELECT id, document_id FROM deliveries WHERE state='delivered' "
                "AND finished_ns < ? LIMIT ?",
                (finished_before_ns, limit),
            ).fetchall()
            if not rows:
                return 0
            for start in range(0, len(rows), 500):
                chunk = rows[start : start + 500]
                db.execute(
                    f"DELETE FROM deliveries WHERE id IN ({_marks(len(chunk))})",
                    [r[0] for r in chunk],
                )
            self._delete_orphans(db, [r[1] for r in rows])
            return len(rows)

        result: int = self._transaction(work)
        return result

    # --- reading ---

    def open_window(
        self, destination: str, limit: int, exclude_keys: Sequence[str] = ()
    ) -> list[OpenRow]:
        """The oldest undelivered deliveries of `destination`, in order, skipping the ordering
        keys in `exclude_keys` (whose head is known to be blocked or in flight)."""
        skip = f"AND ordering_key NOT IN ({_marks(len(exclude_keys))})" if exclude_keys else ""
        rows = self._read(
            "SELECT id, ordering_key, state, next_attempt_ns, created_ns FROM deliveries "
            f"WHERE destination=? AND state != 'delivered' {skip} ORDER BY id LIMIT ?",
            (destination, *exclude_keys, limit),
        )
        return [OpenRow(*r) for r in rows]

    def rows(self, delivery_ids: Sequence[int]) -> list[DeliveryRow]:
        """Full rows (with the documents) by id, in the order of `delivery_ids`."""
        if not delivery_ids:
            return []
        found = {
            r[0]: _row(r)
            for r in self._read(
                f"SELECT {_DELIVERY_COLUMNS} {_FROM} WHERE d.id IN ({_marks(len(delivery_ids))})",
                list(delivery_ids),
            )
        }
        return [found[i] for i in delivery_ids if i in found]

    def listing(
        self,
        *,
        state: str | None = None,
        destination: str | None = None,
        limit: int = 100,
        newest: bool = False,
    ) -> list[DeliveryRow]:
        order = "DESC" if newest else "ASC"
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} {_FROM} WHERE (? IS NULL OR d.state=?) "
            f"AND (? IS NULL OR d.destination=?) ORDER BY d.id {order} LIMIT ?",
            (state, state, destination, destination, limit),
        )
        return [_row(r) for r in rows]

    def get(self, delivery_id: int) -> DeliveryRow | None:
        rows = self.rows([delivery_id])
        return rows[0] if rows else None

    def by_document_key(self, key: str) -> list[DeliveryRow]:
        rows = self._read(
            f"SELECT {_DELIVERY_COLUMNS} {_FROM} WHERE doc.key=? ORDER BY d.id", (key,)
        )
        return [_row(r) for r in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """Per destination, deliveries per state (delivered ones still kept for audit too)."""
        out: dict[str, dict[str, int]] = {}
        for destination, state, count in self._read(
            "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
        ):
            out.setdefault(destination, {})[state] = count
        return out

    def open_counts(self) -> dict[str, dict[str, int]]:
        """Per destination, pending and dead deliveries (uses the partial index)."""
        out: dict[str, dict[str, int]] = {}
        for destination, state, count in self._read(
            "SELECT destination, state, COUNT(*) FROM deliveries WHERE state != 'delivered' "
            "GROUP BY destination, state"
        ):
            out.setdefault(destination, {})[state] = count
        return out

    def latencies(self, since_ns: int) -> dict[str, list[int]]:
        """Per destination, creation → acknowledgement of deliveries finished since `since_ns`
        (nanoseconds)."""
        out: dict[str, list[int]] = {}
        for destination, latency in self._read(
            f"SELECT d.destination, d.finished_ns - doc.created_ns {_FROM} "
            "WHERE d.state='delivered' AND d.finished_ns >= ?",
            (since_ns,),
        ):
            out.setdefault(destination, []).append(latency)
        return out

    def states(self) -> dict[str, dict[str, Any]]:
        # the standard json module: states may hold Infinity/NaN (running minima), which
        # orjson would turn into null
        return {
            name: json.loads(state)
            for name, state in self._read("SELECT name, state FROM processor_state")
        }
