"""A receiver of ISA-95 messages as B2MML XML BODs (``POST /b2mml``).

Accepted messages and their namespace (docs/simulators.md, "B2MML"):

=================================  ===========================================
``ProcessMaterialLot``             ``http://www.mesa.org/xml/B2MML`` (V0700)
``ProcessOperationsEvent``         ``http://www.mesa.org/xml/B2MML`` (V0700)
``ProcessProductionPerformance``   ``http://www.mesa.org/xml/B2MML-V0600``
=================================  ===========================================

Every BOD needs ``ApplicationArea`` with ``Sender/LogicalID``, an ISO 8601
``CreationDateTime`` and a ``BODID`` (a GUID), and a ``DataArea`` with the ``Process`` verb and
its noun. A BOD whose BODID was already accepted is not booked again: the receiver answers the
first ``ConfirmBOD`` (status 200). Problems answer 400 with a ``ConfirmBOD`` whose
``BODFailureMessage/ErrorProcessMessage/Description`` says what is wrong.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import datetime
from typing import Any

from aiohttp import web

from .ledger import Answer, Ledger

__all__ = ["B2MML_COLLECTION", "B2MML_PATH", "B2mmlReceiver"]

B2MML_PATH = "/b2mml"
B2MML_COLLECTION = "b2mml-messages"
V0600 = "http://www.mesa.org/xml/B2MML-V0600"
V0700 = "http://www.mesa.org/xml/B2MML"
MESSAGES = {
    "ProcessMaterialLot": (V0700, "MaterialLot"),
    "ProcessOperationsEvent": (V0700, "OperationsEvent"),
    "ProcessProductionPerformance": (V0600, "ProductionPerformance"),
}
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE][-+]?\d+)?$")


class _BodError(Exception):
    pass


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _child(node: ET.Element, ns: str, *path: str) -> ET.Element | None:
    found: ET.Element | None = node
    for name in path:
        if found is None:
            return None
        found = found.find(f"{{{ns}}}{name}")
    return found


def _text(node: ET.Element, ns: str, *path: str, required: str = "") -> str:
    found = _child(node, ns, *path)
    text = (found.text or "").strip() if found is not None else ""
    if required and not text:
        raise _BodError(f"{required}: {'/'.join(path)} is required")
    return text


def _value(node: ET.Element, ns: str, where: str) -> str:
    text = _text(node, ns, "Value", "ValueString", required=where)
    data_type = _text(node, ns, "Value", "DataType")
    if data_type in ("double", "integer", "decimal", "float") and not _NUMBER.match(text):
        raise _BodError(f"{where}: ValueString {text!r} is not a {data_type}")
    return text


def _parse(raw: bytes) -> tuple[str, str, str, dict[str, Any]]:
    """(message name, BODID, namespace, summary) of a valid BOD; _BodError otherwise."""
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise _BodError(f"not well-formed XML: {exc}") from None
    name = _local(root.tag)
    if name not in MESSAGES:
        raise _BodError(f"unknown message {name}; accepted: {', '.join(MESSAGES)}")
    ns, noun = MESSAGES[name]
    if root.tag != f"{{{ns}}}{name}":
        found = root.tag[1:].split("}")[0] if root.tag.startswith("{") else "(none)"
        raise _BodError(f"{name} must be in namespace {ns}, not {found}")
    area = _child(root, ns, "ApplicationArea")
    if area is None:
        raise _BodError("ApplicationArea is required")
    sender = _text(area, ns, "Sender", "LogicalID", required="ApplicationArea")
    created = _text(area, ns, "CreationDateTime", required="ApplicationArea")
    try:
        datetime.fromisoformat(created)
    except ValueError:
        raise _BodError(f"CreationDateTime {created!r} is not ISO 8601") from None
    bodid = _text(area, ns, "BODID", required="ApplicationArea")
    if not _GUID.match(bodid):
        raise _BodError(f"BODID {bodid!r} is not a GUID")
    data = _child(root, ns, "DataArea")
    if data is None or _child(data, ns, "Process") is None:
        raise _BodError("DataArea with the Process verb is required")
    element = _child(data, ns, noun)
    if element is None:
        raise _BodError(f"DataArea/{noun} is required")
    summary: dict[str, Any] = {"message": name, "bodid": bodid, "sender": sender}
    if noun == "MaterialLot":
        summary |= _material_lot(element, ns)
    elif noun == "OperationsEvent":
        summary |= _operations_event(element, ns)
    else:
        summary |= _production_performance(element, ns)
    return name, bodid, ns, summary


def _material_lot(lot: ET.Element, ns: str) -> dict[str, Any]:
    characteristics = []
    for prop in lot.findall(f"{{{ns}}}MaterialLotProperty"):
        name = _text(prop, ns, "ID", required="MaterialLotProperty")
        entry: dict[str, Any] = {"name": name}
        if _child(prop, ns, "Value") is not None:
            entry["mean"] = float(_value(prop, ns, f"MaterialLotProperty {name}"))
        for statistic in prop.findall(f"{{{ns}}}MaterialLotProperty"):
            stat = _text(statistic, ns, "ID", required=f"MaterialLotProperty {name}")
            entry[stat] = _value(statistic, ns, f"MaterialLotProperty {name}/{stat}")
        if _child(prop, ns, "TestResult") is None:
            raise _BodError(f"MaterialLotProperty {name}: TestResult is required")
        characteristics.append(entry)
    status = _text(lot, ns, "Status")
    if status and status not in ("accept", "reject", "hold"):
        raise _BodError(f"MaterialLot Status {status!r}: expected accept, reject or hold")
    return {
        "lot": _text(lot, ns, "ID", required="MaterialLot"),
        "material": _text(lot, ns, "MaterialDefinitionID", required="MaterialLot"),
        "decision": status,
        "description": _text(lot, ns, "Description"),
        "characteristics": characteristics,
    }


def _operations_event(event: ET.Element, ns: str) -> dict[str, Any]:
    properties = {}
    for prop in event.findall(f"{{{ns}}}OperationsEventProperty"):
        name = _text(prop, ns, "ID", required="OperationsEventProperty")
        properties[name] = _text(prop, ns, "Value", "ValueString")
    return {
        "event": _text(event, ns, "ID", required="OperationsEvent"),
        "equipment": _text(event, ns, "HierarchyScope", "EquipmentID"),
        "category": _text(event, ns, "Category"),
        "operations_type": _text(event, ns, "OperationsType"),
        "properties": properties,
    }


def _production_performance(performance: ET.Element, ns: str) -> dict[str, Any]:
    response = _child(performance, ns, "ProductionResponse")
    if response is None:
        raise _BodError("ProductionPerformance/ProductionResponse is required")
    segment = _child(response, ns, "SegmentResponse")
    if segment is None:
        raise _BodError("ProductionResponse/SegmentResponse is required")
    produced = 0.0
    lot = material = unit = ""
    for actual in segment.findall(f"{{{ns}}}MaterialActual"):
        quantity = _text(actual, ns, "Quantity", "QuantityString", required="MaterialActual")
        if not _NUMBER.match(quantity):
            raise _BodError(f"MaterialActual Quantity {quantity!r} is not a number")
        scrap = any(
            _text(p, ns, "ID") == "Scrap" for p in actual.findall(f"{{{ns}}}MaterialActualProperty")
        )
        if not scrap:
            produced += float(quantity)
            lot = _text(actual, ns, "MaterialLotID", required="MaterialActual")
            material = _text(actual, ns, "MaterialDefinitionID")
            unit = _text(actual, ns, "Quantity", "UnitOfMeasure")
    return {
        "order": _text(response, ns, "ProductionRequestID", required="ProductionResponse"),
        "operation": _text(segment, ns, "ProcessSegmentID"),
        "lot": lot,
        "material": material,
        "quantity": produced,
        "unit": unit,
        "state": _text(segment, ns, "SegmentState"),
    }


def _confirm_bod(ns: str, bodid: str, *, reference: str = "", error: str = "") -> str:
    root = ET.Element(f"{{{ns}}}ConfirmBOD")
    area = ET.SubElement(root, f"{{{ns}}}ApplicationArea")
    sender = ET.SubElement(area, f"{{{ns}}}Sender")
    ET.SubElement(sender, f"{{{ns}}}LogicalID").text = "qms-simulator"
    data = ET.SubElement(root, f"{{{ns}}}DataArea")
    ET.SubElement(data, f"{{{ns}}}Confirm")
    bod = ET.SubElement(data, f"{{{ns}}}BOD")
    original = ET.SubElement(bod, f"{{{ns}}}OriginalApplicationArea")
    ET.SubElement(original, f"{{{ns}}}BODID").text = bodid
    if error:
        failure = ET.SubElement(bod, f"{{{ns}}}BODFailureMessage")
        message = ET.SubElement(failure, f"{{{ns}}}ErrorProcessMessage")
        ET.SubElement(message, f"{{{ns}}}Description").text = error
    else:
        success = ET.SubElement(bod, f"{{{ns}}}BODSuccessMessage")
        ET.SubElement(success, f"{{{ns}}}DocumentID").text = reference
    return ET.tostring(root, encoding="unicode", default_namespace=ns)


class B2mmlReceiver:
    """``POST /b2mml``: validate, book once per BODID, answer a ConfirmBOD."""

    def __init__(self, ledger: Ledger, *, stats: Any = None) -> None:
        self.ledger = ledger
        self._stats = stats
        self._numbers = 0

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post(B2MML_PATH, self._receive)

    def _count(self, outcome: str) -> None:
        if self._stats is not None:
            setattr(self._stats, outcome, getattr(self._stats, outcome) + 1)

    async def _receive(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            _, bodid, ns, summary = _parse(raw)
        except _BodError as error:
            self._count("rejected")
            return web.Response(
                status=400,
                text=_confirm_bod(V0700, "", error=str(error)),
                content_type="application/xml",
            )

        async def produce() -> Answer:
            self._numbers += 1
            reference = f"QMS-{self._numbers:06d}"
            self.ledger.book_as(
                B2MML_COLLECTION,
                reference,
                bodid.replace("-", "").lower(),
                {**summary, "xml": raw.decode("utf-8", "replace")},
            )
            return Answer(201, {"xml": _confirm_bod(ns, bodid, reference=reference)})

        answer, replayed = await self.ledger.once(B2MML_COLLECTION, bodid.lower(), produce)
        self._count("replays" if replayed else "booked")
        return web.Response(
            status=200 if replayed else 201,
            text=str(answer.body["xml"]),
            content_type="application/xml",
            headers={"Idempotent-Replayed": "true"} if replayed else None,
        )
