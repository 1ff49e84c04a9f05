"""Lot quality: each lot's measurements summarised per characteristic, and a decision.

While a lot runs, every new measurement of each characteristic is added to running sums (count,
sum and sum of squares around the first value, min, max, out-of-spec count, sum of moving ranges).
When the lot tag changes, a ``lot_result`` document goes out with, per characteristic: n, mean,
standard deviation (n - 1), min, max, out-of-spec count, Cpk from the within-lot sigma (mean
moving range / 1.128) and Ppk from the overall sigma; and the lot's decision: *reject* when a
characteristic's out-of-spec fraction exceeds `reject_out_of_spec_fraction`, *hold* when a
Cpk is below `hold_cpk_below`, else *accept*.
"""

from __future__ import annotations

__all__ = ["LotQualityProcessor"]

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from gateway.batch import SampleBatch
from gateway.config.processors import CharacteristicConfig, LotQualityConfig
from gateway.documents import Document, DocumentKind, idempotency_key
from gateway.processors.measurements import RingReader, ScalarReader
from gateway.processors.timefmt import iso_utc
from gateway.quality import is_good
from gateway.tags import TagTable

_D2_INDIVIDUALS = 1.128


@dataclass
class _Sums:
    n: int = 0
    shift: float = 0.0
    total: float = 0.0
    squares: float = 0.0
    low: float = math.inf
    high: float = -math.inf
    out_of_spec: int = 0
    moving_range: float = 0.0
    last: float | None = None

    def add(self, values: NDArray[np.float64], lsl: float | None, usl: float | None) -> None:
        if len(values) == 0:
            return
        if self.n == 0:
            self.shift = float(values[0])
        centred = values - self.shift
        self.n += len(values)
        self.total += float(centred.sum())
        self.squares += float((centred * centred).sum())
        self.low = min(self.low, float(values.min()))
        self.high = max(self.high, float(values.max()))
        outside = np.zeros(len(values), bool)
        if lsl is not None:
            outside |= values < lsl
        if usl is not None:
            outside |= values > usl
        self.out_of_spec += int(outside.sum())
        chain = values if self.last is None else np.concatenate(([self.last], values))
        self.moving_range += float(np.abs(np.diff(chain)).sum())
        self.last = float(values[-1])

    def summary(self, spec: CharacteristicConfig) -> dict[str, Any]:
        n = self.n
        mean = self.shift + self.total / n if n else math.nan
        variance = (self.squares - self.total * self.total / n) / (n - 1) if n > 1 else math.nan
        std = math.sqrt(max(variance, 0.0)) if n > 1 else math.nan
        sigma_within = self.moving_range / (n - 1) / _D2_INDIVIDUALS if n > 1 else math.nan
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
            "cpk": _num(_capability(mean, sigma_within, spec)),
            "ppk": _num(_capability(mean, std, spec)),
        }


def _capability(mean: float, sigma: float, spec: CharacteristicConfig) -> float:
    if math.isnan(mean) or math.isnan(sigma) or sigma <= 0:
        return math.nan
    sides = []
    if spec.usl is not None:
        sides.append((spec.usl - mean) / (3 * sigma))
    if spec.lsl is not None:
        sides.append((mean - spec.lsl) / (3 * sigma))
    return min(sides) if sides else math.nan


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
    readers: list[dict[str, Any]] = field(default_factory=list)


