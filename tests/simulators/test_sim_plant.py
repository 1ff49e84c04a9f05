"""The plant model, stepped by hand (no sockets): determinism, truth, counters, pauses."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from simulators.model import MachineSnapshot, PackMLState, Reason, SetpointError
from simulators.plant import Plant, PlantUpdate, UnknownMachineError
from simulators.scenario import MachineSpec, OrderSpec, Scenario, ScenarioError

# One poll every 100 ms of real time at speed 60.
POLL_100MS_S = 6.0
_COUNT32 = 2**32


def _run_to_end(plant: Plant, step_s: float = 1.2, limit_s: float = 10_000.0) -> None:
    while not plant.finished and plant.time_s < limit_s:
        plant.advance(step_s)
    assert plant.finished, "the demo scenario did not finish"


def _truth_without_clock(plant: Plant) -> dict[str, list[dict[str, Any]]]:
    wall = {"start", "end", "start_wall", "end_wall"}
    return {
        name: [{k: v for k, v in s.as_dict().items() if k not in wall} for s in segments]
        for name, segments in plant.truth().items()
    }


def _values(snapshot: MachineSnapshot) -> tuple[Any, ...]:
    return (
        snapshot.state,
        snapshot.reason,
        snapshot.good_count,
        snapshot.scrap_count,
        snapshot.meas_seq,
        snapshot.order,
        snapshot.lot,
        snapshot.measurements,
        snapshot.temperature,
        snapshot.pressure,
        snapshot.speed,
    )


def test_same_seed_gives_the_same_run_whatever_the_tick_sequence() -> None:
    regular = Plant(Scenario.demo(), seed=7)
    jittery = Plant(Scenario.demo(), seed=7)
    steps = np.random.default_rng(99).uniform(0.01, 9.0, size=5000)
    regular_end = 0.0
    for step in steps:
        jittery.advance(float(step))
        regular_end += float(step)
        if jittery.time_s > 1500:
            break
    while regular.time_s + 1.2 < regular_end:
        regular.advance(1.2)
    regular.advance_to(regular_end)
    assert regular.time_s == pytest.approx(jittery.time_s)
    assert _truth_without_clock(regular) == _truth_without_clock(jittery)
    for name in regular.machines:
        assert _values(regular.snapshot(name)) == _values(jittery.snapshot(name))


def test_other_seed_gives_another_run() -> None:
    first, second = Plant(seed=1), Plant(seed=2)
    first.advance_to(1500.0)
    second.advance_to(1500.0)
    assert _truth_without_clock(first) != _truth_without_clock(second)


def test_demo_finishes_with_three_orders_of_two_lots_per_machine() -> None:
    plant = Plant(Scenario.demo(), seed=1)
    _run_to_end(plant)
    # about 40 s of real time at speed 60
    assert 30 * 60 <= plant.time_s <= 50 * 60
    for name, segments in plant.truth().items():
        assert len(segments) == 6, name
        assert len({(s.order, s.lot) for s in segments}) == 6
        assert len({s.order for s in segments}) == 3
        for segment in segments:
            assert segment.complete
            assert 150 <= segment.good + segment.scrap <= 250
            assert segment.start_s < segment.end_s
        snapshot = plant.snapshot(name)
        assert (snapshot.state, snapshot.reason) == (PackMLState.IDLE, Reason.NO_ORDER)
        assert (snapshot.order, snapshot.operation, snapshot.material, snapshot.lot) == (
            "",
            "",
            "",
            "",
        )


@pytest.mark.parametrize("attribute_to", ["new", "old"])
def test_a_100ms_poller_attributes_every_part_to_its_lot_exactly(attribute_to: str) -> None:
    """Counter deltas, attributed to the lot shown at each poll, equal the truth (16-bit wrap
    on M1, PLC restart on M2 included), whether a poller attributes the parts seen together with
    new order/lot numbers to the new lot or to the old one: no part is made near the switch.
    """
    plant = Plant(Scenario.demo(), seed=3)
    seen: dict[tuple[str, str, str], list[int]] = {}
    last = {name: plant.snapshot(name) for name in plant.machines}
    restarts = dict.fromkeys(plant.machines, 0)
    while not plant.finished:
        plant.advance(POLL_100MS_S)
        for name in plant.machines:
            before, now = last[name], plant.snapshot(name)
            good = (now.good_count16 - before.good_count16) % 65536
            scrap = now.scrap_count - before.scrap_count
            if now.meas_seq < before.meas_seq:  # PLC restart: counting starts again at 0
                restarts[name] += 1
                good, scrap = now.good_count16, now.scrap_count
            shown = now if attribute_to == "new" else before
            if good or scrap:
                assert shown.order, f"{name} made parts without an order"
                totals = seen.setdefault((name, shown.order, shown.lot), [0, 0])
                totals[0] += good
                totals[1] += scrap
            last[name] = now
    truth = {
        (s.machine, s.order, s.lot): [s.good, s.scrap]
        for segments in plant.truth().values()
        for s in segments
    }
    assert seen == truth
    assert restarts == {"M1": 0, "M2": 1, "M3": 0}


def test_truth_totals_equal_the_counter_deltas() -> None:
    plant = Plant(Scenario.demo(), seed=1)
    _run_to_end(plant)
    for spec in plant.scenario.machines:
        if spec.plc_restarts_s:
            continue
        snapshot = plant.snapshot(spec.name)
        segments = plant.truth()[spec.name]
        assert sum(s.good for s in segments) == snapshot.good_count - spec.initial_good
        assert sum(s.scrap for s in segments) == snapshot.scrap_count - spec.initial_scrap
        made = sum(s.good + s.scrap for s in segments)
        assert made == snapshot.meas_seq - spec.initial_meas_seq


def test_good_count_wraps_at_16_bits_on_m1() -> None:
    plant = Plant(Scenario.demo(), seed=1)
    first = plant.snapshot("M1")
    assert first.good_count16 == 65400
    wrapped = False
    previous = first.good_count16
    while plant.time_s < 900:
        plant.advance(POLL_100MS_S)
        snapshot = plant.snapshot("M1")
        assert snapshot.good_count16 == snapshot.good_count % 65536
        assert snapshot.good_count < _COUNT32
        if snapshot.good_count16 < previous:
            wrapped = True
            assert snapshot.good_count >= 65536
        previous = snapshot.good_count16
    assert wrapped


def test_scheduled_plc_restart_resets_counters_but_not_the_order() -> None:
    plant = Plant(Scenario.demo(), seed=1)
    (restart_s,) = plant.scenario.machine("M2").plc_restarts_s
    plant.advance_to(restart_s - 0.001)
    before = plant.snapshot("M2")
    assert before.state == PackMLState.EXECUTE
    assert before.good_count > 100
    plant.advance_to(restart_s + 0.001)
    down = plant.snapshot("M2")
    # the PLC is restarting: the machine is held, the counters still show their last values
    assert (down.state, down.reason) == (PackMLState.HELD, Reason.ELECTRICAL_FAULT)
    assert down.meas_seq == before.meas_seq
    plant.advance_to(restart_s + plant.scenario.plc_restart_s + 0.001)
    after = plant.snapshot("M2")
    assert (after.good_count, after.scrap_count, after.meas_seq) == (0, 0, 0)
    assert after.measurements == (0.0,) * 32
    assert after.state == PackMLState.EXECUTE
    assert (after.order, after.operation, after.material, after.lot) == (
        before.order,
        before.operation,
        before.material,
        before.lot,
    )
    plant.advance(60.0)
    assert plant.snapshot("M2").meas_seq > 0
    assert plant.snapshot("M2").order == before.order


def test_restart_plc_command_and_unknown_machine() -> None:
    plant = Plant(seed=1)
    plant.advance_to(200.0)
    before = plant.snapshot("M3")
    plant.restart_plc("M3")
    after = plant.snapshot("M3")
    assert (after.good_count, after.scrap_count, after.meas_seq) == (0, 0, 0)
    assert (after.order, after.lot) == (before.order, before.lot)
    with pytest.raises(UnknownMachineError):
        plant.restart_plc("M9")
    with pytest.raises(UnknownMachineError):
        plant.machine_name(4)


def test_no_part_is_made_in_pauses_and_lot_changes_last_half_a_second_at_speed_60() -> None:
    plant = Plant(Scenario.demo(), seed=1)
    pauses: dict[int, list[float]] = {}
    parts: list[tuple[str, float]] = []
    plant.add_listener(lambda u: parts.extend((p.machine, p.time_s) for p in u.parts))
    last = {name: plant.snapshot(name) for name in plant.machines}
    while not plant.finished:
        plant.advance(1.0)
        for name in plant.machines:
            before, now = last[name], plant.snapshot(name)
            if before.state != PackMLState.EXECUTE and now.state_since_s == before.state_since_s:
                assert now.meas_seq == before.meas_seq, f"{name} made a part while paused"
            if before.state != now.state and before.state != PackMLState.EXECUTE:
                pauses.setdefault(before.reason, []).append(
                    now.state_since_s - before.state_since_s
                )
            last[name] = now
    assert parts, "the listener saw no parts"
    assert min(pauses[Reason.LOT_CHANGE]) >= 30.0  # 0.5 s real time at speed 60
    assert min(pauses[Reason.CHANGEOVER]) >= 120.0
    assert len(pauses[Reason.LOT_CHANGE]) == 9
    assert len(pauses[Reason.CHANGEOVER]) == 6
    held = [r for r in pauses if 100 <= r <= 103]
    blocked = [r for r in pauses if r in (Reason.BLOCKED, Reason.STARVED)]
    # random downtimes, plus M2's scheduled PLC restart (Held, 102)
    assert sum(len(pauses[r]) for r in held) >= 2, "no random downtime in the demo"
    assert blocked, "no blocked/starved period in the demo"


def test_measurement_ring_buffer_holds_the_last_32_parts() -> None:
    plant = Plant(seed=1)
    values: list[float] = []
    plant.add_listener(lambda u: values.extend(p.value for p in u.parts if p.machine == "M2"))
    plant.advance_to(300.0)
    snapshot = plant.snapshot("M2")
    assert snapshot.meas_seq == len(values) > 32
    for offset in range(32):
        seq = snapshot.meas_seq - offset
        assert snapshot.measurements[(seq - 1) % 32] == values[seq - 1]
    assert snapshot.last_measurement == values[-1]
    assert all(9.9 < v < 10.1 for v in values)


def test_speed_setpoint_changes_the_cycle_time() -> None:
    scenario = Scenario(
        name="one",
        machines=(
            MachineSpec(
                "M1",
                (OrderSpec("1", "0010", "FG-1", 10_000, 10_000),),
                downtime_probability=0.0,
                blocked_probability=0.0,
            ),
        ),
    )
    plant = Plant(scenario)
    plant.advance_to(60.0)
    assert plant.snapshot("M1").meas_seq == 30  # 2 s cycle
    plant.set_speed_setpoint("M1", 120.0)
    assert plant.snapshot("M1").speed_setpoint == 120.0
    plant.advance_to(120.0)
    # the cycle started at 60 s still takes 2 s; then a part every 0.5 s from 62 s to 120 s
    assert plant.snapshot("M1").meas_seq == 30 + 1 + (120 - 62) * 2
    for bad in (0.5, 121.0, float("nan")):
        with pytest.raises(SetpointError):
            plant.set_speed_setpoint("M1", bad)


def test_endless_scenario_keeps_bringing_fresh_orders() -> None:
    plant = Plant(Scenario.endless(), seed=1)
    plant.advance_to(2 * 3600.0)
    assert not plant.finished
    segments = plant.truth()["M1"]
    assert len(segments) > 12
    lots = [(s.order, s.lot) for s in segments]
    assert len(set(lots)) == len(lots)
    assert len({s.lot for segs in plant.truth().values() for s in segs}) == sum(
        len(segs) for segs in plant.truth().values()
    )


def test_scenario_validation() -> None:
    order = OrderSpec("1", "0010", "FG-1", 10, 5)
    with pytest.raises(ScenarioError):
        replace(order, order="X" * 17)
    with pytest.raises(ScenarioError):
        replace(order, quantity=0)
    with pytest.raises(ScenarioError):
        MachineSpec("M1", (order,), downtime_probability=1.5)
    with pytest.raises(ScenarioError):
        Scenario("bad", (MachineSpec("M1", (order,)), MachineSpec("M1", (order,))))
    with pytest.raises(ScenarioError):
        Scenario.by_name("nope")
    assert order.lot_sizes() == (5, 5)
    assert len(order.lot_number(0)) <= 10


async def test_the_clock_task_runs_the_scenario_in_real_time() -> None:
    updates: list[PlantUpdate] = []
    plant = Plant(Scenario.demo(), speed=6000.0, seed=1)
    plant.add_listener(updates.append)
    loop = asyncio.get_running_loop()
    started = loop.time()
    async with plant:
        await asyncio.wait_for(plant.wait_finished(), timeout=10.0)
        elapsed = loop.time() - started
    assert plant.finished
    assert not plant.running
    # the demo takes about 2400 scenario seconds: 0.4 s at speed 6000
    assert plant.time_s / 6000.0 == pytest.approx(elapsed, abs=0.3)
    assert sum(len(u.parts) for u in updates) == sum(
        s.good + s.scrap for segs in plant.truth().values() for s in segs
    )
    versions = [u.version for u in updates]
    assert versions == sorted(versions)
    truth = plant.truth_json()
    assert truth["finished"] is True
    first = truth["machines"]["M1"][0]
    assert first["start"].endswith("Z")
    assert first["start_wall"] < first["end_wall"]
