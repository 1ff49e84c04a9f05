"""The gateway process is killed with SIGKILL at random moments, 20+ times, while completions
flow fast; restarted each time. Afterwards every simulator ledger holds each document exactly
once (compared with the outbox), every order's confirmations are in sequence, and the ERP's
quantities add up to what the plant really made.

Setup: the bundled plant (three machines behind one Modbus TCP PLC, 60 parts per second each,
a completion every 10 good parts and at every lot and order change), the ERP, WMS and QMS
simulators answering seven destinations of every profile (generic REST, SAP S/4HANA, ERPNext
for ERP and WMS, B2MML), dropping 3 % of their answers after booking. The gateway runs as a
subprocess (``edge-gateway run``), exactly as in production.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import signal
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import pytest

from gateway.outbox.store import OutboxStore
from simulators.b2mml import B2MML_COLLECTION
from simulators.erpnext import ERPNEXT_COLLECTION
from simulators.sap import SAP_COLLECTION, SAP_ROOT
from simulators.scenario import MachineSpec, OrderSpec, Scenario
from simulators.stack import SimulatorStack

KILLS = 20
SPEED = 60.0


def scenario() -> Scenario:
    def machine(number: int) -> MachineSpec:
        orders = tuple(
            OrderSpec(f"20{number}0{k}00", f"00{number}0", f"FG-{number}{k}", 900, 300)
            for k in range(1, 5)
        )
        return MachineSpec(
            f"M{number}", orders, cycle_time_s=1.0, initial_good=60_000 * (number == 1),
            downtime_probability=0.0005, blocked_probability=0.0005,
        )  # fmt: skip

    return Scenario(
        "crash",
        tuple(machine(n) for n in (1, 2, 3)),
        changeover_s=60.0,
        lot_change_s=20.0,
        downtime_s=(10.0, 30.0),
        blocked_s=(5.0, 15.0),
    )


def config(stack: SimulatorStack, data_dir: Path) -> str:
    modbus = stack.modbus.port
    erp, wms, qms = stack.erp.url, stack.wms.url, stack.qms.url
    devices = "\n".join(
        f"""  - name: M{n}
    protocol: modbus_tcp
    host: 127.0.0.1
    port: {modbus}
    unit: {n}
    timeout: 1.0
    poll_groups: [{{name: fast, interval: 0.05}}]
    tags:
      - {{name: GoodCount, address: 2, type: uint16, poll_group: fast}}
      - {{name: ScrapCount, address: 3, type: uint32, poll_group: fast}}
      - {{name: MeasSeq, address: 7, type: uint32, poll_group: fast}}
      - {{name: Order, address: 10, type: string, length: 16, poll_group: fast}}
      - {{name: Operation, address: 18, type: string, length: 4, poll_group: fast}}
      - {{name: Material, address: 20, type: string, length: 16, poll_group: fast}}
      - {{name: Lot, address: 28, type: string, length: 16, poll_group: fast}}
      - {{name: Measurements, address: 40, type: float32, count: 32, poll_group: fast}}"""
        for n in (1, 2, 3)
    )
    processors = "\n".join(
        f"""  - {{type: work_report, machine: M{n}, good: M{n}/GoodCount, scrap: M{n}/ScrapCount,
     order: M{n}/Order, operation: M{n}/Operation, material: M{n}/Material, lot: M{n}/Lot,
     triggers: [order_change, lot_change, container_full], container_quantity: 10}}
  - {{type: lot_quality, machine: M{n}, lot: M{n}/Lot, order: M{n}/Order,
     material: M{n}/Material, characteristics: [{{name: diameter, values: M{n}/Measurements,
     sequence: M{n}/MeasSeq, nominal: 10.0, lsl: 9.95, usl: 10.05, unit: mm}}]}}"""
        for n in (1, 2, 3)
    )
    fast = "retry: {initial: 0.2, maximum: 1.0}, breaker: {failures: 20, open_for: 0.5}"
    return f"""
