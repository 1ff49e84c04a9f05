"""Each profile's own mapping (our fields → the target's), which a destination's `mapping`
section overrides, and the checks run on every destination when the config loads.

Pure data and functions: no network libraries are imported here, so ``edge-gateway check``
stays fast.
"""

from __future__ import annotations

__all__ = [
    "B2MML_SLOTS",
    "accepted_kinds",
    "check_destination",
    "compile_mappings",
    "default_fields",
]

from typing import TYPE_CHECKING, Any

from gateway.config.destinations import FieldSpec, System
from gateway.connectors.mapping import CompiledMapping, MappingError, compile_mapping
from gateway.documents import KINDS, DocumentKind

if TYPE_CHECKING:
    from gateway.config.destinations import (
        B2mmlDestinationConfig,
        ErpNextDestinationConfig,
        RestDestinationConfig,
        SapDestinationConfig,
    )

    AnyDestination = (
        RestDestinationConfig
        | SapDestinationConfig
        | ErpNextDestinationConfig
        | B2mmlDestinationConfig
    )

COMPLETION = str(DocumentKind.COMPLETION)
LOT_RESULT = str(DocumentKind.LOT_RESULT)
SPC_ALARM = "spc_alarm"
"""Emitted by the SPC engine on a rule violation; a nonconformance for the QMS."""


def _from(source: str, **options: Any) -> FieldSpec:
    return FieldSpec.model_validate({"from": source, **options})


def _const(value: Any, **options: Any) -> FieldSpec:
    return FieldSpec.model_validate({"value": value, **options})


def _identity(kind: str, fields: Any = None) -> dict[str, FieldSpec]:
    declared = KINDS[kind].fields
    names = declared if fields is None else [f for f in fields if f in declared]
    return {name: _from(name) for name in names}


# --- which documents go where ----------------------------------------------------------------


def accepted_kinds(config: AnyDestination) -> list[str]:
    """The document kinds a destination receives."""
    profile = config.profile
    if profile == "rest":
        base = LOT_RESULT if config.system is System.QMS else COMPLETION
        return [base, *(k for k in config.endpoints if k != base)]  # type: ignore[union-attr]
    if profile in ("sap_s4hana", "erpnext"):
        return [COMPLETION]
    documents = list(config.documents)  # type: ignore[union-attr]
    if documents:
        return documents
    if config.system is System.ERP:
        return [COMPLETION]
    return [LOT_RESULT, *([SPC_ALARM] if SPC_ALARM in KINDS else [])]


# --- the profiles' own mappings --------------------------------------------------------------

_CONFIRMATION_FIELDS = (
    "gateway",
    "work_center",
    "machine",
    "order",
    "operation",
    "material",
    "lot",
    "good",
    "scrap",
    "rework",
    "unit",
    "start",
    "end",
    "sequence",
    "final",
    "trigger",
    "handling_unit",
)


def _rest(config: RestDestinationConfig, kind: str) -> dict[str, FieldSpec]:
    if kind == COMPLETION and config.system is System.ERP:
        fields = _identity(kind, _CONFIRMATION_FIELDS)
    elif kind == COMPLETION and config.system is System.WMS:
        fields = {
            "material": _from("material"),
            "lot": _from("lot"),
            "quantity": _from("good"),
            "unit": _from("unit"),
            "handling_unit": _from("handling_unit"),
            "source_location": _from("machine"),
            "order": _from("order"),
            "work_center": _from("work_center"),
        }
    else:
        fields = _identity(kind)
    if config.idempotency.mode != "header":
        fields[config.idempotency.field] = _from("idempotency_key")
    for name, value in config.constants.items():
        fields[name] = _const(value)
    return fields


def _sap(config: SapDestinationConfig) -> dict[str, FieldSpec]:
    decimal = {"type": "decimal", "round": 3}
    fields = {
        "OrderID": _from("order"),
        "OrderOperation": _from("operation"),
        "Sequence": _const("0"),
        "ConfirmationYieldQuantity": _from("good", **decimal),
        "ConfirmationScrapQuantity": _from("scrap", **decimal),
        "ConfirmationReworkQuantity": _from("rework", **decimal),
        "ConfirmationUnit": _from("unit"),
        "IsFinalConfirmation": _from("final", type="boolean"),
        "FinalConfirmationType": _from("final", values={"true": "X", "false": ""}),
        "Plant": _const(config.plant),
        "PostingDate": _from("end", format="odata_date"),
        "ConfirmedExecutionStartDate": _from("start", format="odata_date"),
        "ConfirmedExecutionStartTime": _from("start", format="odata_time"),
        "ConfirmedExecutionEndDate": _from("end", format="odata_date"),
        "ConfirmedExecutionEndTime": _from("end", format="odata_time"),
        "ExternalSystemConfirmation": _from("idempotency_key", format="guid"),
        "ConfirmationText": _from("lot", max_length=40),
    }
    if config.goods_receipt:
        item = "to_ProdnOrdConfMatlDocItm.results[0]."
        fields |= {
            item + "Material": _from("material"),
            item + "Plant": _const(config.plant),
            item + "StorageLocation": _const(config.storage_location or ""),
            item + "GoodsMovementType": _const(config.movement_type),
            item + "GoodsMovementRefDocType": _const("F"),
            item + "OrderID": _from("order"),
            item + "OrderItem": _const("1"),
            item + "Batch": _from("lot", max_length=10),
            item + "QuantityInEntryUnit": _from("good", **decimal),
            item + "EntryUnit": _from("unit"),
            item + "ManufactureDate": _from("end", format="odata_date"),
        }
    return fields


