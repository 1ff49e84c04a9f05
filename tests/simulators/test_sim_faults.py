"""Fault injection: settings validation, HTTP and Modbus faults, the control API."""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusIOException

from simulators.__main__ import main as cli_main
from simulators.business import ErpSimulator, WmsSimulator
from simulators.faults import FaultError, Faults, FaultSettings
from simulators.modbus_plc import ModbusPlc
from simulators.plant import Plant

TIMEOUT = aiohttp.ClientTimeout(total=5.0)
GOODS_RECEIPT = {
    "material": "FG-4711",
    "lot": "L1",
    "quantity": 3,
    "unit": "PCE",
    "source_location": "Line1",
}


@pytest_asyncio.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=TIMEOUT) as session:
        yield session


# ------------------------------------------------------------------------------ settings
@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"latency_ms": -1}, "latency_ms"),
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": -0.1}, "error_rate"),
        ({"drop_rate": 2}, "drop_rate"),
        ({"down_for_s": -3}, "down_for_s"),
        ({"latency_ms": math.nan}, "latency_ms"),
        ({"latency_ms": "100"}, "latency_ms"),
        ({"error_rate": True}, "error_rate"),
        ({"jitter_ms": 5}, "jitter_ms"),
    ],
)
def test_invalid_fault_settings_are_rejected_with_the_field(
    values: dict[str, Any], field: str
) -> None:
    with pytest.raises(FaultError, match=f"^{field}: "):
        FaultSettings.from_mapping(values)


def test_faults_attributes_validate_and_down_expires() -> None:
    faults = Faults(FaultSettings(latency_ms=5, error_rate=0.25))
    assert (faults.latency_ms, faults.error_rate, faults.drop_rate) == (5, 0.25, 0)
    with pytest.raises(FaultError):
        faults.error_rate = 3
    assert faults.error_rate == 0.25
    faults.down_for(0.05)
    assert faults.is_down()
    assert 0 < faults.down_remaining_s() <= 0.05
    faults.clear()
    assert not faults.is_down()
    assert faults.as_dict() == {
        "latency_ms": 0.0,
        "error_rate": 0.0,
        "drop_rate": 0.0,
        "down_for_s": 0.0,
        "down": False,
    }
    always = Faults(FaultSettings(error_rate=1.0, drop_rate=1.0))
    assert always.roll_error()
    assert always.roll_drop()
    never = Faults()
    assert not any(never.roll_error() or never.roll_drop() for _ in range(100))


