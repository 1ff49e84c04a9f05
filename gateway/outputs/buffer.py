"""Store-and-forward buffers: messages that could not be published yet, replayed in order.

Two backends with one interface (:class:`MessageBuffer`), tested by one shared suite:

:class:`DiskBuffer`
    Append-only segment files in a folder; survives restarts and crashes of the gateway.
:class:`MemoryBuffer`
    The same in memory, for ``store_and_forward: {disk: false}``; lost on restart.

Both are bounded by bytes. When an append would pass the bound, the **oldest** records are
dropped (whole segments on disk), counted in :attr:`MessageBuffer.dropped` and logged: under a
long outage the newest data wins, and the loss is visible.

The buffer is transactional like Telegraf's: :meth:`~MessageBuffer.read` hands out a
:class:`Chunk` of records from the read position without removing them; the caller publishes
them and calls :meth:`~MessageBuffer.commit` once every record of the chunk is acknowledged
(chunks are committed in the order they were read). After a lost connection
:meth:`~MessageBuffer.rewind` moves the read position back to the first uncommitted record, so
nothing handed out but unacknowledged is lost (it may be sent twice: at least once).

On-disk format (little endian), one record after another in segment files named by the number
of their first record (``00000000000000000042.seg``)::

    u32 body length | u32 CRC-32 of body | body = u8 flags (bits 0-1 QoS, bit 2 retain, bit 3 plain)
                                                 | u16 topic length | topic | payload

A ``cursor`` file holds the first uncommitted record (number, segment, byte offset); it is
replaced atomically on every commit. At start-up a torn record at the end of the last segment
(a crash in the middle of a write) is cut off; a record whose CRC does not match ends its
segment (the rest of that segment is counted as dropped).

All file I/O runs in one worker thread per buffer (a single-thread executor), so the event
loop never waits for the disk; appends are batched: everything appended during one write is
written by the next one.
"""

from __future__ import annotations

__all__ = ["Chunk", "DiskBuffer", "MemoryBuffer", "MessageBuffer", "Record"]

import asyncio
import contextlib
import logging
import os
import struct
import time
import zlib
from collections import deque
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, NamedTuple, Protocol

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
_OVERHEAD = _HEADER.size + 1
_SUFFIX = ".seg"
_CURSOR = "cursor"
_READ_BLOCK = 1 << 20


class Record(NamedTuple):
    """One buffered message. `topic` is encoded as in a PUBLISH frame (u16 length + UTF-8)."""

    topic: bytes
    payload: bytes
    qos: int
    retain: bool = False
    plain: bool = False
    """Published as it is (JSON events in Sparkplug mode): the mode's ``prepare`` is skipped."""

    @property
    def size(self) -> int:
        """Bytes the record takes in the buffer."""
        return _OVERHEAD + len(self.topic) + len(self.payload)


class Position(NamedTuple):
    """Where a record starts: its number, its segment's first record number, byte offset."""

    rid: int
    segment: int = 0
    offset: int = 0


@dataclass(frozen=True, slots=True)
class Chunk:
    """Records handed out by :meth:`MessageBuffer.read`, to be committed together."""

    records: list[Record]
    first_rid: int
    end: Position
    """The position after the last record (what the cursor becomes on commit)."""


class MessageBuffer(Protocol):
    """What the MQTT output needs from a store-and-forward buffer. All methods on the loop."""

    @property
    def dropped(self) -> int:
        """Records dropped because the buffer was full, since start."""

    async def open(self) -> None: ...

    def append(self, records: Sequence[Record]) -> None:
        """Add records at the end (never blocks; drops the oldest when full)."""

    async def read(self, max_records: int) -> Chunk | None:
        """The next records after the read position, or None when there are none now."""

    def rewind(self) -> None:
        """Move the read position back to the first uncommitted record."""

    async def commit(self, chunk: Chunk) -> None:
        """Every record of `chunk` (and before) is done: forget it."""

    async def flush(self) -> None:
        """Make every appended record durable (as far as the backend can)."""

    async def close(self) -> None: ...

    def __len__(self) -> int:
        """Records buffered and not committed."""

    @property
    def bytes(self) -> int:
        """Bytes buffered (on disk: whole segments, so up to one segment more than held)."""

    @property
    def max_bytes(self) -> int: ...