def _erpnext(config: ErpNextDestinationConfig) -> dict[str, FieldSpec]:
    fields: dict[str, FieldSpec] = {
        "stock_entry_type": _const(config.entry_type),
        "company": _const(config.company),
        "posting_date": _from("end", format="date"),
        "posting_time": _from("end", format="time"),
        "set_posting_time": _const(1),
        config.reference_field: _from("idempotency_key"),
        "remarks": _from("machine"),
        "to_warehouse": _const(config.to_warehouse),
        "items[0].item_code": _from("material"),
        "items[0].qty": _from("good"),
        "items[0].t_warehouse": _const(config.to_warehouse),
        "items[0].batch_no": _from("lot"),
    }
    if config.from_warehouse:
        fields["from_warehouse"] = _const(config.from_warehouse)
    if config.system is System.ERP:
        fields["work_order"] = _from("order")
        fields["fg_completed_qty"] = _from("good")
        fields["items[0].is_finished_item"] = _const(1)
    elif config.from_warehouse:
        fields["items[0].s_warehouse"] = _const(config.from_warehouse)
    if config.submit:
        fields["docstatus"] = _const(1)
    return fields


B2MML_SLOTS: dict[str, tuple[str, ...]] = {
    COMPLETION: (
        "PerformanceID",
        "OrderID",
        "OperationID",
        "EquipmentID",
        "MaterialID",
        "LotID",
        "Quantity",
        "ScrapQuantity",
        "Unit",
        "StartTime",
        "EndTime",
        "State",
    ),
    LOT_RESULT: (
        "LotID",
        "MaterialID",
        "OrderID",
        "EquipmentID",
        "StartTime",
        "EndTime",
        "Decision",
        "Characteristics",
    ),
    SPC_ALARM: ("EventID", "EquipmentID", "EffectiveTime", "Description"),
}
"""The values a B2MML message is built from, per kind (the targets of a b2mml mapping)."""

_CHARACTERISTIC_ITEMS = (
    "name",
    "unit",
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


def _b2mml(kind: str) -> dict[str, FieldSpec]:
    if kind == COMPLETION:
        return {
            "PerformanceID": _from("idempotency_key"),
            "OrderID": _from("order"),
            "OperationID": _from("operation"),
            "EquipmentID": _from("machine"),
            "MaterialID": _from("material"),
            "LotID": _from("lot"),
            "Quantity": _from("good"),
            "ScrapQuantity": _from("scrap"),
            "Unit": _from("unit"),
            "StartTime": _from("start", format="iso"),
            "EndTime": _from("end", format="iso"),
            "State": _from("final", values={"true": "Completed", "false": "Running"}),
        }
    if kind == LOT_RESULT:
        items = {name: {"from": name} for name in _CHARACTERISTIC_ITEMS}
        return {
            "LotID": _from("lot"),
            "MaterialID": _from("material"),
            "OrderID": _from("order"),
            "EquipmentID": _from("machine"),
            "StartTime": _from("start", format="iso"),
            "EndTime": _from("end", format="iso"),
            "Decision": _from("decision"),
            "Characteristics": _from("characteristics", items=items),
        }
    declared = KINDS[kind].fields
    fields: dict[str, FieldSpec] = {}
    if "idempotency_key" in declared:
        fields["EventID"] = _from("idempotency_key")
    if "machine" in declared:
        fields["EquipmentID"] = _from("machine")
    stamp = next((name for name, kind_type in declared.items() if kind_type == "timestamp"), None)
    if stamp is not None:
        fields["EffectiveTime"] = _from(stamp, format="iso")
    return fields


def default_fields(config: AnyDestination, kind: str) -> dict[str, FieldSpec]:
    """The profile's own mapping of `kind` for this destination."""
    profile = config.profile
    if profile == "rest":
        return _rest(config, kind)  # type: ignore[arg-type]
    if profile == "sap_s4hana":
        return _sap(config)  # type: ignore[arg-type]
    if profile == "erpnext":
        return _erpnext(config)  # type: ignore[arg-type]
    return _b2mml(kind)


def compile_mappings(config: AnyDestination) -> dict[str, CompiledMapping]:
    """Every accepted kind's compiled mapping; :class:`MappingError` lists every problem."""
    problems: list[str] = []
    compiled: dict[str, CompiledMapping] = {}
    for kind in accepted_kinds(config):
        if kind not in KINDS or (config.profile == "b2mml" and kind not in B2MML_SLOTS):
            continue  # reported by check_destination
        slots: tuple[str, ...] | None = None
        if config.profile == "b2mml":
            slots = B2MML_SLOTS.get(kind)
        try:
            compiled[kind] = compile_mapping(
                kind,
                default_fields(config, kind),
                config.mapping.get(kind),
                timezone=config.timezone,
                allowed_targets=slots,
            )
        except MappingError as exc:
            problems += exc.problems
    if problems:
        raise MappingError(problems)
    return compiled


def check_destination(config: Any) -> list[str]:
    """Every problem of a destination's kinds and mappings, each with its path."""
    problems: list[str] = []
    kinds = accepted_kinds(config)
    for kind in kinds:
        if kind not in KINDS:
            where = "documents" if config.profile == "b2mml" else "endpoints"
            problems.append(f"{where}: unknown document kind {kind!r}; known: {', '.join(KINDS)}")
        elif config.profile == "b2mml" and kind not in B2MML_SLOTS:
            problems.append(
                f"documents: b2mml has no message for {kind!r}; it sends: "
                + ", ".join(k for k in B2MML_SLOTS if k in KINDS)
            )
    for kind in config.mapping:
        if kind not in kinds:
            problems.append(
                f"mapping.{kind}: this destination does not receive {kind!r} documents "
                f"(it receives: {', '.join(kinds)})"
            )
    try:
        compile_mappings(config)
    except MappingError as exc:
        problems += exc.problems
    return problems
