"""Lot quality and SPC: each characteristic's control chart, alarms, and per-lot results.

Measurements come from measurement tags (every good sample with a new timestamp is one
measurement) or from a PLC ring buffer (see :mod:`gateway.processors.measurements`). Every
characteristic runs a control chart (:class:`~gateway.processors.spc.ControlCharts`): a run of
violations of a configured Nelson rule raises one ``spc_alarm`` document where it starts.

With a lot tag (``type: lot_quality``), each lot's measurements are also summed per
characteristic (count, sum and sum of squares around the first value, min, max, out-of-spec
count, moving ranges or subgroup ranges, rule violations). When the lot tag changes, a
``lot_result`` goes out with, per characteristic: n, mean, standard deviation (n - 1), min, max,
out-of-spec count, Cpk from the within-lot sigma (MR̄/1.128, or R̄/d₂ for subgroups), Ppk from the
overall sigma, and the points violating each rule; and the lot's decision: *reject* when a
characteristic's out-of-spec fraction exceeds `reject_out_of_spec_fraction`, *hold* when a Cpk is
below `hold_cpk_below` or a point violated a rule of `hold_on_rules`, else *accept*. A batch's
measurements belong to the lot in force before a lot change in the same batch (the PLC changes
the lot between parts).
"""

from __future__ import annotations

__all__ = ["LotQualityProcessor", "spc_alarm_key", "spc_alarm_key_prefix"]

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from itertools import islice
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch, now_ns
from gateway.config.processors import (
    CharacteristicConfig,
    LotQualityConfig,
    SpcConfig,
)
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.grouping import MOST_TAGS_PER_POLL, repeating_cycle
from gateway.processors.measurements import RingReader
from gateway.processors.nelson import RULES
from gateway.processors.relevance import Relevance
from gateway.processors.spc import (
    D2,
    ChartGroup,
    ChartSpec,
    ChartState,
    ChartUpdate,
    ControlCharts,
    capability,
)
from gateway.processors.timefmt import iso_utc, iso_utc_each
from gateway.quality import is_good
from gateway.tags import TagTable

_ALARM_KEY = "%s%d%09x"


def spc_alarm_key_prefix(gateway: str, machine: str, characteristic: str) -> str:
    """The part of a characteristic's SPC alarm keys that is hashed (once per characteristic)."""
    return idempotency_key(gateway, machine, characteristic, "spc")[:22]


def spc_alarm_key(gateway: str, machine: str, characteristic: str, rule: int, point: int) -> str:
    """The idempotency key of an SPC alarm: rule `rule` fired at point `point` of a chart.

    32 hex digits (more after 2**36 points): :func:`spc_alarm_key_prefix`, the rule (1-8) and
    the point's index as 9 hex digits. Unique per characteristic, rule and point, and one hash
    per characteristic instead of one per alarm (a chart can raise thousands in a batch).
    """
    return _ALARM_KEY % (spc_alarm_key_prefix(gateway, machine, characteristic), rule, point)


@dataclass
class _Sums:
    """One characteristic's running statistics within the current lot."""

    n: int = 0
    shift: float = 0.0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    out_of_spec: int = 0
    moving_range: float = 0.0
    last: float | None = None
    range_sum: float = 0.0
    ranges: int = 0
    violations: list[int] = field(default_factory=lambda: [0] * 8)

    def add(self, values: NDArray[np.float64], lsl: float | None, usl: float | None) -> None:
        if len(values) == 0:
            return
        if self.n == 0:
            self.shift = float(values[0])
        centred = values - self.shift
        self.n += len(values)
        self.total += float(centred.sum())
        self.squares += float(np.dot(centred, centred))
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        outside = 0
        if lsl is not None:
            outside += int(np.count_nonzero(values < lsl))
        if usl is not None:
            outside += int(np.count_nonzero(values > usl))
        self.out_of_spec += outside
        steps = np.abs(np.diff(values))
        self.moving_range += float(steps.sum())
        if self.last is not None:
            self.moving_range += abs(float(values[0]) - self.last)
        self.last = float(values[-1])

    def summary(self, spec: CharacteristicConfig) -> dict[str, Any]:
        n = self.n
        mean = self.shift + self.total / n if n else math.nan
        variance = (self.squares - self.total * self.total / n) / (n - 1) if n > 1 else math.nan
        std = math.sqrt(max(variance, 0.0)) if n > 1 else math.nan
        if spec.subgroup > 1 and self.ranges:
            sigma_within = self.range_sum / self.ranges / D2[spec.subgroup]
        else:
            sigma_within = self.moving_range / (n - 1) / D2[2] if n > 1 else math.nan
        return {
            "name": spec.name,
            "unit": spec.unit,
            "n": n,
            "mean": _num(mean),
            "std": _num(std),
            "min": _num(self.low) if n else None,
            "max": _num(self.high) if n else None,
            "out_of_spec": self.out_of_spec,
            "lsl": spec.lsl,
            "usl": spec.usl,
            "nominal": spec.nominal,
            "subgroup": spec.subgroup,
            "cpk": _num(capability(mean, sigma_within, spec.lsl, spec.usl)[1]),
            "ppk": _num(capability(mean, std, spec.lsl, spec.usl)[1]),
            "violations": {str(r): self.violations[r - 1] for r in range(1, 9)},
        }