class MemoryBuffer:
    """A bounded in-memory buffer (``store_and_forward: {disk: false}``)."""

    def __init__(self, max_bytes: int, *, name: str = "buffer") -> None:
        self.name = name
        self._max = max_bytes
        self._items: deque[tuple[int, Record, int]] = deque()
        self._bytes = 0
        self._next = 0
        self._read = 0
        self._cursor = 0
        self.dropped = 0

    async def open(self) -> None:
        return None

    def __len__(self) -> int:
        return len(self._items)

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def max_bytes(self) -> int:
        return self._max

    def append(self, records: Sequence[Record]) -> None:
        items = self._items
        for record in records:
            size = record.size
            items.append((self._next, record, size))
            self._next += 1
            self._bytes += size
        dropped = 0
        while self._bytes > self._max and items:
            rid, _, size = items.popleft()
            self._bytes -= size
            dropped += 1
            self._cursor = rid + 1
        if dropped:
            self._read = max(self._read, self._cursor)
            self.dropped += dropped
            _warn_dropped(self.name, dropped, self._max)

    async def read(self, max_records: int) -> Chunk | None:
        items = self._items
        if not items:
            return None
        start = self._read - items[0][0]
        if start >= len(items):
            return None
        taken = [items[i][1] for i in range(start, min(len(items), start + max_records))]
        first = self._read
        self._read += len(taken)
        return Chunk(taken, first, Position(self._read))

    def rewind(self) -> None:
        self._read = self._cursor

    async def commit(self, chunk: Chunk) -> None:
        items = self._items
        while items and items[0][0] < chunk.end.rid:
            self._bytes -= items.popleft()[2]
        self._cursor = max(self._cursor, chunk.end.rid)
        self._read = max(self._read, self._cursor)

    async def flush(self) -> None:
        return None

    async def close(self) -> None:
        return None


@dataclass
class _Segment:
    first: int
    path: Path
    size: int
    count: int


@dataclass
class _StoreState:
    """What the loop thread sees of the store after each operation."""

    next_rid: int = 0
    cursor: int = 0
    bytes: int = 0
    dropped: int = 0


