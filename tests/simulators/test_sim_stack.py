"""The whole stack in process, its plant control API, and ``python -m simulators`` as a process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
from asyncua.client.client import Client
from pymodbus.client import AsyncModbusTcpClient

from simulators.opcua_plc import NAMESPACE_URI
from simulators.stack import SimulatorStack

TIMEOUT = aiohttp.ClientTimeout(total=5.0)
REPO = Path(__file__).resolve().parents[2]


async def _get(http: aiohttp.ClientSession, url: str) -> Any:
    async with http.get(url) as response:
        assert response.status == 200, url
        return await response.json()


async def test_stack_starts_everything_and_reports_its_ports() -> None:
    async with (
        SimulatorStack(speed=60.0, seed=1) as stack,
        aiohttp.ClientSession(timeout=TIMEOUT) as http,
    ):
        ports = stack.ports()
        assert json.loads(json.dumps(ports)) == ports
        assert set(ports) == {"modbus", "opcua", "plant_control", "erp", "wms", "qms"}
        assert ports["modbus"]["host"] == "127.0.0.1"
        assert ports["opcua"]["endpoint"] == f"opc.tcp://127.0.0.1:{stack.opcua.port}/"
        for system in ("erp", "wms", "qms"):
            assert set(ports[system]) == {"url", "control_url"}
            health = await _get(http, ports[system]["url"] + "/health")
            assert health["system"] == system
            faults = await _get(http, ports[system]["control_url"] + "/_control/faults")
            assert faults["down"] is False
        all_ports = {ports["modbus"]["port"], stack.opcua.port} | {
            int(url.rsplit(":", 1)[1])
            for url in (
                ports["plant_control"],
                *(ports[s][k] for s in ("erp", "wms", "qms") for k in ("url", "control_url")),
            )
        }
        assert len(all_ports) == 9, "every server needs its own port"

        modbus = AsyncModbusTcpClient("127.0.0.1", port=ports["modbus"]["port"], timeout=3)
        assert await modbus.connect()
        try:
            state = await modbus.read_holding_registers(0, count=1, device_id=1)
            assert state.registers[0] in (4, 5, 6, 11)
        finally:
            modbus.close()
        async with Client(ports["opcua"]["endpoint"], timeout=4) as opcua:
            assert await opcua.get_namespace_index(NAMESPACE_URI) >= 1

        control = ports["plant_control"] + "/_control"
        state = await _get(http, control + "/state")
        assert set(state["machines"]) == {"M1", "M2", "M3"}
        await asyncio.sleep(0.3)
        async with http.post(control + "/restart-plc", json={"machine": "M3"}) as response:
            assert response.status == 200
        m3 = (await _get(http, control + "/state"))["machines"]["M3"]
        assert m3["meas_seq"] < 20
        assert m3["order"] == "1000301"
        async with http.post(control + "/restart-plc", json={"machine": "M7"}) as response:
            assert response.status == 404
        async with http.post(control + "/restart-plc", json={}) as response:
            assert response.status == 400
        truth = await _get(http, control + "/truth")
        assert truth["finished"] is False
        assert truth["machines"]["M1"][0]["lot"] == "L100010101"

        async with http.post(
            control + "/faults", json={"protocol": "modbus", "error_rate": 1.0}
        ) as response:
            assert response.status == 200
            faults = await response.json()
        assert faults["modbus"]["error_rate"] == 1.0
        assert faults["opcua"]["error_rate"] == 0.0
        async with http.post(control + "/faults", json={"latency_ms": 5}) as response:
            faults = await response.json()
        assert faults["modbus"]["latency_ms"] == faults["opcua"]["latency_ms"] == 5.0
        async with http.post(control + "/faults", json={"protocol": "mqtt"}) as response:
            assert response.status == 400
        async with http.delete(control + "/faults?protocol=modbus") as response:
            faults = await response.json()
        assert faults["modbus"]["error_rate"] == 0.0
        assert faults["opcua"]["latency_ms"] == 5.0
        stats = await _get(http, control + "/stats")
        assert stats["modbus"]["requests"] >= 1
        assert stats["opcua"]["reads"] >= 1


async def test_cli_simulate_all_writes_the_ports_file_and_stops_on_sigterm(
    tmp_path: Path,
) -> None:
    ports_file = tmp_path / "ports.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "simulators",
        "simulate",
        "all",
        "--ports-file",
        str(ports_file),
        "--speed",
        "60",
        "--paused",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        files: list[str] = []
        for _ in range(300):
            files = await asyncio.to_thread(os.listdir, tmp_path)
            if "ports.json" in files or process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        assert files == ["ports.json"], "no ports file after 15 s, or a temporary file left"
        ports = json.loads(await asyncio.to_thread(ports_file.read_text))
        assert set(ports) == {"modbus", "opcua", "plant_control", "erp", "wms", "qms"}
        async with aiohttp.ClientSession(timeout=TIMEOUT) as http:
            assert (await _get(http, ports["qms"]["url"] + "/health"))["system"] == "qms"
            control = ports["plant_control"] + "/_control"
            state = await _get(http, control + "/state")
            assert (state["speed"], state["running"], state["time_s"]) == (60.0, False, 0.0)
            async with http.post(control + "/start") as response:
                assert response.status == 200
            await asyncio.sleep(0.2)
            state = await _get(http, control + "/state")
            assert state["running"] is True
            assert state["time_s"] > 6.0
        process.send_signal(signal.SIGTERM)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=15)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, stderr.decode()
    assert json.loads(stdout) == ports
    assert not await asyncio.to_thread(ports_file.exists)