_SHIFTS = np.arange(8, dtype=np.uint8)
_RULE_NAMES = np.array(["", *(RULES[rule] for rule in range(1, 9))], object)


def _num(value: float) -> float | None:
    return None if math.isnan(value) or math.isinf(value) else round(value, 6)


@dataclass
class _State:
    lot: str = ""
    order: str = ""
    material: str = ""
    known: bool = False
    start_ns: int = 0
    sequence: int = 0
    sums: list[_Sums] = field(default_factory=list)
    last_ns: list[int] = field(default_factory=list)
    """Per characteristic: the newest measurement timestamp taken (measurement-tag mode)."""
    readers: list[dict[str, Any]] = field(default_factory=list)
    """Ring readers' positions (ring mode), by characteristic index as a string key."""


def _chart_spec(spec: CharacteristicConfig) -> ChartSpec:
    limits = spec.control_limits
    if limits is None:
        return ChartSpec(spec.subgroup, spec.baseline)
    if limits.sigma is not None:
        return ChartSpec(
            spec.subgroup, spec.baseline, limits.center, limits.sigma / math.sqrt(spec.subgroup)
        )
    assert limits.ucl is not None and limits.lcl is not None
    center = limits.center if limits.center is not None else (limits.ucl + limits.lcl) / 2
    return ChartSpec(spec.subgroup, spec.baseline, center, (limits.ucl - limits.lcl) / 6)


