"""The ledger of booked documents and the idempotency-key memory of a business simulator.

:class:`Ledger` is a read-only sequence of :class:`Booking` (what tests compare with the
plant's truth). :meth:`Ledger.once` runs a request at most once per idempotency key: a
repeated key gets the first answer back (``replayed``), and a second request that arrives while
the first is still being processed waits for it instead of booking again. Only successful
answers are remembered: a rejected document books nothing, so a corrected retry with the same
key is processed normally.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, overload

from .plant import iso_utc

__all__ = ["Answer", "Booking", "Ledger"]


@dataclass(frozen=True)
class Booking:
    """One booked document."""

    id: str
    collection: str
    idempotency_key: str
    received_at: datetime
    document: Mapping[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "idempotency_key": self.idempotency_key,
            "received_at": iso_utc(self.received_at),
            "document": dict(self.document),
        }


@dataclass(frozen=True)
class Answer:
    """An HTTP answer as remembered for replays."""

    status: int
    body: Mapping[str, Any]

    @property
    def success(self) -> bool:
        return 200 <= self.status < 300


class Ledger(Sequence[Booking]):
    """Booked documents in the order they were received, plus the idempotency memory."""

    def __init__(self) -> None:
        self._bookings: list[Booking] = []
        self._counters: dict[str, Iterator[int]] = {}
        self._answers: dict[tuple[str, str], Answer] = {}
        self._in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}

    @overload
    def __getitem__(self, index: int) -> Booking: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[Booking]: ...
    def __getitem__(self, index: int | slice) -> Booking | Sequence[Booking]:
        return self._bookings[index]

    def __len__(self) -> int:
        return len(self._bookings)

    def by_collection(self, collection: str) -> list[Booking]:
        return [b for b in self._bookings if b.collection == collection]

    def book(
        self, collection: str, id_prefix: str, idempotency_key: str, document: Mapping[str, Any]
    ) -> Booking:
        """Append a booking with a fresh id such as ``CONF-000001``."""
        counter = self._counters.setdefault(collection, itertools.count(1))
        booking = Booking(
            id=f"{id_prefix}-{next(counter):06d}",
            collection=collection,
            idempotency_key=idempotency_key,
            received_at=datetime.now(UTC),
            document=dict(document),
        )
        self._bookings.append(booking)
        return booking

    def book_as(
        self, collection: str, booking_id: str, reference: str, document: Mapping[str, Any]
    ) -> Booking:
        """Append a booking with an id the caller chose (SAP's group/count, ERPNext's name).

        `reference` is the external reference the document carries (kept as its
        ``idempotency_key``): targets without an idempotency header book every valid request,
        so a client that posts twice shows up here twice.
        """
        booking = Booking(
            id=booking_id,
            collection=collection,
            idempotency_key=reference,
            received_at=datetime.now(UTC),
            document=dict(document),
        )
        self._bookings.append(booking)
        return booking

    def find(self, collection: str, field: str, value: Any) -> list[Booking]:
        """Bookings of `collection` whose document has ``field == value``."""
        return [
            b
            for b in self._bookings
            if b.collection == collection and b.document.get(field) == value
        ]

    def replace(self, booking: Booking, document: Mapping[str, Any]) -> Booking:
        """Update a booked document in place (a draft submitted later); same id and time."""
        index = self._bookings.index(booking)
        updated = Booking(
            booking.id, booking.collection, booking.idempotency_key, booking.received_at,
            dict(document),
        )  # fmt: skip
        self._bookings[index] = updated
        return updated

    async def once(
        self, scope: str, key: str, produce: Callable[[], Awaitable[Answer]]
    ) -> tuple[Answer, bool]:
        """``produce()``'s answer, or the remembered one for ``(scope, key)``.

        Returns ``(answer, replayed)``.
        """
        slot = (scope, key)
        while True:
            answer = self._answers.get(slot)
            if answer is not None:
                return answer, True
            pending = self._in_flight.get(slot)
            if pending is None:
                break
            await asyncio.shield(pending)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._in_flight[slot] = done
        try:
            answer = await produce()
            if answer.success:
                self._answers[slot] = answer
            return answer, False
        finally:
            del self._in_flight[slot]
            done.set_result(None)