@dataclass
class _SegmentStore:
    """The segment files. Used only from the buffer's worker thread."""

    directory: Path
    max_bytes: int
    segment_bytes: int
    fsync_interval: float
    name: str
    segments: list[_Segment] = field(default_factory=list)
    cursor: Position = field(default_factory=lambda: Position(0))
    read_at: Position = field(default_factory=lambda: Position(0))
    next_rid: int = 0
    dropped: int = 0
    _writer: IO[bytes] | None = None
    _reader: IO[bytes] | None = None
    _reader_segment: int = -1
    _synced: float = 0.0
    _dirty: bool = False

    # --- start-up ---

    def open(self) -> _StoreState:
        self.directory.mkdir(parents=True, exist_ok=True)
        found = []
        for path in self.directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(ValueError):
                found.append((int(path.stem), path))
        found.sort()
        cursor = self._load_cursor()
        for index, (first, path) in enumerate(found):
            following = found[index + 1][0] if index + 1 < len(found) else None
            if following is not None and cursor is not None and following <= cursor.rid:
                path.unlink(missing_ok=True)
                continue
            size = path.stat().st_size
            if following is None:
                count, size = self._recover_tail(path, first)
            else:
                count = following - first
            self.segments.append(_Segment(first, path, size, count))
        if self.segments:
            last = self.segments[-1]
            self.next_rid = last.first + last.count
            self.cursor = self._valid_cursor(cursor)
        elif cursor is not None:
            self.next_rid = cursor.rid
            self.cursor = Position(cursor.rid, cursor.rid, 0)
        self.read_at = self.cursor
        return self.state()

    def _valid_cursor(self, cursor: Position | None) -> Position:
        head = self.segments[0]
        if cursor is None or not head.first <= cursor.rid <= self.next_rid:
            return Position(head.first, head.first, 0)
        for segment in self.segments:
            if segment.first == cursor.rid:
                return Position(cursor.rid, segment.first, 0)
            if segment.first == cursor.segment and cursor.rid <= segment.first + segment.count:
                return cursor
        return Position(cursor.rid, *self._locate(cursor.rid))

    def _load_cursor(self) -> Position | None:
        try:
            text = (self.directory / _CURSOR).read_text("ascii")
            rid, segment, offset = (int(part) for part in text.split())
            return Position(rid, segment, offset)
        except (OSError, ValueError):
            return None

    def _recover_tail(self, path: Path, first: int) -> tuple[int, int]:
        """Count the records of the last segment; cut a torn or corrupt tail off."""
        count, good = 0, 0
        with path.open("rb") as f:
            data = f.read()
        end = len(data)
        while good + _HEADER.size <= end:
            length, crc = _HEADER.unpack_from(data, good)
            stop = good + _HEADER.size + length
            if stop > end or zlib.crc32(data[good + _HEADER.size : stop]) != crc:
                break
            good = stop
            count += 1
        if good != end:
            log.warning(
                "%s: cutting %d bytes of an incomplete record off %s", self.name, end - good, path
            )
            with path.open("r+b") as f:
                f.truncate(good)
        return count, good

    def _locate(self, rid: int) -> tuple[int, int]:
        """(segment, offset) of record `rid`, by scanning its segment."""
        for segment in self.segments:
            if segment.first <= rid <= segment.first + segment.count:
                offset = 0
                with segment.path.open("rb") as f:
                    for _ in range(rid - segment.first):
                        header = f.read(_HEADER.size)
                        if len(header) < _HEADER.size:
                            break
                        length, _ = _HEADER.unpack(header)
                        offset += _HEADER.size + length
                        f.seek(offset)
                return segment.first, offset
        return rid, 0

    def state(self) -> _StoreState:
        return _StoreState(
            self.next_rid, self.cursor.rid, sum(s.size for s in self.segments), self.dropped
        )

    # --- appending ---

    def append(self, records: Sequence[Record]) -> _StoreState:
        """Write records at the end, starting a new segment whenever one is full."""
        active = self.segments[-1] if self.segments else None
        data = bytearray()
        count = 0
        for topic, payload, qos, retain, plain in records:
            if active is None or active.size + len(data) >= self.segment_bytes:
                if data and active is not None:
                    self._write(active, data, count)
                    data, count = bytearray(), 0
                active = self._rotate()
            body_length = 1 + len(topic) + len(payload)
            body = bytes([qos | (4 if retain else 0) | (8 if plain else 0)]) + topic + payload
            data += _HEADER.pack(body_length, zlib.crc32(body))
            data += body
            count += 1
        if data and active is not None:
            self._write(active, data, count)
        self.sync(force=self.fsync_interval == 0)
        self._drop_oldest()
        return self.state()

    def _write(self, segment: _Segment, data: bytearray, count: int) -> None:
        writer = self._writer
        if writer is None:
            writer = self._writer = segment.path.open("ab", buffering=0)
        writer.write(data)
        segment.size += len(data)
        segment.count += count
        self.next_rid += count
        self._dirty = True

    def _rotate(self) -> _Segment:
        if self._writer is not None:
            self._fsync(self._writer)
            self._writer.close()
            self._writer = None
        path = self.directory / f"{self.next_rid:020d}{_SUFFIX}"
        segment = _Segment(self.next_rid, path, 0, 0)
        self.segments.append(segment)
        return segment

    def sync(self, *, force: bool = False) -> None:
        if not self._dirty or self._writer is None:
            return
        now = time.monotonic()
        if force or now - self._synced >= self.fsync_interval:
            self._fsync(self._writer)
            self._synced = now
            self._dirty = False

    @staticmethod
    def _fsync(writer: IO[bytes]) -> None:
        with contextlib.suppress(OSError):
            os.fsync(writer.fileno())

    def _drop_oldest(self) -> None:
        total = sum(s.size for s in self.segments)
        dropped = 0
        while total > self.max_bytes and len(self.segments) > 1:
            head = self.segments.pop(0)
            total -= head.size
            following = self.segments[0].first
            dropped += following - max(self.cursor.rid, head.first)
            self.cursor = Position(following, following, 0)
            if self._reader_segment == head.first:
                self._close_reader()
            head.path.unlink(missing_ok=True)
        if dropped:
            self.dropped += dropped
            if self.read_at.rid < self.cursor.rid:
                self.read_at = self.cursor
            self._save_cursor()
            _warn_dropped(self.name, dropped, self.max_bytes)

    # --- reading and committing ---

    def read(self, max_records: int) -> Chunk | None:
        records: list[Record] = []
        first = self.read_at.rid
        while len(records) < max_records and self.read_at.rid < self.next_rid:
            segment = self._segment_of(self.read_at)
            if segment is None:
                break
            if self.read_at.rid >= segment.first + segment.count:
                self.read_at = self._next_segment_start(segment)
                continue
            got = self._read_from(segment, max_records - len(records), records)
            if not got:
                # corrupt record: the rest of this segment is lost
                lost = segment.first + segment.count - self.read_at.rid
                log.error(
                    "%s: corrupt record %d in %s: %d records skipped",
                    self.name,
                    self.read_at.rid,
                    segment.path,
                    lost,
                )
                self.dropped += lost
                self.read_at = self._next_segment_start(segment)
        if not records:
            return None
        return Chunk(records, first, self.read_at)

    def _segment_of(self, at: Position) -> _Segment | None:
        for segment in self.segments:
            if segment.first == at.segment:
                return segment
        for segment in self.segments:  # a position whose segment is gone: find the record
            if segment.first <= at.rid <= segment.first + segment.count:
                self.read_at = Position(at.rid, *self._locate(at.rid))
                return segment
        return None

    def _next_segment_start(self, segment: _Segment) -> Position:
        rid = segment.first + segment.count
        for following in self.segments:
            if following.first >= rid and following is not segment:
                return Position(following.first, following.first, 0)
        return Position(rid, rid, 0)

    def _read_from(self, segment: _Segment, limit: int, out: list[Record]) -> int:
        if self._reader_segment != segment.first or self._reader is None:
            self._close_reader()
            self._reader = segment.path.open("rb")
            self._reader_segment = segment.first
        reader = self._reader
        at = self.read_at
        reader.seek(at.offset)
        data = reader.read(_READ_BLOCK)
        pos, got, rid = 0, 0, at.rid
        end_rid = segment.first + segment.count
        while got < limit and rid < end_rid and pos + _HEADER.size <= len(data):
            length, crc = _HEADER.unpack_from(data, pos)
            start = pos + _HEADER.size
            stop = start + length
            if stop > len(data):
                if pos == 0:  # one record larger than the block
                    reader.seek(at.offset)
                    data = reader.read(_HEADER.size + length)
                    if len(data) < stop:
                        return 0
                    continue
                break
            body = data[start:stop]
            if zlib.crc32(body) != crc or length < 3:
                self.read_at = Position(rid, segment.first, at.offset + pos)
                return 0 if got == 0 else got
            flags = body[0]
            topic_end = 3 + ((body[1] << 8) | body[2])
            out.append(
                Record(
                    body[1:topic_end], body[topic_end:], flags & 3, bool(flags & 4), bool(flags & 8)
                )
            )
            pos = stop
            got += 1
            rid += 1
        self.read_at = Position(rid, segment.first, at.offset + pos)
        return got

    def rewind(self) -> None:
        self.read_at = self.cursor

    def commit(self, end: Position) -> _StoreState:
        if end.rid <= self.cursor.rid:
            return self.state()
        self.cursor = end
        if self.read_at.rid < end.rid:
            self.read_at = end
        while len(self.segments) > 1 and self.segments[1].first <= end.rid:
            head = self.segments.pop(0)
            if self._reader_segment == head.first:
                self._close_reader()
            head.path.unlink(missing_ok=True)
        if len(self.segments) == 1 and end.rid >= self.next_rid and self.segments[0].size:
            # everything is done: start the next append in a fresh segment, drop this one
            head = self.segments.pop(0)
            if self._writer is not None:
                self._writer.close()
                self._writer = None
            self._close_reader()
            head.path.unlink(missing_ok=True)
            self.cursor = Position(end.rid, end.rid, 0)
            self.read_at = self.cursor
        self._save_cursor()
        return self.state()

    def _save_cursor(self) -> None:
        tmp = self.directory / f"{_CURSOR}.tmp"
        cursor = self.cursor
        tmp.write_text(f"{cursor.rid} {cursor.segment} {cursor.offset}\n", "ascii")
        os.replace(tmp, self.directory / _CURSOR)

    def _close_reader(self) -> None:
        if self._reader is not None:
            self._reader.close()
        self._reader = None
        self._reader_segment = -1

    def close(self) -> None:
        self.sync(force=True)
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        self._close_reader()
        self._save_cursor()


