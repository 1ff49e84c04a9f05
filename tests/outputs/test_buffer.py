"""The store-and-forward buffers: one suite for both backends, then what only the disk does
(restarts, torn writes, corrupt records, disk space given back)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from gateway.outputs.buffer import Chunk, DiskBuffer, MemoryBuffer, MessageBuffer, Record
from gateway.outputs.mqtt_client import encode_topic

TOPIC = encode_topic("a/b/c")


def record(i: int, size: int = 10) -> Record:
    return Record(TOPIC, str(i).encode().ljust(size, b"."), 1, i % 2 == 0, i % 3 == 0)


def number(r: Record) -> int:
    return int(r.payload.rstrip(b"."))


async def read_all(buffer: MessageBuffer, chunk: int = 7) -> list[Chunk]:
    chunks = []
    while (got := await buffer.read(chunk)) is not None:
        chunks.append(got)
    return chunks


Factory = Callable[[int], MessageBuffer]


@pytest.fixture(params=["memory", "disk"])
async def make(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Factory]:
    opened: list[MessageBuffer] = []

    def factory(max_bytes: int) -> MessageBuffer:
        buffer: MessageBuffer
        if request.param == "memory":
            buffer = MemoryBuffer(max_bytes)
        else:
            buffer = DiskBuffer(tmp_path / "buf", max_bytes, segment_bytes=max(256, max_bytes // 8))
        opened.append(buffer)
        return buffer

    yield factory
    for buffer in opened:
        await buffer.close()


async def test_records_come_back_in_order_with_their_flags(make: Factory) -> None:
    buffer = make(1 << 20)
    await buffer.open()
    buffer.append([record(i) for i in range(50)])
    buffer.append([record(i) for i in range(50, 100)])
    assert len(buffer) == 100
    chunks = await read_all(buffer)
    records = [r for c in chunks for r in c.records]
    assert records == [record(i) for i in range(100)]
    assert len(buffer) == 100, "reading does not remove"
    for chunk in chunks:
        await buffer.commit(chunk)
    assert len(buffer) == 0
    assert await buffer.read(10) is None


async def test_rewind_hands_out_uncommitted_records_again(make: Factory) -> None:
    buffer = make(1 << 20)
    await buffer.open()
    buffer.append([record(i) for i in range(30)])
    first = await buffer.read(10)
    second = await buffer.read(10)
    assert first is not None and second is not None
    await buffer.commit(first)
    buffer.rewind()  # the connection was lost with `second` unacknowledged
    again = await buffer.read(100)
    assert again is not None
    assert [number(r) for r in again.records] == list(range(10, 30))
    await buffer.commit(again)
    assert len(buffer) == 0


async def test_full_buffer_drops_the_oldest_and_counts(make: Factory) -> None:
    size = record(0).size
    buffer = make(100 * size)
    await buffer.open()
    for i in range(0, 1000, 10):
        buffer.append([record(j) for j in range(i, i + 10)])
    await buffer.flush()
    assert buffer.dropped > 0
    assert buffer.bytes <= 100 * size
    records = [r for c in await read_all(buffer, 50) for r in c.records]
    numbers = [number(r) for r in records]
    assert numbers == list(range(1000 - len(numbers), 1000)), "the newest are kept, in order"
    assert len(numbers) + buffer.dropped == 1000


async def test_disk_buffer_survives_a_restart(tmp_path: Path) -> None:
    folder = tmp_path / "buf"
    first = DiskBuffer(folder, 1 << 20, segment_bytes=1024)
    await first.open()
    first.append([record(i) for i in range(200)])
    chunk = await first.read(50)
    assert chunk is not None
    await first.commit(chunk)
    await first.read(50)  # handed out but never acknowledged
    await first.close()

    second = DiskBuffer(folder, 1 << 20, segment_bytes=1024)
    await second.open()
    assert len(second) == 150
    records = [r for c in await read_all(second, 64) for r in c.records]
    assert records == [record(i) for i in range(50, 200)]
    second.append([record(200)])
    tail = await second.read(10)
    assert tail is not None and tail.records == [record(200)]
    await second.close()


async def test_disk_buffer_gives_disk_space_back(tmp_path: Path) -> None:
    folder = tmp_path / "buf"
    buffer = DiskBuffer(folder, 1 << 20, segment_bytes=512)
    await buffer.open()
    for _ in range(5):
        buffer.append([record(i) for i in range(100)])
        for chunk in await read_all(buffer, 33):
            await buffer.commit(chunk)
    assert len(buffer) == 0
    assert sum(p.stat().st_size for p in folder.glob("*.seg")) == 0
    await buffer.close()


async def test_a_torn_last_record_is_cut_off(tmp_path: Path) -> None:
    folder = tmp_path / "buf"
    first = DiskBuffer(folder, 1 << 20)
    await first.open()
    first.append([record(i) for i in range(10)])
    await first.close()
    segment = next(folder.glob("*.seg"))
    with segment.open("ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # a crash in the middle of the next write
    second = DiskBuffer(folder, 1 << 20)
    await second.open()
    assert len(second) == 10
    second.append([record(10)])
    records = [r for c in await read_all(second) for r in c.records]
    assert records == [record(i) for i in range(11)]
    await second.close()


async def test_a_corrupt_record_ends_its_segment_and_is_counted(tmp_path: Path) -> None:
    folder = tmp_path / "buf"
    first = DiskBuffer(folder, 1 << 20, segment_bytes=200)
    await first.open()
    for i in range(0, 40, 5):
        first.append([record(j) for j in range(i, i + 5)])
        await first.flush()
    await first.close()
    segments = sorted(folder.glob("*.seg"))
    assert len(segments) > 2
    victim = segments[1]
    data = bytearray(victim.read_bytes())
    data[20] ^= 0xFF  # a flipped bit inside the first record of the second segment
    victim.write_bytes(bytes(data))
    os.sync()
    second = DiskBuffer(folder, 1 << 20, segment_bytes=200)
    await second.open()
    numbers = [number(r) for c in await read_all(second) for r in c.records]
    lost = int(victim.stem) - int(segments[0].stem)
    following = int(segments[2].stem)
    assert numbers == list(range(lost)) + list(range(following, 40))
    assert second.dropped == following - lost
    await second.close()
