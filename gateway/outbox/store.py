"""The outbox's SQLite storage (WAL). Synchronous; used from one thread only.

Tables:

``documents``
    one row per business document, unique by its idempotency key: storing a document a second
    time (after a crash, before the producing state was saved) is a no-op.
``deliveries``
    one row per (document, destination): ``pending`` until the destination acknowledged it
    (``delivered``) or refused it for good (``dead``, the dead-letter queue).
``processor_state``
    the processors' saved state, written in the same transaction as their documents.
"""

from __future__ import annotations

__all__ = ["DeliveryRow", "OutboxStore", "StoredDocument"]

import json
import sqlite3
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.documents import Document
from gateway.errors import OutboxError

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
    UNIQUE (document_id, destination)
);
CREATE INDEX IF NOT EXISTS deliveries_pending
    ON deliveries (destination, state, ordering_key, id);
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
    document: StoredDocument


_DELIVERY_COLUMNS = (
    "d.id, d.destination, d.state, d.attempts, d.next_attempt_ns, d.last_error, d.reference, "
    "d.created_ns, d.finished_ns, doc.id, doc.kind, doc.key, doc.cell, doc.ordering_key, "
    "doc.body, doc.created_ns"
)


def _row(values: Sequence[Any]) -> DeliveryRow:
    document = StoredDocument(
        values[9],
        values[10],
        values[11],
        values[12],
        values[13],
        json.loads(values[14]),
        values[15],
    )
    return DeliveryRow(
        values[0],
        values[1],
        values[2],
        values[3],
        values[4],
        values[5],
        values[6],
        values[7],
        values[8],
        document,
    )


