"""The Modbus TCP PLC through real clients: pymodbus' AsyncModbusTcpClient and mbpoll."""

from __future__ import annotations

import asyncio
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence

import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient

from simulators.modbus_plc import ModbusPlc
from simulators.plant import Plant
from simulators.scenario import Scenario
from tests.peers import require_binary

TIMEOUT_S = 3.0


def _u32(high: int, low: int) -> int:
    return (high << 16) | low


def _f32(high: int, low: int) -> float:
    value: float = struct.unpack(">f", struct.pack(">HH", high, low))[0]
    return value


def _text(registers: Sequence[int]) -> str:
    raw = b"".join(struct.pack(">H", r) for r in registers)
    assert raw.rstrip(b"\0") == raw.split(b"\0")[0], "NUL padding in the middle of a string"
    return raw.rstrip(b"\0").decode("ascii")


@pytest_asyncio.fixture
async def still_plc() -> AsyncIterator[tuple[Plant, ModbusPlc]]:
    """A plant stepped to 300 s by hand (values do not change during the test)."""
    plant = Plant(Scenario.demo(), seed=1)
    plant.advance_to(300.0)
    async with ModbusPlc(plant) as plc:
        yield plant, plc


@pytest_asyncio.fixture
async def client(still_plc: tuple[Plant, ModbusPlc]) -> AsyncIterator[AsyncModbusTcpClient]:
    _, plc = still_plc
    client = AsyncModbusTcpClient("127.0.0.1", port=plc.port, timeout=TIMEOUT_S, retries=0)
    assert await client.connect()
    yield client
    client.close()


async def test_every_holding_register_matches_the_map(
    still_plc: tuple[Plant, ModbusPlc], client: AsyncModbusTcpClient
) -> None:
    plant, _ = still_plc
    for unit, name in enumerate(plant.machines, start=1):
        s = plant.snapshot(name)
        low = await client.read_holding_registers(0, count=104, device_id=unit)
        assert not low.isError()
        r = low.registers
        assert r[0] == s.state == 6
        assert r[1] == s.reason == 0
        assert r[2] == s.good_count % 65536
        assert _u32(r[3], r[4]) == s.scrap_count  # ABCD
        assert _u32(r[6], r[5]) == s.good_count  # CDAB: low word first
        assert _u32(r[7], r[8]) == s.meas_seq
        assert r[9] == 0
        assert _text(r[10:18]) == s.order
        assert _text(r[18:20]) == s.operation
        assert _text(r[20:28]) == s.material
        assert _text(r[28:36]) == s.lot
        assert r[36:40] == [0, 0, 0, 0]
        ring = [_f32(r[40 + 2 * i], r[41 + 2 * i]) for i in range(32)]
        assert ring == list(s.measurements)
        assert ring[(s.meas_seq - 1) % 32] == pytest.approx(s.last_measurement)
        assert all(9.9 < v < 10.1 for v in ring)
        high = await client.read_holding_registers(104, count=98, device_id=unit)
        assert high.registers[:96] == [0] * 96  # 104..199
        assert _f32(*high.registers[96:98]) == pytest.approx(s.speed_setpoint, rel=1e-6)
    m1 = plant.snapshot("M1")
    assert m1.good_count > 65535, "M1's counter should have passed 16 bits by 300 s"
    words = (await client.read_holding_registers(5, count=2, device_id=1)).registers
    assert words == [m1.good_count & 0xFFFF, m1.good_count >> 16]
    assert _text((await client.read_holding_registers(10, count=8, device_id=2)).registers) == (
        "1000201"
    )


async def test_input_registers(
    still_plc: tuple[Plant, ModbusPlc], client: AsyncModbusTcpClient
) -> None:
    plant, _ = still_plc
    s = plant.snapshot("M3")
    r = (await client.read_input_registers(0, count=7, device_id=3)).registers
    assert _f32(r[0], r[1]) == pytest.approx(s.temperature, abs=1e-4)
    assert _f32(r[2], r[3]) == pytest.approx(s.pressure, abs=1e-5)
    assert _f32(r[4], r[5]) == pytest.approx(s.speed, abs=1e-4)
    assert struct.unpack(">h", struct.pack(">H", r[6]))[0] == round(s.temperature * 10)
    assert 20.0 < s.temperature < 80.0
    assert s.speed > 0.0


@pytest.mark.parametrize(
    ("function", "address", "count"),
    [
        ("holding", 202, 1),
        ("holding", 200, 3),
        ("holding", 150, 60),
        ("holding", 1000, 1),
        ("input", 7, 1),
        ("input", 0, 8),
        ("coils", 0, 1),
    ],
)
async def test_reads_beyond_the_map_answer_exception_2(
    client: AsyncModbusTcpClient, function: str, address: int, count: int
) -> None:
    if function == "holding":
        response = await client.read_holding_registers(address, count=count, device_id=1)
    elif function == "input":
        response = await client.read_input_registers(address, count=count, device_id=1)
    else:
        response = await client.read_coils(address, count=count, device_id=1)
    assert response.isError()
    assert response.exception_code == 2