gateway:
  id: edge-crash
  location: {{enterprise: acme, site: dallas, area: assembly, line: line1}}
  data_dir: {data_dir}
  log_level: warning
devices:
{devices}
processors:
{processors}
destinations:
  - {{name: erp, system: erp, url: "{erp}/api/v1/confirmations", concurrency: 8, {fast}}}
  - {{name: sap, profile: sap_s4hana, url: "{erp}{SAP_ROOT}", plant: "1010",
     storage_location: FG01, auth: {{type: basic, username: GATEWAY, password: secret}},
     concurrency: 8, {fast}}}
  - {{name: erpnext, profile: erpnext, url: "{erp}", api_key: gateway, api_secret: secret,
     company: Edge Manufacturing, from_warehouse: Work In Progress - EM,
     to_warehouse: Finished Goods - EM, concurrency: 8, {fast}}}
  - {{name: wms, system: wms, url: "{wms}/api/v1/goods-receipts", concurrency: 8, {fast}}}
  - {{name: wms-erpnext, profile: erpnext, system: wms, url: "{wms}", api_key: gateway,
     api_secret: secret, company: Edge Manufacturing, from_warehouse: Line Output - EM,
     to_warehouse: Stores - EM, concurrency: 8, {fast}}}
  - {{name: qms, system: qms, url: "{qms}/api/v1/inspection-results", concurrency: 8, {fast}}}
  - {{name: qms-b2mml, profile: b2mml, url: "{qms}/b2mml", documents: [lot_result],
     concurrency: 8, {fast}}}
