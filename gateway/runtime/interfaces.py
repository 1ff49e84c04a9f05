"""The small interfaces every driver, processor, output and connector implements.

They are :class:`typing.Protocol` classes: components do not inherit from anything, they only
have these methods. Optional abilities are separate protocols, checked with ``isinstance``.
"""

from __future__ import annotations

__all__ = [
    "BatchSink",
    "Connector",
    "DocumentOutput",
    "Driver",
    "LinkedOutput",
    "Output",
    "Processor",
    "TagWriter",
    "WritableDriver",
]

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from gateway.batch import SampleBatch
from gateway.documents import Document
from gateway.tags import TagInfo


class BatchSink(Protocol):
    """Where a driver hands its batches. Never blocks; a full queue drops its oldest batch."""

    def __call__(self, batch: SampleBatch) -> None: ...


@runtime_checkable
class Driver(Protocol):
    """A connection to one device.

    The supervisor calls, in this order: :meth:`connect`; :meth:`run`, which polls or subscribes
    and hands batches to the sink until it is cancelled or the connection fails (it raises
    then); :meth:`close`, always, even after a failed connect, and it never raises. Then it
    starts again with backoff. Only the supervisor retries: drivers turn library auto-reconnect
    off.
    """

    name: str

    async def connect(self) -> None: ...

    async def run(self, sink: BatchSink) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class WritableDriver(Protocol):
    """A driver that can write tag values. May be called while :meth:`Driver.run` runs.

    Raises :class:`~gateway.errors.WriteRefusedError` before sending anything when the tag is not
    writable or the value does not fit its type and range, and
    :class:`~gateway.errors.DeviceError` when the device refuses it.
    """

    async def write(self, tag: TagInfo, value: object) -> None: ...


@runtime_checkable
class Processor(Protocol):
    """Turns batches into documents (work reports, lot results). Pure computation, no I/O.

    The pipeline calls :meth:`ingest` with every batch, one at a time. The processor keeps what
    ingest changed as *pending*. When documents came out, or :attr:`needs_checkpoint` is true,
    the pipeline stores the documents and :meth:`snapshot` in one durable transaction and then
    calls :meth:`commit`; if storing failed it calls :meth:`rollback`, and the next batch derives
    the same documents again. :meth:`restore` is called once before the first batch with the
    last stored snapshot.
    """

    name: str

    def ingest(self, batch: SampleBatch) -> list[Document]: ...

    @property
    def needs_checkpoint(self) -> bool: ...

    def snapshot(self) -> Mapping[str, Any]: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def restore(self, state: Mapping[str, Any]) -> None: ...


@runtime_checkable
class Output(Protocol):
    """A northbound sink of tag values (MQTT, a historian).

    :meth:`connect` first; then :meth:`write` from one task, with batches that passed change
    detection and this output's tag selection; :meth:`close` last (flushes what it can).
    A lost connection raises :class:`~gateway.errors.NotConnectedError` from write; the
    supervisor reconnects.
    """

    name: str

    async def connect(self) -> None: ...

    async def write(self, batch: SampleBatch) -> None: ...

    async def close(self) -> None: ...


@runtime_checkable
class LinkedOutput(Protocol):
    """An output with store-and-forward: it accepts writes while its connection is down.

    For such an output :meth:`Output.connect` only opens its buffer, and :meth:`Output.write`
    never raises :class:`~gateway.errors.NotConnectedError` (it buffers instead). The gateway
    supervises :meth:`maintain_link` as a component of its own (``output:<name>:link``): it
    connects, serves, and raises NotConnectedError when the connection is lost; the supervisor
    calls it again with backoff. :meth:`Output.close` is called once, at shutdown.
    """

    async def maintain_link(self) -> None: ...


TagWriter = Callable[[int, object], Awaitable[None]]
"""Writes a value to the tag with this tag-table index through its driver (for MQTT commands);
raises WriteRefusedError, DeviceError or NotConnectedError like :meth:`WritableDriver.write`."""


@runtime_checkable
class DocumentOutput(Protocol):
    """An output that also publishes business documents as events (after they are stored)."""

    async def publish_documents(self, documents: Sequence[Document]) -> None: ...


class Connector(Protocol):
    """Delivers documents to one business system (ERP, WMS, QMS).

    :meth:`deliver` sends one document and returns the target's reference (a confirmation
    number) or raises :class:`~gateway.errors.DeliveryError` saying whether a retry may help.
    It may be called concurrently for documents with different ordering keys.
    """

    name: str

    def accepts(self, document_kind: str) -> bool: ...

    async def deliver(self, document: Document) -> str: ...

    async def close(self) -> None: ...
