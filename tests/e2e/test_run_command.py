"""`edge-gateway run` as a real process: SIGTERM stops it cleanly with its state saved, and a
restart carries on counting so that ERP still gets every part exactly once.

While the gateway is down, nobody sees an order or lot change: the parts counted across such a
change go to the segment that was open before it (the documented rule), so exactness per lot is
only checked for segments with no boundary inside the outage; per machine, every part must be
booked exactly once whatever happened.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gateway.demo.broker import LocalBroker
from gateway.demo.run import demo_environment
from gateway.demo.verify import verify
from simulators.stack import SimulatorStack

pytestmark = pytest.mark.slow

DEMO_CONFIG = Path(__file__).parents[2] / "gateway" / "demo" / "demo.yaml"


def _environment(stack: SimulatorStack, broker: LocalBroker, data_dir: Path) -> dict[str, str]:
    return {**os.environ, **demo_environment(stack.ports(), broker, data_dir)}


async def _start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gateway.cli.main",
        "run",
        "--config",
        str(DEMO_CONFIG),
        "--log-level",
        "info",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


@contextlib.asynccontextmanager
async def _killed_on_exit(
    processes: list[asyncio.subprocess.Process],
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """Whatever happens in the test, no gateway process outlives it."""
    try:
        yield processes
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def _terminate(process: asyncio.subprocess.Process) -> tuple[int, str]:
    process.send_signal(signal.SIGTERM)
    _, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def _epoch(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp()


def _booked(stack: SimulatorStack, system: str) -> list[dict[str, Any]]:
    simulator = next(s for s in stack.business if system == s.SYSTEM)
    return [dict(b.document) for b in simulator.ledger]


async def test_sigterm_saves_state_and_restart_continues(tmp_path: Path) -> None:
    async with (
        LocalBroker() as broker,
        SimulatorStack(speed=60.0, seed=3, paused=True) as stack,
        _killed_on_exit([]) as processes,
    ):
        env = _environment(stack, broker, tmp_path / "data")
        first = await _start(env)
        processes.append(first)
        await asyncio.sleep(3.0)  # connect before production starts
        await stack.plant_simulator.plant.start()
        async with asyncio.timeout(60):
            while len(_booked(stack, "erp")) < 3:
                await asyncio.sleep(0.2)
        outage_start = time.time()
        code, log = await _terminate(first)
        assert code == 0, log[-3000:]
        assert "Traceback" not in log
        assert "stopped" in log
        with sqlite3.connect(tmp_path / "data" / "outbox.db") as db:
            saved = {name for (name,) in db.execute("SELECT name FROM processor_state")}
        assert saved >= {  # every work report and lot quality processor (others may save too)
            f"{kind}.M{i}" for kind in ("work_report", "lot_quality") for i in (1, 2, 3)
        }

        second = await _start(env)  # production went on meanwhile
        processes.append(second)
        await asyncio.sleep(3.0)  # connected again
        outage_end = time.time()
        async with asyncio.timeout(90):
            await stack.plant_simulator.plant.wait_finished()
        async with asyncio.timeout(30):  # the last polls and deliveries: 9 final confirmations
            while sum(1 for d in _booked(stack, "erp") if d["final"]) < 9:
                await asyncio.sleep(0.2)
        code, log = await _terminate(second)
        assert code == 0, log[-3000:]
        assert "resumed from its saved state" in log

        truth = [
            {"machine": machine, **segment}
            for machine, segments in stack.plant_simulator.plant.truth_json()["machines"].items()
            for segment in segments
        ]
        erp = _booked(stack, "erp")
        made, booked = Counter[str](), Counter[str]()
        for segment in truth:
            made[segment["machine"]] += segment["good"] + segment["scrap"]
        for confirmation in erp:
            booked[confirmation["machine"]] += confirmation["good"] + confirmation["scrap"]
        assert booked == made

        def boundary_in_outage(segment: dict[str, Any]) -> bool:
            return any(
                outage_start - 0.5 <= _epoch(segment[edge]) <= outage_end + 0.5
                for edge in ("start_wall", "end_wall")
            )

        clean = [s for s in truth if not boundary_in_outage(s)]
        lots = {(s["machine"], s["lot"]) for s in clean}
        verdict = verify(clean, [d for d in erp if (d["machine"], d["lot"]) in lots], [], [], [], 1)
        erp_problems = [p for p in verdict.problems if p.startswith("ERP good")]
        assert erp_problems == [], "\n".join(erp_problems)
        assert len(lots) >= 12
