"""One simulated machine, advanced event by event in scenario time.

The machine is a small discrete-event model: parts complete one cycle apart, and after each
part the machine may stop (held or blocked/starved) or, at the end of a lot, pause for a lot
change or a changeover. Every random draw comes from the machine's own generator in event order,
so the outcome depends only on the seed and the scenario, never on how the caller slices time.
"""

from __future__ import annotations

import enum
import math
from dataclasses import replace

import numpy as np

from .model import (
    MEASUREMENT_SLOTS,
    SPEED_SETPOINT_MAX,
    SPEED_SETPOINT_MIN,
    MachineSnapshot,
    PackMLState,
    PartEvent,
    Reason,
    Segment,
    SetpointError,
)
from .scenario import MachineSpec, OrderSpec, Scenario

__all__ = ["Machine"]

_U32 = 2**32
_DOWNTIME_REASONS = (
    Reason.JAM,
    Reason.TOOL_BREAKAGE,
    Reason.ELECTRICAL_FAULT,
    Reason.OPERATOR_STOP,
)


class _Phase(enum.Enum):
    RUNNING = "running"
    PAUSED = "paused"
    WRAP_UP = "wrap-up"
    DONE = "done"


class Machine:
    """A machine working through its orders. Not thread-safe; driven by :class:`Plant`."""

    def __init__(self, scenario: Scenario, spec: MachineSpec, unit_id: int, seed: int) -> None:
        self.spec = spec
        self.name = spec.name
        self.unit_id = unit_id
        self._scenario = scenario
        self._meas = scenario.measurement
        parts_seq, process_seq = np.random.SeedSequence([seed, unit_id]).spawn(2)
        self._rng = np.random.default_rng(parts_seq)
        self._pv_rng = np.random.default_rng(process_seq)
        self._time_s = 0.0
        self._setpoint = 60.0 / spec.cycle_time_s  # parts per minute
        self._cycle_s = spec.cycle_time_s
        self._restarts = sorted(spec.plc_restarts_s)
        # counters (32 bit)
        self._good = spec.initial_good
        self._scrap = spec.initial_scrap
        self._meas_seq = spec.initial_meas_seq
        self._ring = [0.0] * MEASUREMENT_SLOTS
        self._last_measurement = 0.0
        # work
        self._order_index = 0
        self._lot_index = 0
        self._order: OrderSpec | None = scenario.order_for(spec, 0)
        self._parts_in_lot = 0
        self._segments: list[Segment] = []
        self._segment: Segment | None = None
        self._shown = ("", "", "", "")
        self._state = PackMLState.IDLE
        self._reason = Reason.NO_ORDER
        self._phase = _Phase.DONE
        self._next_s = math.inf
        self._switch_s = math.inf  # when the next job's order and lot numbers appear
        self._pending_job = False
        self._reset_on_resume = False
        # process values
        self._temperature_base = 24.0
        self._temperature = 24.0
        self._pressure = 1.0
        self._speed = 0.0
        self._next_process_s = 0.0
        # change times
        self._state_since_s = 0.0
        self._job_since_s = 0.0
        self._counts_at_s = 0.0
        self._process_at_s = 0.0
        self._measurement_at_s = 0.0
        self._snapshot: MachineSnapshot | None = None
        if self._order is not None:
            self._start_job(0.0)
        self._update_process(0.0)

    # ------------------------------------------------------------------ queries
    @property
    def time_s(self) -> float:
        """Scenario time up to which the machine has been simulated."""
        return self._time_s

    @property
    def done(self) -> bool:
        """True once the machine has finished its last order and cleared it."""
        return self._phase is _Phase.DONE

    @property
    def speed_setpoint(self) -> float:
        """Parts per minute; the cycle time is 60 / setpoint seconds."""
        return self._setpoint

    def segments(self) -> tuple[Segment, ...]:
        """Every segment so far, the current one last (its ``end_s`` is its last part)."""
        if self._segment is None:
            return tuple(self._segments)
        return (*self._segments, self._segment)

    def snapshot(self) -> MachineSnapshot:
        """The current values; the same object until something changes."""
        if self._snapshot is None:
            order, operation, material, lot = self._shown
            self._snapshot = MachineSnapshot(
                name=self.name,
                unit_id=self.unit_id,
                time_s=self._time_s,
                state=int(self._state),
                reason=int(self._reason),
                good_count=self._good,
                scrap_count=self._scrap,
                meas_seq=self._meas_seq,
                order=order,
                operation=operation,
                material=material,
                lot=lot,
                temperature=self._temperature,
                pressure=self._pressure,
                speed=self._speed,
                speed_setpoint=self.speed_setpoint,
                last_measurement=self._last_measurement,
                measurements=tuple(self._ring),
                state_since_s=self._state_since_s,
                job_since_s=self._job_since_s,
                counts_at_s=self._counts_at_s,
                process_at_s=self._process_at_s,
                measurement_at_s=self._measurement_at_s,
            )
        return self._snapshot

    # ------------------------------------------------------------------ commands
    def restart_plc(self) -> None:
        """Reset every counter and the measurement buffer now; order and lot survive."""
        self._restart(self._time_s)

    def set_speed_setpoint(self, parts_per_minute: float) -> None:
        """Change the speed; the next cycle started takes 60 / setpoint seconds."""
        if not (
            math.isfinite(parts_per_minute)
            and SPEED_SETPOINT_MIN <= parts_per_minute <= SPEED_SETPOINT_MAX
        ):
            raise SetpointError(
                f"speed setpoint {parts_per_minute} outside {SPEED_SETPOINT_MIN}"
                f" to {SPEED_SETPOINT_MAX} parts/min"
            )
        self._setpoint = float(parts_per_minute)
        self._cycle_s = 60.0 / parts_per_minute
        self._changed()

    def advance_to(self, target_s: float, parts: list[PartEvent]) -> bool:
        """Simulate every event up to ``target_s`` and append the parts made.

        Returns True if anything changed.
        """
        changed = False
        while True:
            restart_s = self._restarts[0] if self._restarts else math.inf
            when = min(restart_s, self._switch_s, self._next_s, self._next_process_s)
            if when > target_s:
                break
            self._time_s = when
            if restart_s == when:
                self._restarts.pop(0)
                self._scheduled_restart(when)
            elif self._switch_s == when:
                self._switch_s = math.inf
                self._show_job(when)
            elif self._next_s == when:
                self._step(when, parts)
            else:
                self._update_process(when)
            changed = True
        if target_s > self._time_s:
            self._time_s = target_s
        return changed

    # ------------------------------------------------------------------ events
    def _changed(self) -> None:
        self._snapshot = None

    def _scheduled_restart(self, now: float) -> None:
        """A PLC restart from the scenario: an outage, then the PLC is back with zeroed counters.

        A running machine stops (Held, electrical fault) for ``plc_restart_s``; a pausing one
        finishes its pause. The counters are reset when the machine resumes, so a poller sees
        the final counts before the reset and no part is made between the two.
        """
        if self._phase is _Phase.DONE:
            self._restart(now)
            return
        self._reset_on_resume = True
        if self._phase is _Phase.RUNNING:
            duration = self._scenario.plc_restart_s
            self._pause(now, PackMLState.HELD, Reason.ELECTRICAL_FAULT, duration)

    def _restart(self, now: float) -> None:
        self._good = self._scrap = self._meas_seq = 0
        self._ring = [0.0] * MEASUREMENT_SLOTS
        self._counts_at_s = self._measurement_at_s = now
        self._changed()

    def _set_state(self, now: float, state: PackMLState, reason: Reason) -> None:
        if (state, reason) != (self._state, self._reason):
            self._state, self._reason = state, reason
            self._state_since_s = now
        self._changed()

    def _show_job(self, now: float) -> None:
        """Show the current order and lot in the PLC (before production of the lot starts)."""
        order = self._order
        assert order is not None
        lot = order.lot_number(self._lot_index)
        self._shown = (order.order, order.operation, order.material, lot)
        self._job_since_s = now
        self._changed()

    def _start_job(self, now: float) -> None:
        """Begin producing the current lot of the current order: open its segment."""
        order = self._order
        assert order is not None
        lot = order.lot_number(self._lot_index)
        if self._shown[0] != order.order or self._shown[3] != lot:
            self._show_job(now)
        self._parts_in_lot = 0
        self._segment = Segment(
            machine=self.name,
            order=order.order,
            operation=order.operation,
            material=order.material,
            lot=lot,
            unit=order.unit,
            good=0,
            scrap=0,
            start_s=now,
            end_s=now,
            complete=False,
        )
        self._run(now)

    def _run(self, now: float) -> None:
        self._phase = _Phase.RUNNING
        self._set_state(now, PackMLState.EXECUTE, Reason.NONE)
        self._next_s = now + self._cycle_s

    def _pause(self, now: float, state: PackMLState, reason: Reason, duration: float) -> None:
        self._phase = _Phase.PAUSED
        self._set_state(now, state, reason)
        self._next_s = now + duration

    def _step(self, now: float, parts: list[PartEvent]) -> None:
        if self._reset_on_resume and self._phase is not _Phase.RUNNING:
            self._reset_on_resume = False
            self._restart(now)
        if self._phase is _Phase.RUNNING:
            self._make_part(now, parts)
        elif self._phase is _Phase.PAUSED:
            if self._pending_job:
                self._pending_job = False
                self._start_job(now)
            else:
                self._run(now)
        elif self._phase is _Phase.WRAP_UP:
            self._shown = ("", "", "", "")
            self._job_since_s = now
            self._phase = _Phase.DONE
            self._next_s = math.inf
            self._changed()

    def _make_part(self, now: float, parts: list[PartEvent]) -> None:
        meas = self._meas
        mean = meas.nominal + meas.drift_per_part * self._parts_in_lot
        value = float(np.float32(self._rng.normal(mean, meas.sigma)))
        other_defect = self._rng.random() < meas.extra_scrap_probability
        good = meas.lower_spec <= value <= meas.upper_spec and not other_defect
        if good:
            self._good = (self._good + 1) % _U32
        else:
            self._scrap = (self._scrap + 1) % _U32
        self._meas_seq = (self._meas_seq + 1) % _U32
        self._ring[(self._meas_seq - 1) % MEASUREMENT_SLOTS] = value
        self._last_measurement = value
        self._counts_at_s = self._measurement_at_s = now
        self._parts_in_lot += 1
        segment = self._segment
        assert segment is not None
        self._segment = replace(
            segment, good=segment.good + good, scrap=segment.scrap + (not good), end_s=now
        )
        parts.append(
            PartEvent(
                machine=self.name,
                time_s=now,
                meas_seq=self._meas_seq,
                value=value,
                good=good,
                good_count=self._good,
                scrap_count=self._scrap,
            )
        )
        self._changed()
        order = self._order
        assert order is not None
        if self._parts_in_lot >= order.lot_sizes()[self._lot_index]:
            self._end_lot(now)
            return
        draw = self._rng.random()
        spec = self.spec
        if draw < spec.downtime_probability:
            reason = _DOWNTIME_REASONS[int(self._rng.integers(len(_DOWNTIME_REASONS)))]
            low, high = self._scenario.downtime_s
            self._pause(now, PackMLState.HELD, reason, float(self._rng.uniform(low, high)))
        elif draw < spec.downtime_probability + spec.blocked_probability:
            reason = Reason.BLOCKED if self._rng.random() < 0.5 else Reason.STARVED
            low, high = self._scenario.blocked_s
            self._pause(now, PackMLState.SUSPENDED, reason, float(self._rng.uniform(low, high)))
        else:
            self._next_s = now + self._cycle_s

    def _end_lot(self, now: float) -> None:
        segment = self._segment
        assert segment is not None and self._order is not None
        self._segments.append(replace(segment, complete=True))
        self._segment = None
        # The next lot's numbers appear half-way through the pause, production resumes at its
        # end: a poller sees the final counts under the old numbers, then unchanged counts under
        # the new ones, whichever way it attributes a change seen together with new numbers.
        if self._lot_index + 1 < len(self._order.lot_sizes()):
            self._lot_index += 1
            self._pending_job = True
            duration = self._scenario.lot_change_s
            self._pause(now, PackMLState.SUSPENDED, Reason.LOT_CHANGE, duration)
            self._switch_s = now + duration / 2
            return
        self._order_index += 1
        self._lot_index = 0
        self._order = self._scenario.order_for(self.spec, self._order_index)
        if self._order is not None:
            self._pending_job = True
            duration = self._scenario.changeover_s
            self._pause(now, PackMLState.IDLE, Reason.CHANGEOVER, duration)
            self._switch_s = now + duration / 2
            return
        # Last order done: idle without order, but keep showing the finished order for a
        # lot-change time so that a poller sees its final counters before the strings clear.
        self._set_state(now, PackMLState.IDLE, Reason.NO_ORDER)
        self._phase = _Phase.WRAP_UP
        self._next_s = now + self._scenario.lot_change_s

    def _update_process(self, now: float) -> None:
        """Sample temperature, pressure and actual speed (noise from their own generator)."""
        rng = self._pv_rng
        running = self._state is PackMLState.EXECUTE
        elapsed = now - self._process_at_s
        target = 65.0 if running else 38.0
        self._temperature_base += (target - self._temperature_base) * (
            1.0 - math.exp(-elapsed / 600.0)
        )
        noise_t, noise_p, noise_s = (float(x) for x in rng.normal(0.0, 1.0, 3))
        pressure = (6.0 + 0.05 * noise_p) if running else (1.0 + 0.02 * noise_p)
        speed = self.speed_setpoint * (1.0 + 0.01 * noise_s) if running else 0.0
        self._temperature = round(self._temperature_base + 0.15 * noise_t, 3)
        self._pressure = round(pressure, 4)
        self._speed = round(speed, 3)
        self._process_at_s = now
        self._next_process_s = now + self._scenario.process_interval_s
        self._changed()
