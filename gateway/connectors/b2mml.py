"""ISA-95 messages as B2MML-style XML BODs, posted over HTTP.

=================  ===============================  ==========================================
document           message (verb + noun)            namespace
=================  ===============================  ==========================================
``lot_result``     ``ProcessMaterialLot``: the lot  ``http://www.mesa.org/xml/B2MML`` (V0700)
                   with one ``MaterialLotProperty``
                   per characteristic (statistics
                   as nested properties, the
                   decision as ``TestResult``)
``spc_alarm``      ``ProcessOperationsEvent``       V0700
                   (``OperationsType`` Quality,
                   ``Category`` Nonconformance)
``completion``     ``ProcessProductionPerformance``  ``http://www.mesa.org/xml/B2MML-V0600``
=================  ===============================  ==========================================

Every message has an ``ApplicationArea`` with the sender, the document's creation time and a
``BODID`` derived from the document's key: a resend is the same BOD, which the receiver
recognises. The values come from the destination's mapping (``LotID``, ``EquipmentID``...),
so formats, time zones and constants are set there.
"""

from __future__ import annotations

__all__ = ["B2mmlConnector", "build_message", "xml_reason"]

import json
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from typing import Any
from xml.sax.saxutils import escape, quoteattr

from gateway.config.destinations import B2mmlDestinationConfig
from gateway.connectors.base import Rendered, apply_mapping
from gateway.connectors.defaults import COMPLETION, LOT_RESULT, compile_mappings
from gateway.connectors.http import HttpClient, HttpReply, classify, json_reason
from gateway.documents import Document
from gateway.processors.timefmt import iso_utc

V0600 = "http://www.mesa.org/xml/B2MML-V0600"
V0700 = "http://www.mesa.org/xml/B2MML"

_STATISTICS = (
    "n",
    "mean",
    "std",
    "min",
    "max",
    "out_of_spec",
    "lsl",
    "usl",
    "nominal",
    "cpk",
    "ppk",
)


def _guid(key: str) -> str:
    text = (key.replace("-", "") + "0" * 32)[:32].lower()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _Builder:
    def __init__(self, namespace: str) -> None:
        self.ns = namespace

    def element(self, parent: ET.Element | None, tag: str, text: Any = None) -> ET.Element:
        name = f"{{{self.ns}}}{tag}"
        node = ET.Element(name) if parent is None else ET.SubElement(parent, name)
        if text is not None:
            node.text = _text(text)
        return node

    def optional(self, parent: ET.Element, tag: str, value: Any) -> None:
        if value is not None and value != "":
            self.element(parent, tag, value)

    def value(self, parent: ET.Element, value: Any, unit: str | None = None) -> None:
        node = self.element(parent, "Value")
        self.element(node, "ValueString", value)
        self.element(node, "DataType", _data_type(value))
        if unit:
            self.element(node, "UnitOfMeasure", unit)

    def property(self, parent: ET.Element, tag: str, name: str, value: Any, unit: str = "") -> None:
        node = self.element(parent, tag)
        self.element(node, "ID", name)
        self.value(node, value, unit)


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if not value.is_integer() else str(int(value))
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _data_type(value: Any) -> str:
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "double"
    return "string"


def build_message(
    document: Document, values: Mapping[str, Any], *, sender: str
) -> tuple[str, bytes]:
    """The BOD for one document: (root element name, UTF-8 XML)."""
    if document.kind == COMPLETION:
        b, noun = _Builder(V0600), "ProductionPerformance"
    elif document.kind == LOT_RESULT:
        b, noun = _Builder(V0700), "MaterialLot"
    else:
        b, noun = _Builder(V0700), "OperationsEvent"
    root_name = f"Process{noun}"
    root = b.element(None, root_name)
    root.set("releaseID", "V0600" if b.ns == V0600 else "V0700")
    area = b.element(root, "ApplicationArea")
    b.element(b.element(area, "Sender"), "LogicalID", sender)
    b.element(area, "CreationDateTime", iso_utc(document.created_ns))
    b.element(area, "BODID", _guid(document.key))
    data = b.element(root, "DataArea")
    b.element(data, "Process")
    if document.kind == COMPLETION:
        _production_performance(b, data, values)
    elif document.kind == LOT_RESULT:
        _material_lot(b, data, values)
    else:
        _operations_event(b, data, values, document)
    return root_name, _serialise(root, b.ns)