class DiskBuffer:
    """A bounded buffer in segment files under `directory` that survives restarts."""

    def __init__(
        self,
        directory: str | Path,
        max_bytes: int,
        *,
        fsync_interval: float = 1.0,
        name: str = "buffer",
        segment_bytes: int | None = None,
    ) -> None:
        self.name = name
        segment = segment_bytes or max(1 << 16, min(max_bytes // 8, 64 << 20))
        self._store = _SegmentStore(Path(directory), max_bytes, segment, fsync_interval, name)
        self._max = max_bytes
        self._executor: ThreadPoolExecutor | None = None
        self._pending: list[Record] = []
        self._pending_bytes = 0
        self._writer_task: asyncio.Task[None] | None = None
        self._sync_task: asyncio.Task[None] | None = None
        self._state = _StoreState()
        self._pending_dropped = 0
        self._error: OSError | None = None

    @property
    def dropped(self) -> int:
        return self._state.dropped + self._pending_dropped

    async def _run(self, fn: object, *args: object) -> object:
        assert self._executor is not None, "buffer not open"
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, fn, *args)  # type: ignore[arg-type]

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"{self.name}-buffer")
        old = self._store  # a reopened buffer reads its folder afresh
        self._store = _SegmentStore(
            old.directory, old.max_bytes, old.segment_bytes, old.fsync_interval, old.name
        )
        state = await self._run(self._store.open)
        assert isinstance(state, _StoreState)
        self._state = state
        if len(self):
            log.info(
                "%s: %d buffered messages (%d bytes) from before the restart will be replayed",
                self.name,
                len(self),
                state.bytes,
            )
        self._sync_task = asyncio.create_task(self._sync_loop(), name=f"{self.name}-buffer-sync")

    def __len__(self) -> int:
        return self._state.next_rid - self._state.cursor + len(self._pending)

    @property
    def bytes(self) -> int:
        return self._state.bytes + self._pending_bytes

    @property
    def max_bytes(self) -> int:
        return self._max

    def append(self, records: Sequence[Record]) -> None:
        if not records:
            return
        self._pending.extend(records)
        self._pending_bytes += sum(r.size for r in records)
        if self._pending_bytes > self._max:  # the disk cannot keep up: drop in memory
            dropped = 0
            while self._pending_bytes > self._max and self._pending:
                self._pending_bytes -= self._pending.pop(0).size
                dropped += 1
            self._pending_dropped += dropped
            _warn_dropped(self.name, dropped, self._max)
        if self._writer_task is None or self._writer_task.done():
            self._writer_task = asyncio.create_task(self._write_pending())

    async def _write_pending(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            size, self._pending_bytes = self._pending_bytes, 0
            try:
                state = await self._run(self._store.append, batch)
            except OSError as exc:
                # keep the records in memory and try again later (disk full, I/O error)
                self._pending = batch + self._pending
                self._pending_bytes += size
                if self._error is None or str(exc) != str(self._error):
                    log.error("%s: cannot write the buffer: %s", self.name, exc)
                self._error = exc
                await asyncio.sleep(1.0)
                continue
            self._error = None
            assert isinstance(state, _StoreState)
            self._state = state

    async def read(self, max_records: int) -> Chunk | None:
        if self._pending:
            await self.flush_writes()
        chunk = await self._run(self._store.read, max_records)
        assert chunk is None or isinstance(chunk, Chunk)
        self._state.dropped = self._store.dropped  # corrupt records skipped while reading
        return chunk

    def rewind(self) -> None:
        if self._executor is not None:
            self._executor.submit(self._store.rewind)

    async def commit(self, chunk: Chunk) -> None:
        state = await self._run(self._store.commit, chunk.end)
        assert isinstance(state, _StoreState)
        self._state = state

    async def flush_writes(self) -> None:
        """Wait until every appended record is written to the files (not necessarily synced)."""
        while self._writer_task is not None and not self._writer_task.done():
            await asyncio.shield(self._writer_task)

    async def flush(self) -> None:
        await self.flush_writes()
        if self._executor is not None:
            await self._run(lambda: self._store.sync(force=True))

    async def _sync_loop(self) -> None:
        interval = max(self._store.fsync_interval, 0.05)
        while True:
            await asyncio.sleep(interval)
            await self._run(self._store.sync)

    async def close(self) -> None:
        if self._executor is None:
            return
        if self._sync_task is not None:
            self._sync_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sync_task
        await self.flush_writes()
        await self._run(self._store.close)
        self._executor.shutdown(wait=True)
        self._executor = None


_DROP_LOG_INTERVAL_S = 10.0
_drop_log: dict[str, tuple[float, int]] = {}


def _warn_dropped(name: str, count: int, max_bytes: int) -> None:
    """Log dropped records: at once the first time, then at most every 10 s with the sum."""
    now = time.monotonic()
    last, pending = _drop_log.get(name, (0.0, 0))
    pending += count
    if now - last < _DROP_LOG_INTERVAL_S:
        _drop_log[name] = (last, pending)
        return
    _drop_log[name] = (now, 0)
    log.warning(
        "%s: store-and-forward buffer full (%d bytes): dropped the %d oldest messages",
        name,
        max_bytes,
        pending,
    )
