"""What the business systems and MQTT received, checked against what the plant produced.

The plant simulator's truth lists every (machine, order, lot) segment with the good and scrap
parts really made. A part booked in ERP for the wrong order or lot counts as lost there and
duplicated elsewhere; so does a goods receipt or a completion event.
"""

from __future__ import annotations

__all__ = ["Verdict", "verify"]

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Verdict:
    orders_completed: int = 0
    erp_confirmations: int = 0
    wms_receipts: int = 0
    qms_results: int = 0
    mqtt_messages: int = 0
    lost: int = 0
    duplicated: int = 0
    problems: list[str] = field(default_factory=list)
    parts_made: int = 0

    def summary(self) -> dict[str, int]:
        return {
            "orders_completed": self.orders_completed,
            "erp_confirmations": self.erp_confirmations,
            "wms_receipts": self.wms_receipts,
            "qms_results": self.qms_results,
            "mqtt_messages": self.mqtt_messages,
            "lost": self.lost,
            "duplicated": self.duplicated,
        }

    @property
    def ok(self) -> bool:
        counts = self.summary()
        return (
            self.lost == 0
            and self.duplicated == 0
            and all(counts[k] > 0 for k in counts if k not in ("lost", "duplicated"))
        )


def _compare(
    verdict: Verdict, what: str, truth: Mapping[Any, int], booked: Mapping[Any, int]
) -> None:
    for key in sorted(set(truth) | set(booked), key=str):
        expected, got = truth.get(key, 0), booked.get(key, 0)
        if got < expected:
            verdict.lost += expected - got
            verdict.problems.append(f"{what} {key}: {got} booked, {expected} made")
        elif got > expected:
            verdict.duplicated += got - expected
            verdict.problems.append(f"{what} {key}: {got} booked, only {expected} made")


def verify(
    truth: Iterable[Mapping[str, Any]],
    erp: Iterable[Mapping[str, Any]],
    wms: Iterable[Mapping[str, Any]],
    qms: Iterable[Mapping[str, Any]],
    completion_events: Iterable[Mapping[str, Any]],
    mqtt_messages: int,
) -> Verdict:
    """Compare; every argument is a list of plain dicts (segments, booked bodies, events)."""
    verdict = Verdict(mqtt_messages=mqtt_messages)
    good: Counter[tuple[str, str, str]] = Counter()
    scrap: Counter[tuple[str, str, str]] = Counter()
    lot_material: Counter[tuple[str, str]] = Counter()
    lots: set[tuple[str, str]] = set()
    for segment in truth:
        key = (segment["machine"], segment["order"], segment["lot"])
        if not segment["order"]:
            continue
        good[key] += int(segment["good"])
        scrap[key] += int(segment["scrap"])
        lot_material[(segment["material"], segment["lot"])] += int(segment["good"])
        if int(segment["good"]) + int(segment["scrap"]):
            lots.add((segment["machine"], segment["lot"]))
        verdict.parts_made += int(segment["good"]) + int(segment["scrap"])
    erp = list(erp)
    verdict.erp_confirmations = len(erp)
    _compare(verdict, "ERP good", good, _sum(erp, ("machine", "order", "lot"), "good"))
    _compare(verdict, "ERP scrap", scrap, _sum(erp, ("machine", "order", "lot"), "scrap"))
    finals = {(d["machine"], d["order"]) for d in erp if d.get("final")}
    orders = {(m, o) for m, o, _ in good}
    verdict.orders_completed = len(finals & orders)
    for missing in sorted(orders - finals):
        verdict.lost += 1
        verdict.problems.append(f"ERP: no final confirmation for order {missing}")
    wms = list(wms)
    verdict.wms_receipts = len(wms)
    _compare(verdict, "WMS", lot_material, _sum(wms, ("material", "lot"), "quantity"))
    qms = list(qms)
    verdict.qms_results = len(qms)
    results = Counter((d["machine"], d["lot"]) for d in qms)
    _compare(verdict, "QMS results", dict.fromkeys(lots, 1), results)
    events = list(completion_events)
    _compare(
        verdict,
        "MQTT completion events (good)",
        good,
        _sum(events, ("machine", "order", "lot"), "good"),
    )
    return verdict


def _sum(
    items: Iterable[Mapping[str, Any]], keys: tuple[str, ...], field_name: str
) -> Counter[Any]:
    totals: Counter[Any] = Counter()
    for item in items:
        key = tuple(str(item.get(k, "")) for k in keys)
        totals[key if len(key) > 1 else key[0]] += int(item.get(field_name, 0))
    return totals