class LotQualityProcessor:
    """One machine's control charts, SPC alarms and (with a lot tag) lot results."""

    def __init__(
        self, config: LotQualityConfig | SpcConfig, table: TagTable, gateway_id: str
    ) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self._with_lots = isinstance(config, LotQualityConfig)
        self._specs = tuple(config.characteristics)
        self._lot_tag = table.index(config.lot) if config.lot else -1
        self._order_tag = table.index(config.order) if config.order else -1
        self._material_tag = table.index(config.material) if config.material else -1
        self._rings: dict[int, RingReader] = {}
        self._chart_of_tag = np.full(len(table), -1, np.intp)
        for index, spec in enumerate(self._specs):
            if spec.sequence:
                self._rings[index] = RingReader(
                    table.indices(spec.values), table.index(spec.sequence), len(table)
                )
            else:
                self._chart_of_tag[table.index(spec.values)] = index
        self._scalar = bool((self._chart_of_tag >= 0).any())
        self._relevant = self._chart_of_tag >= 0
        for ring_index in self._rings:
            spec = self._specs[ring_index]
            self._relevant[table.indices(spec.values)] = True
            assert spec.sequence is not None
            self._relevant[table.index(spec.sequence)] = True
        for tag in (self._lot_tag, self._order_tag, self._material_tag):
            if tag >= 0:
                self._relevant[tag] = True
        self._relevance = Relevance(table, self._relevant)
        self._charts = ControlCharts([_chart_spec(s) for s in self._specs])
        self._alarm_mask = np.array(
            [sum(1 << (r - 1) for r in set(spec.rules)) for spec in self._specs], np.uint8
        )
        self._alarm_static = [
            (
                spc_alarm_key_prefix(gateway_id, config.machine, spec.name),
                f"{config.machine}/{spec.name}",
                spec.name,
                spec.unit,
                spec.subgroup,
                spec.nominal,
                spec.lsl,
                spec.usl,
            )
            for spec in self._specs
        ]
        self._hold_rules = (
            [r - 1 for r in config.hold_on_rules] if isinstance(config, LotQualityConfig) else []
        )
        self._committed = self._fresh_state()
        self._charts_committed = self._charts.fresh_state()
        self._pending: tuple[_State, ChartState] | None = None
        self._now_ns = 0
        self._saved_ns = 0

    def _fresh_state(self) -> _State:
        return _State(sums=self._fresh_sums(), last_ns=[0] * len(self._specs), readers=[])

    def _fresh_sums(self) -> list[_Sums]:
        """Lot statistics per characteristic (none without lots)."""
        return [_Sums() for _ in self._specs] if self._with_lots else []

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        if not self._relevance.concerns(batch):
            self._pending = None
            return []
        self._now_ns = batch.received_ns
        state = _copy(self._committed)
        charts = self._charts_committed.copy()
        self._pending = (state, charts)
        good = is_good(batch.quality)
        groups = self._measurements(state, batch, good)
        documents: list[Document] = []
        if groups:
            update = self._charts.ingest_groups(charts, groups)
            if len(update):
                documents += self._alarms(state, charts, update)
                if self._with_lots:
                    self._add_to_lot(state, groups, update)
        state.readers = [_reader_state(self._rings[i]) for i in sorted(self._rings)]
        order = self._text(batch, self._order_tag, good)
        material = self._text(batch, self._material_tag, good)
        lot = self._text(batch, self._lot_tag, good)
        stamp = int(batch.timestamps.max()) if len(batch) else batch.received_ns
        if lot is not None and lot != state.lot:
            if state.known and self._with_lots:
                documents += self._close(state, stamp)
            state.lot, state.known, state.start_ns = lot, True, stamp
            state.sums = self._fresh_sums()
            if order is None:
                order = state.order
        if order is not None:
            state.order = order
        if material is not None:
            state.material = material
        return documents

    @property
    def needs_checkpoint(self) -> bool:
        interval_ns = int(self._config.checkpoint_interval * 1e9)
        return self._pending is not None and self._now_ns - self._saved_ns >= interval_ns

    def snapshot(self) -> Mapping[str, Any]:
        state, charts = self._pending or (self._committed, self._charts_committed)
        self._saved_ns = self._now_ns
        return {**asdict(state), "charts": charts.as_dict()}

    def commit(self) -> None:
        if self._pending is not None:
            self._committed, self._charts_committed = self._pending
            self._pending = None

    def rollback(self) -> None:
        if self._pending is not None:
            self._restore_readers(self._committed)
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        sums = [_Sums(**s) for s in state.get("sums", [])]
        if len(sums) != len(self._fresh_sums()):
            sums = self._fresh_sums()
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        fields["sums"] = sums
        last_ns = [int(t) for t in state.get("last_ns", [])]
        fields["last_ns"] = last_ns if len(last_ns) == len(self._specs) else [0] * len(self._specs)
        self._committed = _State(**fields)
        self._charts_committed = ChartState.from_dict(state.get("charts", {}), self._charts.specs)
        self._restore_readers(self._committed)

    # --- the work ---

    def _measurements(
        self, state: _State, batch: SampleBatch, good: NDArray[np.bool_]
    ) -> list[ChartGroup]:
        """New measurements per characteristic, in time order, by characteristic."""
        groups: list[ChartGroup] = []
        if self._scalar:
            polled = self._polled(state, batch, good)
            groups = polled if polled is not None else self._scattered(state, batch, good)
        if self._rings:
            stamp = int(batch.timestamps.max()) if len(batch) else batch.received_ns
            for index, reader in self._rings.items():
                found = reader.read(batch)
                if len(found):
                    groups.append((index, found, np.full(len(found), stamp, np.int64)))
            groups.sort(key=lambda group: group[0])
        return groups

    def _polled(
        self, state: _State, batch: SampleBatch, good: NDArray[np.bool_]
    ) -> list[ChartGroup] | None:
        """The usual batch, polls of one device (each the same tags in the same order), every
        measurement good and newer than the one before, read where it lies; None otherwise."""
        cycle = repeating_cycle(batch.tags, MOST_TAGS_PER_POLL)
        if not cycle:
            return None
        n, period = len(batch), len(cycle)
        ours = sorted((c, o) for o, c in enumerate(self._chart_of_tag[cycle].tolist()) if c >= 0)
        values, stamps = batch.values, batch.timestamps
        if len(ours) == period:  # a device of measurements only: whole columns at once
            clean = bool(good.all()) and not math.isnan(float(values.sum()))
        else:  # NaN shows in a sum
            clean = all(
                good[o::period].all() and not math.isnan(float(values[o::period].sum()))
                for _, o in ours
            )
        if not clean or (n > period and not (stamps[period:] > stamps[:-period]).all()):
            return None
        if any(int(stamps[o]) <= state.last_ns[c] for c, o in ours):
            return None  # a measurement seen before: the general path drops it
        for c, o in ours:
            state.last_ns[c] = int(stamps[o + (n - 1 - o) // period * period])
        return [(c, values[o::period], stamps[o::period]) for c, o in ours]

    def _scattered(
        self, state: _State, batch: SampleBatch, good: NDArray[np.bool_]
    ) -> list[ChartGroup]:
        """Any other batch: the good measurements newer than their characteristic's last one,
        each moment once, sorted out by characteristic and time."""
        chart = self._chart_of_tag[batch.tags]
        valid = chart >= 0
        valid &= good
        valid &= batch.values == batch.values  # not NaN
        rows = np.flatnonzero(valid)
        rows = rows[batch.timestamps[rows] > np.asarray(state.last_ns, np.int64)[chart[rows]]]
        if not len(rows):
            return []
        chart, row_ns = chart[rows], batch.timestamps[rows]
        order = np.lexsort((row_ns, chart))  # stable: of equal moments, the first row stays
        rows, chart, row_ns = rows[order], chart[order], row_ns[order]
        repeated = (chart[1:] == chart[:-1]) & (row_ns[1:] == row_ns[:-1])
        if repeated.any():
            keep = np.concatenate(([True], ~repeated))
            rows, chart, row_ns = rows[keep], chart[keep], row_ns[keep]
        values = batch.values[rows]
        firsts = [0, *(np.flatnonzero(chart[1:] != chart[:-1]) + 1).tolist()]
        groups: list[ChartGroup] = []
        for first, end in zip(firsts, [*firsts[1:], len(rows)], strict=True):
            c = int(chart[first])
            state.last_ns[c] = int(row_ns[end - 1])
            groups.append((c, values[first:end], row_ns[first:end]))
        return groups

    def _alarms(self, state: _State, charts: ChartState, update: ChartUpdate) -> list[Document]:
        starts = update.starts & self._alarm_mask[update.chart]
        flagged = np.flatnonzero(starts)
        if not len(flagged):
            return []
        # (point, rule) pairs: in time order per characteristic, then by rule
        per_rule = (starts[flagged, None] >> _SHIFTS) & 1
        which, rule_rows = np.nonzero(per_rule)
        points = flagged[which]
        chart = update.chart[points]
        rules = rule_rows + 1
        variable = zip(
            rules.tolist(),
            _RULE_NAMES[rules].tolist(),
            update.index[points].tolist(),
            update.value[points].tolist(),
            iso_utc_each(update.stamp_ns[points]),
            strict=True,
        )
        machine = self._config.machine
        kind = DocumentKind.SPC_ALARM.value
        created = now_ns()
        # the points come grouped by characteristic: per group, a body with the fixed fields
        # (in the declared order) that each alarm copies with the rest set
        firsts = [0, *(np.flatnonzero(chart[1:] != chart[:-1]) + 1).tolist()]
        ends = [*firsts[1:], len(chart)]
        documents = []
        for c, first, end in zip(chart[firsts].tolist(), firsts, ends, strict=True):
            template = self._alarm_template(state, charts, c)
            prefix, ordering = self._alarm_static[c][:2]
            for rule, name, index, value, time in islice(variable, end - first):
                key = _ALARM_KEY % (prefix, rule, index)  # = spc_alarm_key(...), prefix hashed once
                body = dict(
                    template,
                    rule=rule,
                    rule_name=name,
                    point=index,
                    value=value,
                    time=time,
                    idempotency_key=key,
                )
                documents.append(Document(kind, key, machine, body, ordering, created))
        return documents

    def _alarm_template(self, state: _State, charts: ChartState, c: int) -> dict[str, Any]:
        _, _, name, unit, subgroup, nominal, lsl, usl = self._alarm_static[c]
        center, sigma = float(charts.center[c]), float(charts.sigma[c])
        return {
            "gateway": self._gateway,
            "machine": self._config.machine,
            "characteristic": name,
            "unit": unit,
            "rule": 0,
            "rule_name": "",
            "point": 0,
            "value": 0.0,
            "cl": center,
            "ucl": center + 3 * sigma,
            "lcl": center - 3 * sigma,
            "sigma": sigma,
            "subgroup": subgroup,
            "time": "",
            "lot": state.lot,
            "order": state.order,
            "material": state.material,
            "nominal": nominal,
            "lsl": lsl,
            "usl": usl,
            "idempotency_key": "",
        }

    def _add_to_lot(self, state: _State, groups: list[ChartGroup], update: ChartUpdate) -> None:
        violations = np.zeros((len(self._specs), 8), np.int64)
        flagged = np.flatnonzero(update.bits)
        if len(flagged):
            per_rule = ((update.bits[flagged, None] >> _SHIFTS) & 1).astype(np.int64)
            np.add.at(violations, update.chart[flagged], per_rule)
        for c, values, _ in groups:
            state.sums[c].add(values, self._specs[c].lsl, self._specs[c].usl)
        for c, spec in enumerate(self._specs):
            sums = state.sums[c]
            if spec.subgroup > 1:
                ranges = update.ranges[update.chart == c]
                sums.range_sum += float(ranges.sum())
                sums.ranges += len(ranges)
            if violations[c].any():
                sums.violations = (np.asarray(sums.violations) + violations[c]).tolist()

    @staticmethod
    def _text(batch: SampleBatch, tag: int, good: NDArray[np.bool_]) -> str | None:
        if tag < 0:
            return None
        rows = np.flatnonzero((batch.tags == tag) & good)
        if len(rows) == 0:
            return None
        value = batch.value_of(int(rows[-1]))
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return "" if value is None else str(value).strip()

    def _close(self, state: _State, end_ns: int) -> list[Document]:
        if not state.lot or not any(s.n for s in state.sums):
            return []
        characteristics = [
            sums.summary(spec) for sums, spec in zip(state.sums, self._specs, strict=True)
        ]
        decision, reasons = self._decide(characteristics)
        state.sequence += 1
        key = idempotency_key(self._gateway, self._config.machine, "lot", state.lot, state.sequence)
        body = {
            "gateway": self._gateway,
            "machine": self._config.machine,
            "lot": state.lot,
            "order": state.order,
            "material": state.material,
            "start": iso_utc(state.start_ns or end_ns),
            "end": iso_utc(end_ns),
            "characteristics": characteristics,
            "decision": decision,
            "reasons": reasons,
            "idempotency_key": key,
        }
        return [
            Document(
                DocumentKind.LOT_RESULT, key, self._config.machine, body, ordering_key=state.lot
            )
        ]

    def _decide(self, characteristics: list[dict[str, Any]]) -> tuple[str, list[str]]:
        config = self._config
        assert isinstance(config, LotQualityConfig)
        rejects = [
            f"{c['name']}: {c['out_of_spec']} of {c['n']} out of specification"
            for c in characteristics
            if c["n"] and c["out_of_spec"] / c["n"] > config.reject_out_of_spec_fraction
        ]
        if rejects:
            return "reject", rejects
        holds = [
            f"{c['name']}: Cpk {c['cpk']} below {config.hold_cpk_below}"
            for c in characteristics
            if c["cpk"] is not None and c["cpk"] < config.hold_cpk_below
        ]
        for c in characteristics:
            for row in self._hold_rules:
                count = c["violations"][str(row + 1)]
                if count:
                    holds.append(f"{c['name']}: Nelson rule {row + 1} at {count} points")
        return ("hold", holds) if holds else ("accept", [])

    def _restore_readers(self, state: _State) -> None:
        for index, saved in zip(sorted(self._rings), state.readers, strict=False):
            reader = self._rings[index]
            reader.last_sequence = saved.get("last_sequence")
            reader.missed = int(saved.get("missed", 0))


def _copy(state: _State) -> _State:
    return _State(
        state.lot,
        state.order,
        state.material,
        state.known,
        state.start_ns,
        state.sequence,
        [_Sums(**asdict(s)) for s in state.sums],
        list(state.last_ns),
        list(state.readers),
    )


def _reader_state(reader: RingReader) -> dict[str, Any]:
    return {"last_sequence": reader.last_sequence, "missed": reader.missed}