class OutboxStore:
    """SQLite access for the outbox. Every method is one transaction."""

    def __init__(self, path: str | Path, *, synchronous: str = "FULL") -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(f"PRAGMA synchronous={synchronous}")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA busy_timeout=5000")
            self._db.executescript(SCHEMA)
        except (sqlite3.Error, OSError) as exc:
            raise OutboxError(f"cannot open the outbox {self.path}: {exc}") from exc

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

    # --- writing ---

    def store(
        self,
        batches: Iterable[tuple[Sequence[Document], Mapping[str, Mapping[str, Any]]]],
        destinations_for: Callable[[str], Sequence[str]],
        now_ns: int,
    ) -> tuple[int, int]:
        """Store documents and processor states of several requests in one transaction.

        Returns how many documents and deliveries were new (a repeated key is ignored).
        """

        def work(db: sqlite3.Connection) -> tuple[int, int]:
            new = 0
            deliveries = 0
            for documents, states in batches:
                for doc in documents:
                    cursor = db.execute(
                        "INSERT OR IGNORE INTO documents "
                        "(key, kind, cell, ordering_key, body, created_ns) VALUES (?,?,?,?,?,?)",
                        (
                            doc.key,
                            doc.kind,
                            doc.cell,
                            doc.ordering_key,
                            json.dumps(doc.body, separators=(",", ":"), default=str),
                            doc.created_ns,
                        ),
                    )
                    if cursor.rowcount == 0:
                        continue
                    new += 1
                    document_id = cursor.lastrowid
                    names = destinations_for(doc.kind)
                    deliveries += len(names)
                    db.executemany(
                        "INSERT OR IGNORE INTO deliveries "
                        "(document_id, destination, ordering_key, created_ns, next_attempt_ns) "
                        "VALUES (?,?,?,?,0)",
                        [(document_id, name, doc.ordering_key, now_ns) for name in names],
                    )
                db.executemany(
                    "INSERT INTO processor_state (name, state, updated_ns) VALUES (?,?,?) "
                    "ON CONFLICT(name) DO UPDATE SET state=excluded.state, "
                    "updated_ns=excluded.updated_ns",
                    [
                        (name, json.dumps(state, separators=(",", ":")), now_ns)
                        for name, state in states.items()
                    ],
                )
            return new, deliveries

        result: tuple[int, int] = self._transaction(work)
        return result

    def finish(self, outcomes: Sequence[tuple[int, str, str, str, int, int]]) -> None:
        """Record delivery outcomes: (delivery id, state, reference, error, next attempt, now)."""

        def work(db: sqlite3.Connection) -> None:
            db.executemany(
                "UPDATE deliveries SET state=?, reference=?, last_error=?, next_attempt_ns=?, "
                "attempts=attempts+1, finished_ns=CASE WHEN ?='pending' THEN NULL ELSE ? END "
                "WHERE id=?",
                [
                    (state, reference, error, next_ns, state, now, delivery_id)
                    for delivery_id, state, reference, error, next_ns, now in outcomes
                ],
            )

        self._transaction(work)

    def requeue(self, delivery_ids: Sequence[int] | None, destination: str | None = None) -> int:
        """Make dead (or waiting) deliveries pending and due now; returns how many."""

        def work(db: sqlite3.Connection) -> int:
            if delivery_ids is not None:
                marks = ",".join("?" * len(delivery_ids))
                cursor = db.execute(
                    f"UPDATE deliveries SET state='pending', next_attempt_ns=0, finished_ns=NULL "
                    f"WHERE id IN ({marks}) AND state != 'delivered'",
                    list(delivery_ids),
                )
            else:
                cursor = db.execute(
                    "UPDATE deliveries SET state='pending', next_attempt_ns=0, finished_ns=NULL "
                    "WHERE state='dead' AND (? IS NULL OR destination=?)",
                    (destination, destination),
                )
            return cursor.rowcount

        result: int = self._transaction(work)
        return result

    def drop(self, delivery_ids: Sequence[int]) -> int:
        """Remove deliveries for good (an operator's decision); returns how many."""

        def work(db: sqlite3.Connection) -> int:
            marks = ",".join("?" * len(delivery_ids))
            cursor = db.execute(
                f"DELETE FROM deliveries WHERE id IN ({marks}) AND state != 'delivered'",
                list(delivery_ids),
            )
            db.execute("DELETE FROM documents WHERE id NOT IN (SELECT document_id FROM deliveries)")
            return cursor.rowcount

        result: int = self._transaction(work)
        return result

    def purge(self, finished_before_ns: int) -> int:
        """Remove delivered entries finished before the cut-off (audit retention)."""

        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                "DELETE FROM deliveries WHERE state='delivered' AND finished_ns < ?",
                (finished_before_ns,),
            )
            db.execute("DELETE FROM documents WHERE id NOT IN (SELECT document_id FROM deliveries)")
            return cursor.rowcount

        result: int = self._transaction(work)
        return result

    # --- reading ---

    def due(
        self, destination: str, now_ns: int, limit: int, busy_keys: Iterable[str]
    ) -> list[DeliveryRow]:
        """The next deliveries to attempt: the oldest pending one of each ordering key, if due.

        Ordering keys in `busy_keys` (a delivery of theirs is in flight) are skipped.
        """
        busy = list(busy_keys)
        marks = ",".join("?" * len(busy))
        skip = f"AND ordering_key NOT IN ({marks})" if busy else ""
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN documents doc "
            "ON doc.id = d.document_id WHERE d.id IN ("
            "  SELECT MIN(id) FROM deliveries WHERE destination=? AND state='pending' "
            f"  {skip} GROUP BY ordering_key"
            ") AND d.next_attempt_ns <= ? ORDER BY d.id LIMIT ?",
            (destination, *busy, now_ns, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def next_due_ns(self, destination: str) -> int | None:
        """When the earliest waiting head-of-line delivery becomes due."""
        row = self._db.execute(
            "SELECT MIN(next_attempt_ns) FROM deliveries WHERE id IN ("
            " SELECT MIN(id) FROM deliveries WHERE destination=? AND state='pending' "
            " GROUP BY ordering_key)",
            (destination,),
        ).fetchone()
        return None if row is None or row[0] is None else int(row[0])

    def list(
        self,
        *,
        state: str | None = None,
        destination: str | None = None,
        limit: int = 100,
    ) -> list[DeliveryRow]:
        rows = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN documents doc "
            "ON doc.id = d.document_id WHERE (? IS NULL OR d.state=?) "
            "AND (? IS NULL OR d.destination=?) ORDER BY d.id LIMIT ?",
            (state, state, destination, destination, limit),
        ).fetchall()
        return [_row(r) for r in rows]

    def get(self, delivery_id: int) -> DeliveryRow | None:
        row = self._db.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM deliveries d JOIN documents doc "
            "ON doc.id = d.document_id WHERE d.id=?",
            (delivery_id,),
        ).fetchone()
        return None if row is None else _row(row)

    def counts(self) -> dict[str, dict[str, int]]:
        """Per destination, deliveries per state."""
        out: dict[str, dict[str, int]] = {}
        for destination, state, count in self._db.execute(
            "SELECT destination, state, COUNT(*) FROM deliveries GROUP BY destination, state"
        ):
            out.setdefault(destination, {})[state] = count
        return out

    def pending_total(self) -> int:
        row = self._db.execute("SELECT COUNT(*) FROM deliveries WHERE state='pending'").fetchone()
        return int(row[0])

    def states(self) -> dict[str, dict[str, Any]]:
        return {
            name: json.loads(state)
            for name, state in self._db.execute("SELECT name, state FROM processor_state")
        }