def _serialise(root: ET.Element, namespace: str) -> bytes:
    """UTF-8 XML with `namespace` as the default namespace (ElementTree cannot do that with
    unqualified attributes such as ``releaseID``)."""
    parts = ['<?xml version="1.0" encoding="UTF-8"?>\n']

    def write(node: ET.Element, depth: int) -> None:
        name = node.tag.rsplit("}", 1)[-1]
        attributes = "".join(f" {k}={quoteattr(v)}" for k, v in node.attrib.items())
        if depth == 0:
            attributes = f" xmlns={quoteattr(namespace)}" + attributes
        indent = "  " * depth
        children = list(node)
        if children:
            parts.append(f"{indent}<{name}{attributes}>\n")
            for child in children:
                write(child, depth + 1)
            parts.append(f"{indent}</{name}>\n")
        elif node.text is None:
            parts.append(f"{indent}<{name}{attributes}/>\n")
        else:
            parts.append(f"{indent}<{name}{attributes}>{escape(node.text)}</{name}>\n")

    write(root, 0)
    return "".join(parts).encode("utf-8")


def _production_performance(b: _Builder, data: ET.Element, v: Mapping[str, Any]) -> None:
    performance = b.element(data, "ProductionPerformance")
    b.element(performance, "ID", v.get("PerformanceID", ""))
    response = b.element(performance, "ProductionResponse")
    b.element(response, "ID", f"PR-{v.get('OrderID', '')}-{v.get('PerformanceID', '')[:8]}")
    b.element(response, "ProductionRequestID", v.get("OrderID", ""))
    segment = b.element(response, "SegmentResponse")
    b.element(segment, "ID", f"SR-{v.get('OperationID', '')}-{v.get('PerformanceID', '')[:8]}")
    b.optional(segment, "ProcessSegmentID", v.get("OperationID"))
    b.optional(segment, "ActualStartTime", v.get("StartTime"))
    b.optional(segment, "ActualEndTime", v.get("EndTime"))
    if v.get("EquipmentID"):
        b.element(b.element(segment, "EquipmentActual"), "EquipmentID", v["EquipmentID"])
    for use, quantity in (("Produced", v.get("Quantity")), ("Scrap", v.get("ScrapQuantity"))):
        if quantity is None or (use == "Scrap" and not quantity):
            continue
        material = b.element(segment, "MaterialActual")
        b.optional(material, "MaterialDefinitionID", v.get("MaterialID"))
        b.optional(material, "MaterialLotID", v.get("LotID"))
        b.element(material, "MaterialUse", "Produced")
        amount = b.element(material, "Quantity")
        b.element(amount, "QuantityString", quantity)
        b.element(amount, "DataType", "integer" if isinstance(quantity, int) else "double")
        b.optional(amount, "UnitOfMeasure", v.get("Unit"))
        if use == "Scrap":
            b.property(material, "MaterialActualProperty", "Scrap", True)
    b.element(segment, "SegmentState", v.get("State", "Completed"))
    b.element(response, "ResponseState", v.get("State", "Completed"))


def _material_lot(b: _Builder, data: ET.Element, v: Mapping[str, Any]) -> None:
    lot = b.element(data, "MaterialLot")
    b.element(lot, "ID", v.get("LotID", ""))
    description = "Inspection result"
    if v.get("OrderID"):
        description += f" of order {v['OrderID']}"
    if v.get("EquipmentID"):
        description += f" on {v['EquipmentID']}"
    b.element(lot, "Description", description)
    b.optional(lot, "MaterialDefinitionID", v.get("MaterialID"))
    b.optional(lot, "Status", v.get("Decision"))
    for item in v.get("Characteristics") or []:
        if not isinstance(item, Mapping):
            continue
        name = str(item.get("name", "characteristic"))
        unit = str(item.get("unit") or "")
        prop = b.element(lot, "MaterialLotProperty")
        b.element(prop, "ID", name)
        if item.get("mean") is not None:
            b.value(prop, item["mean"], unit)
        for statistic in _STATISTICS:
            if statistic in item and item[statistic] is not None:
                b.property(
                    prop,
                    "MaterialLotProperty",
                    statistic,
                    item[statistic],
                    unit
                    if statistic in ("mean", "std", "min", "max", "lsl", "usl", "nominal")
                    else "",
                )
        result = b.element(prop, "TestResult")
        b.element(result, "ID", f"{v.get('LotID', '')}/{name}")
        b.optional(result, "TestDateTime", v.get("EndTime"))
        b.value(result, v.get("Decision", ""))