@pytest.mark.parametrize(
    "argv",
    [
        ["simulate", "erp", "--error-rate", "2"],
        ["simulate", "wms", "--latency-ms", "-5"],
        ["simulate", "plant", "--drop-rate", "x"],
        ["simulate", "all", "--down-for", "-1"],
        ["simulate", "qms", "--port", "70000"],
        ["simulate", "all", "--speed", "0"],
        ["simulate", "plant", "--scenario", "nope"],
    ],
)
def test_command_line_rejects_bad_values(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli_main(argv)
    assert exit_info.value.code == 2
    assert "error: argument" in capsys.readouterr().err


# ------------------------------------------------------------------------------ HTTP
async def test_http_latency_is_measurable(http: aiohttp.ClientSession) -> None:
    async with WmsSimulator(faults=FaultSettings(latency_ms=200)) as wms:
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with http.get(wms.url + "/health") as response:
            assert response.status == 200
        assert loop.time() - started >= 0.2
        started = loop.time()
        async with http.get(wms.control_url + "/_control/faults") as response:
            assert response.status == 200
        assert loop.time() - started < 0.2, "the control routes must not be delayed"


async def test_http_error_rate_one_answers_503_and_books_nothing(
    http: aiohttp.ClientSession,
) -> None:
    async with WmsSimulator(faults=FaultSettings(error_rate=1.0)) as wms:
        url = wms.url + "/api/v1/goods-receipts"
        async with http.post(url, json=GOODS_RECEIPT, headers={"Idempotency-Key": "a"}) as r:
            assert r.status == 503
            assert "error" in await r.json()
        assert len(wms.ledger) == 0
        async with http.get(wms.url + "/_control/stats") as response:
            stats = await response.json()
        assert stats["injected"]["error"] == 1
        async with http.delete(wms.url + "/_control/faults") as response:
            assert (await response.json())["error_rate"] == 0.0
        async with http.post(url, json=GOODS_RECEIPT, headers={"Idempotency-Key": "a"}) as r:
            assert r.status == 201


async def test_http_drop_closes_the_connection_after_booking(
    http: aiohttp.ClientSession,
) -> None:
    async with WmsSimulator(faults=FaultSettings(drop_rate=1.0)) as wms:
        url = wms.url + "/api/v1/goods-receipts"
        headers = {"Idempotency-Key": "dropped"}
        with pytest.raises(aiohttp.ServerDisconnectedError):
            async with http.post(url, json=GOODS_RECEIPT, headers=headers):
                pass
        assert len(wms.ledger) == 1  # booked, but the client never heard of it
        wms.faults.drop_rate = 0
        async with http.post(url, json=GOODS_RECEIPT, headers=headers) as response:
            assert response.status == 200
            assert response.headers["Idempotent-Replayed"] == "true"
        assert len(wms.ledger) == 1


async def test_http_down_refuses_connections_then_recovers(
    http: aiohttp.ClientSession,
) -> None:
    async with ErpSimulator(control_port=0) as erp:
        async with http.post(
            erp.control_url + "/_control/faults", json={"down_for_s": 0.6}
        ) as response:
            assert response.status == 200
            assert (await response.json())["down"] is True
        await asyncio.sleep(0.05)
        with pytest.raises(aiohttp.ClientConnectorError):
            async with http.get(erp.url + "/health"):
                pass
        with pytest.raises(aiohttp.ClientConnectorError):  # /_control on the main port too
            async with http.get(erp.url + "/_control/faults"):
                pass
        async with http.get(erp.control_url + "/_control/faults") as response:
            state = await response.json()
        assert state["down"] is True
        assert 0 < state["down_for_s"] <= 0.6
        await asyncio.sleep(0.8)
        async with http.get(erp.url + "/health") as response:
            assert response.status == 200
        assert erp.faults.stats.down == 1


async def test_http_control_api_sets_clears_and_rejects(http: aiohttp.ClientSession) -> None:
    async with ErpSimulator(control_port=0) as erp:
        assert erp.control_url != erp.url
        for base in (erp.url, erp.control_url):
            url = base + "/_control/faults"
            async with http.post(url, json={"latency_ms": 10, "error_rate": 0.5}) as response:
                assert response.status == 200
            async with http.get(url) as response:
                state = await response.json()
            assert (state["latency_ms"], state["error_rate"]) == (10.0, 0.5)
            assert (erp.faults.latency_ms, erp.faults.error_rate) == (10.0, 0.5)
            async with http.delete(url) as response:
                assert response.status == 200
            assert (erp.faults.latency_ms, erp.faults.error_rate) == (0.0, 0.0)
        bad: list[tuple[Any, str]] = [
            ({"error_rate": 2}, "error_rate: "),
            ({"latency_ms": -1}, "latency_ms: "),
            ({"drop_rate": "lots"}, "drop_rate: "),
            ({"chaos": 1}, "chaos: "),
            ({"protocol": "modbus"}, "protocol: "),
            ([1], "body: "),
        ]
        for body, prefix in bad:
            async with http.post(erp.control_url + "/_control/faults", json=body) as response:
                assert response.status == 400, body
                assert (await response.json())["error"].startswith(prefix)
        async with http.post(erp.control_url + "/_control/faults", data=b"{oops") as response:
            assert response.status == 400
        assert erp.faults.as_dict()["error_rate"] == 0.0


# ------------------------------------------------------------------------------ Modbus
@pytest_asyncio.fixture
async def modbus() -> AsyncIterator[ModbusPlc]:
    plant = Plant()
    plant.advance_to(100.0)
    async with ModbusPlc(plant) as plc:
        yield plc


async def _client(plc: ModbusPlc, timeout: float = 2.0) -> AsyncModbusTcpClient:
    client = AsyncModbusTcpClient("127.0.0.1", port=plc.port, timeout=timeout, retries=0)
    assert await client.connect()
    return client


async def test_modbus_latency_and_error_rate(modbus: ModbusPlc) -> None:
    client = await _client(modbus)
    loop = asyncio.get_running_loop()
    try:
        modbus.faults.latency_ms = 150
        started = loop.time()
        assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
        assert loop.time() - started >= 0.15
        modbus.faults.clear()
        modbus.faults.error_rate = 1.0
        response = await client.read_holding_registers(0, count=2, device_id=1)
        assert response.isError()
        assert response.exception_code == 4
        modbus.faults.clear()
        assert not (await client.read_holding_registers(0, count=2, device_id=1)).isError()
    finally:
        client.close()
    assert modbus.stats_json()["injected"]["error"] == 1


async def test_modbus_drop_closes_the_connection(modbus: ModbusPlc) -> None:
    client = await _client(modbus, timeout=1.0)
    modbus.faults.drop_rate = 1.0
    try:
        with pytest.raises((ConnectionException, ModbusIOException)):
            await client.read_holding_registers(0, count=2, device_id=1)
    finally:
        client.close()
        modbus.faults.clear()
    assert modbus.faults.stats.drop == 1


async def test_modbus_down_refuses_connections_then_recovers_on_the_same_port(
    modbus: ModbusPlc,
) -> None:
    port = modbus.port
    connected = await _client(modbus, timeout=1.0)
    modbus.faults.down_for(0.5)
    await asyncio.sleep(0.05)
    try:
        with pytest.raises((ConnectionException, ModbusIOException)):
            await connected.read_holding_registers(0, count=1, device_id=1)
    finally:
        connected.close()
    with pytest.raises(ConnectionRefusedError):
        await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 1.0)
    await asyncio.sleep(0.6)
    assert modbus.port == port
    client = await _client(modbus)
    try:
        assert not (await client.read_holding_registers(0, count=1, device_id=2)).isError()
    finally:
        client.close()


async def test_modbus_down_from_the_start() -> None:
    plc = ModbusPlc(Plant(), faults=FaultSettings(down_for_s=0.3))
    await plc.start()
    try:
        with pytest.raises(ConnectionRefusedError):
            await asyncio.wait_for(asyncio.open_connection("127.0.0.1", plc.port), 1.0)
        await asyncio.sleep(0.45)
        _, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", plc.port), 1)
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
    finally:
        await plc.stop()