"""


LEDGERS = {
    "erp": ("erp", ("confirmations",)),
    "sap": ("erp", (SAP_COLLECTION,)),
    "erpnext": ("erp", (ERPNEXT_COLLECTION,)),
    "wms": ("wms", ("goods-receipts",)),
    "wms-erpnext": ("wms", (ERPNEXT_COLLECTION,)),
    "qms": ("qms", ("inspection-results",)),
    "qms-b2mml": ("qms", (B2MML_COLLECTION,)),
}


async def start_gateway(config_path: Path, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as stderr:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli.main", "run", "--config", str(config_path),
            stdout=asyncio.subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip


def counts(database: Path) -> dict[str, dict[str, int]]:
    """Per destination, deliveries per state."""
    if not database.exists():
        return {}
    store = OutboxStore(database)
    try:
        return store.counts()
    finally:
        store.close()


@pytest.mark.slow
async def test_sigkill_at_random_moments_books_everything_exactly_once(tmp_path: Path) -> None:
    rng = random.Random(20261122)
    data_dir = tmp_path / "data"
    database = data_dir / "outbox.db"
    log = tmp_path / "gateway.log"
    async with SimulatorStack(scenario(), speed=SPEED, seed=7, paused=True) as stack:
        for sim in stack.business:
            sim.faults.drop_rate = 0.03  # booked, but the answer is lost
        config_path = tmp_path / "gateway.yaml"
        config_path.write_text(config(stack, data_dir))
        gateway = await start_gateway(config_path, log)
        await asyncio.sleep(4.0)  # connected and polling before the first part is made
        await stack.plant.start()
        kills = 0
        try:
            while kills < KILLS:
                await asyncio.sleep(rng.uniform(0.8, 3.5))
                assert gateway.returncode is None, log.read_text()[-3000:]
                gateway.send_signal(signal.SIGKILL)
                await gateway.wait()
                assert gateway.returncode == -signal.SIGKILL
                kills += 1
                gateway = await start_gateway(config_path, log)
            assert not stack.plant.finished, "the plant finished before all kills: too slow"
            # the last run: until the plant is done and every destination has everything
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                await asyncio.sleep(0.5)
                now = counts(database)
                idle = all(c.get("pending", 0) + c.get("dead", 0) == 0 for c in now.values())
                if stack.plant.finished and idle and set(now) == set(LEDGERS):
                    await asyncio.sleep(2.0)  # the last completions after the final order
                    if all(
                        c.get("pending", 0) == 0 for c in counts(database).values()
                    ) and _erp_matches_truth(stack):
                        break
            else:
                pytest.fail(f"not drained: {counts(database)}\n{log.read_text()[-3000:]}")
        finally:
            if gateway.returncode is None:
                gateway.send_signal(signal.SIGTERM)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(gateway.wait(), 20)
                if gateway.returncode is None:
                    gateway.kill()
                    await gateway.wait()
        assert gateway.returncode == 0, log.read_text()[-3000:]
        assert len(stack.erp.ledger.by_collection("confirmations")) >= 500  # flowing fast
        assert sum(sim.faults.stats.drop for sim in stack.business) > 0  # answers were lost
        _check_ledgers(stack, database)
        _check_truth(stack)
    assert kills >= KILLS


def _erp_matches_truth(stack: SimulatorStack) -> bool:
    truth = _truth(stack)
    booked: Counter[str] = Counter()
    for booking in stack.erp.ledger.by_collection("confirmations"):
        booked[booking.document["machine"]] += booking.document["good"]
    return all(booked[m] == good for m, (good, _) in truth.items())


def _truth(stack: SimulatorStack) -> dict[str, tuple[int, int]]:
    totals: dict[str, tuple[int, int]] = {}
    for machine, segments in stack.plant.truth().items():
        made = [s for s in segments if s.order]
        totals[machine] = (sum(s.good for s in made), sum(s.scrap for s in made))
    return totals


def _check_ledgers(stack: SimulatorStack, database: Path) -> None:
    store = OutboxStore(database)
    try:
        rows = store.listing(limit=10**7)
    finally:
        store.close()
    assert rows, "nothing was stored"
    assert {r.state for r in rows} == {"delivered"}, Counter(r.state for r in rows)
    expected: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if not row.reference.startswith("skipped: "):
            expected[row.destination].add(row.document.key)
    sims = {"erp": stack.erp, "wms": stack.wms, "qms": stack.qms}
    for destination, (system, collections) in LEDGERS.items():
        keys = [
            b.idempotency_key
            for collection in collections
            for b in sims[system].ledger.by_collection(collection)
        ]
        duplicated = {k: n for k, n in Counter(keys).items() if n > 1}
        assert not duplicated, f"{destination}: booked more than once: {duplicated}"
        assert set(keys) == expected[destination], (
            f"{destination}: lost {len(expected[destination] - set(keys))}, "
            f"unexpected {len(set(keys) - expected[destination])}"
        )
        assert keys, f"{destination} got nothing"
    # every order's confirmations arrived in sequence
    sequences: dict[str, list[int]] = defaultdict(list)
    for booking in stack.erp.ledger.by_collection("confirmations"):
        sequences[booking.document["order"]].append(booking.document["sequence"])
    for order, numbers in sequences.items():
        assert numbers == sorted(numbers), order


def _check_truth(stack: SimulatorStack) -> None:
    truth = _truth(stack)
    good: Counter[str] = Counter()
    scrap: Counter[str] = Counter()
    for booking in stack.erp.ledger.by_collection("confirmations"):
        good[booking.document["machine"]] += booking.document["good"]
        scrap[booking.document["machine"]] += booking.document["scrap"]
    for machine, (made_good, made_scrap) in truth.items():
        assert (good[machine], scrap[machine]) == (made_good, made_scrap), machine
    # SAP and ERPNext booked the same good quantities per order as the generic ERP
    per_order: Counter[str] = Counter()
    for booking in stack.erp.ledger.by_collection("confirmations"):
        per_order[booking.document["order"]] += booking.document["good"]
    sap: Counter[str] = Counter()
    for booking in stack.erp.ledger.by_collection(SAP_COLLECTION):
        sap[booking.document["OrderID"]] += int(
            float(booking.document["ConfirmationYieldQuantity"])
        )
    erpnext: Counter[str] = Counter()
    for booking in stack.erp.ledger.by_collection(ERPNEXT_COLLECTION):
        erpnext[booking.document["work_order"]] += int(booking.document["fg_completed_qty"])
    assert +sap == +per_order
    assert +erpnext == +per_order