def _operations_event(
    b: _Builder, data: ET.Element, v: Mapping[str, Any], document: Document
) -> None:
    event = b.element(data, "OperationsEvent")
    b.element(event, "ID", v.get("EventID", document.key))
    b.element(event, "Description", v.get("Description") or _describe(document))
    if v.get("EquipmentID"):
        scope = b.element(event, "HierarchyScope")
        b.element(scope, "EquipmentID", v["EquipmentID"])
        b.element(scope, "EquipmentElementLevel", "WorkCell")
    b.optional(event, "EffectiveTimeStamp", v.get("EffectiveTime"))
    b.element(event, "RecordTimeStamp", iso_utc(document.created_ns))
    b.element(event, "OperationsType", "Quality")
    b.element(event, "Category", "Nonconformance")
    for name, value in document.body.items():
        if name in ("gateway", "idempotency_key") or value is None:
            continue
        b.property(event, "OperationsEventProperty", name, value)


def _describe(document: Document) -> str:
    body = document.body
    if "rule" in body and "characteristic" in body:
        name = f" ({body['rule_name']})" if body.get("rule_name") else ""
        lot = f", lot {body['lot']}" if body.get("lot") else ""
        return (
            f"SPC alarm: Nelson rule {body['rule']}{name} on {body['characteristic']} "
            f"of {body.get('machine', document.cell)}{lot}"
        )
    return f"{document.kind} on {document.cell}"


def xml_reason(body: str) -> str:
    """The reason of an error answer: the ``Description`` texts of a ConfirmBOD, or the text."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError:
        return json_reason(body)
    texts = [
        " ".join(node.text.split())
        for node in root.iter()
        if node.tag.rsplit("}", 1)[-1] == "Description" and node.text and node.text.strip()
    ]
    return "; ".join(texts)[:400] if texts else " ".join("".join(root.itertext()).split())[:400]


class B2mmlConnector:
    """Posts one B2MML BOD per document."""

    def __init__(self, config: B2mmlDestinationConfig, *, gateway_id: str = "") -> None:
        self.name = config.name
        self._config = config
        self._sender = config.sender or gateway_id or "edge-gateway"
        self._mappings = compile_mappings(config)
        self._http = HttpClient(
            config.name,
            timeout=config.timeout,
            concurrency=config.concurrency,
            auth=config.auth,
            tls=config.tls,
            headers={
                "Content-Type": "application/xml; charset=utf-8",
                "Accept": "application/xml",
                **config.headers,
            },
        )

    def accepts(self, document_kind: str) -> bool:
        return document_kind in self._mappings

    def message(self, document: Document) -> tuple[str, bytes]:
        values = apply_mapping(self.name, self._mappings, document)
        return build_message(document, values, sender=self._sender)

    def render(self, document: Document) -> Rendered:
        name, xml = self.message(document)
        return Rendered(
            "POST",
            self._config.url,
            "application/xml",
            xml.decode("utf-8"),
            f"{name}, BODID {_guid(document.key)} (the receiver recognises a resend)",
        )

    async def deliver(self, document: Document) -> str:
        _, xml = self.message(document)
        reply = await self._http.send("POST", self._config.url, body=xml)
        error = classify(self.name, reply, reason=xml_reason)
        if error is not None:
            raise error
        return _reference(reply) or _guid(document.key)

    async def close(self) -> None:
        await self._http.close()


def _reference(reply: HttpReply) -> str:
    try:
        root = ET.fromstring(reply.text)
    except ET.ParseError:
        return ""
    for node in root.iter():
        if node.tag.rsplit("}", 1)[-1] in ("DocumentID", "ReferenceID") and node.text:
            return node.text.strip()
    return ""