async def test_speed_setpoint_is_writable_and_read_only_registers_are_not(
    still_plc: tuple[Plant, ModbusPlc], client: AsyncModbusTcpClient
) -> None:
    plant, _ = still_plc
    words = list(struct.unpack(">HH", struct.pack(">f", 75.5)))
    response = await client.write_registers(200, words, device_id=2)
    assert not response.isError()
    assert plant.snapshot("M2").speed_setpoint == 75.5
    assert plant.snapshot("M1").speed_setpoint == 30.0
    back = await client.read_holding_registers(200, count=2, device_id=2)
    assert _f32(*back.registers) == 75.5
    # out of the 1..120 range: illegal data value, nothing changes
    too_fast = list(struct.unpack(">HH", struct.pack(">f", 500.0)))
    response = await client.write_registers(200, too_fast, device_id=2)
    assert response.isError()
    assert response.exception_code == 3
    assert plant.snapshot("M2").speed_setpoint == 75.5
    # read-only registers: illegal data address
    for address, values in ((0, [5]), (2, [0]), (198, [0, 0, *words]), (10, [0x4142])):
        response = await client.write_registers(address, values, device_id=2)
        assert response.isError(), address
        assert response.exception_code == 2
    single = await client.write_register(1, 0, device_id=2)
    assert single.isError()
    assert single.exception_code == 2
    state = (await client.read_holding_registers(0, count=3, device_id=2)).registers
    assert state[0] == plant.snapshot("M2").state


async def test_unknown_unit_id_answers_gateway_target_failed(
    client: AsyncModbusTcpClient,
) -> None:
    response = await client.read_holding_registers(0, count=1, device_id=9)
    assert response.isError()
    assert response.exception_code == 0x0B


async def test_a_104_register_read_is_one_consistent_and_cheap_snapshot() -> None:
    async with Plant(Scenario.demo(), speed=600.0, seed=1) as plant, ModbusPlc(plant) as plc:
        client = AsyncModbusTcpClient("127.0.0.1", port=plc.port, timeout=TIMEOUT_S, retries=0)
        assert await client.connect()
        try:
            seqs = []
            first_seq: dict[int, int] = {}
            cpu_before = time.process_time()
            for i in range(300):
                r = (
                    await client.read_holding_registers(0, count=104, device_id=1 + i % 3)
                ).registers
                # GoodCount is the low word of GoodCount32, the ring slot of MeasSeq is filled
                assert r[2] == r[5]
                seq = _u32(r[7], r[8])
                if seq > first_seq.setdefault(i % 3, seq):  # a part made since the start
                    slot = (seq - 1) % 32
                    assert 9.9 < _f32(r[40 + 2 * slot], r[41 + 2 * slot]) < 10.1
                if i % 3 == 0:
                    seqs.append(seq)
            per_read_ms = (time.process_time() - cpu_before) / 300 * 1000
        finally:
            client.close()
    assert seqs[-1] > seqs[0], "M1 made no parts while being read"
    # client and server CPU together (this process runs both)
    assert per_read_ms < 2.0


async def _run_mbpoll(*args: str) -> str:
    # skipped without mbpoll, failed instead under CI=true
    mbpoll = require_binary("mbpoll", "Debian package mbpoll")
    process = await asyncio.create_subprocess_exec(
        mbpoll,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=10.0)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


def _values(output: str) -> dict[int, str]:
    return {int(a): v for a, v in re.findall(r"^\[(\d+)\]:\s+(\S+)", output, re.MULTILINE)}


async def test_mbpoll_reads_the_same_registers(still_plc: tuple[Plant, ModbusPlc]) -> None:
    plant, plc = still_plc
    port = str(plc.port)
    s = plant.snapshot("M1")
    base = ("-m", "tcp", "-p", port, "-a", "1", "-0", "-1")
    output = await _run_mbpoll(*base, "-r", "0", "-c", "10", "-t", "4", "127.0.0.1")
    values = {a: int(v) for a, v in _values(output).items()}
    assert values == {
        0: s.state,
        1: s.reason,
        2: s.good_count % 65536,
        3: s.scrap_count >> 16,
        4: s.scrap_count & 0xFFFF,
        5: s.good_count & 0xFFFF,
        6: s.good_count >> 16,
        7: s.meas_seq >> 16,
        8: s.meas_seq & 0xFFFF,
        9: 0,
    }
    output = await _run_mbpoll(*base, "-r", "200", "-c", "1", "-t", "4:float", "-B", "127.0.0.1")
    assert float(_values(output)[200]) == s.speed_setpoint
    output = await _run_mbpoll(*base, "-r", "0", "-c", "1", "-t", "3:float", "-B", "127.0.0.1")
    assert float(_values(output)[0]) == pytest.approx(s.temperature, abs=1e-3)