class LotQualityProcessor:
    """One machine's lot quality results."""

    def __init__(self, config: LotQualityConfig, table: TagTable, gateway_id: str) -> None:
        self.name = config.key
        self._config = config
        self._gateway = gateway_id
        self._lot_tag = table.index(config.lot)
        self._order_tag = table.index(config.order) if config.order else -1
        self._material_tag = table.index(config.material) if config.material else -1
        self._readers: list[RingReader | ScalarReader] = []
        for spec in config.characteristics:
            if spec.sequence:
                self._readers.append(
                    RingReader(table.indices(spec.values), table.index(spec.sequence), len(table))
                )
            else:
                self._readers.append(ScalarReader(table.index(spec.values)))
        self._committed = self._fresh_state()
        self._pending: _State | None = None
        self._now_ns = 0
        self._saved_ns = 0

    def _fresh_state(self) -> _State:
        return _State(sums=[_Sums() for _ in self._config.characteristics])

    # --- the Processor protocol ---

    def ingest(self, batch: SampleBatch) -> list[Document]:
        self._now_ns = batch.received_ns
        state = _copy(self._committed)
        self._pending = state
        for reader, sums, spec in zip(
            self._readers, state.sums, self._config.characteristics, strict=True
        ):
            sums.add(reader.read(batch), spec.lsl, spec.usl)
        state.readers = [_reader_state(r) for r in self._readers]
        documents: list[Document] = []
        good = is_good(batch.quality)
        order = self._text(batch, self._order_tag, good)
        material = self._text(batch, self._material_tag, good)
        lot = self._text(batch, self._lot_tag, good)
        stamp = int(batch.timestamps.max()) if len(batch) else batch.received_ns
        if lot is not None and lot != state.lot:
            if state.known:
                documents += self._close(state, stamp)
            state.lot, state.known, state.start_ns = lot, True, stamp
            state.sums = [_Sums() for _ in self._config.characteristics]
            if order is None:
                order = state.order
        if order is not None:
            state.order = order
        if material is not None:
            state.material = material
        return documents

    @property
    def needs_checkpoint(self) -> bool:
        return self._pending is not None and self._now_ns - self._saved_ns >= 5_000_000_000

    def snapshot(self) -> Mapping[str, Any]:
        state = self._pending or self._committed
        self._saved_ns = self._now_ns
        return asdict(state)

    def commit(self) -> None:
        if self._pending is not None:
            self._committed = self._pending
            self._pending = None

    def rollback(self) -> None:
        if self._pending is not None:
            for reader, saved in zip(self._readers, self._committed.readers, strict=False):
                _restore_reader(reader, saved)
        self._pending = None

    def restore(self, state: Mapping[str, Any]) -> None:
        sums = [_Sums(**s) for s in state.get("sums", [])]
        if len(sums) != len(self._config.characteristics):
            sums = [_Sums() for _ in self._config.characteristics]
        fields = {k: v for k, v in state.items() if k in _State.__dataclass_fields__}
        fields["sums"] = sums
        self._committed = _State(**fields)
        for reader, saved in zip(self._readers, self._committed.readers, strict=False):
            _restore_reader(reader, saved)

    # --- the work ---

    @staticmethod
    def _text(batch: SampleBatch, tag: int, good: NDArray[np.bool_]) -> str | None:
        if tag < 0:
            return None
        rows = np.flatnonzero((batch.tags == tag) & good)
        if len(rows) == 0:
            return None
        value = batch.value_of(int(rows[-1]))
        return "" if value is None else str(value).strip()

    def _close(self, state: _State, end_ns: int) -> list[Document]:
        if not state.lot or not any(s.n for s in state.sums):
            return []
        characteristics = [
            sums.summary(spec)
            for sums, spec in zip(state.sums, self._config.characteristics, strict=True)
        ]
        decision = self._decide(characteristics)
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
            "idempotency_key": key,
        }
        return [
            Document(
                DocumentKind.LOT_RESULT, key, self._config.machine, body, ordering_key=state.lot
            )
        ]

    def _decide(self, characteristics: list[dict[str, Any]]) -> str:
        for c in characteristics:
            if c["n"] and c["out_of_spec"] / c["n"] > self._config.reject_out_of_spec_fraction:
                return "reject"
        for c in characteristics:
            if c["cpk"] is not None and c["cpk"] < self._config.hold_cpk_below:
                return "hold"
        return "accept"


def _copy(state: _State) -> _State:
    return _State(
        state.lot,
        state.order,
        state.material,
        state.known,
        state.start_ns,
        state.sequence,
        [_Sums(**asdict(s)) for s in state.sums],
        list(state.readers),
    )


def _reader_state(reader: RingReader | ScalarReader) -> dict[str, Any]:
    if isinstance(reader, RingReader):
        return {"last_sequence": reader.last_sequence, "missed": reader.missed}
    return {"last_ns": reader.last_ns}


def _restore_reader(reader: RingReader | ScalarReader, saved: Mapping[str, Any]) -> None:
    if isinstance(reader, RingReader):
        reader.last_sequence = saved.get("last_sequence")
        reader.missed = int(saved.get("missed", 0))
    else:
        reader.last_ns = int(saved.get("last_ns", 0))
