"""Validation of business documents: one small schema (a tuple of field rules) per route.

A schema is data, so that a new profile (SAP OData, ERPNext...) is a new table, not new code.
:func:`validate` returns the first problem as ``"<field>: <reason>"`` (the 422 body's
``error``), or None when the document is valid. Fields not in the schema are kept and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = [
    "CONFIRMATION",
    "GOODS_RECEIPT",
    "INSPECTION_RESULT",
    "NONCONFORMANCE",
    "Check",
    "FieldRule",
    "Schema",
    "boolean",
    "characteristics",
    "integer_between",
    "iso_datetime",
    "nonempty_string",
    "nonnegative_integer",
    "one_of",
    "positive_number",
    "validate",
]

#: a check returns None when the value is fine, else the reason
Check = Callable[[Any], str | None]


@dataclass(frozen=True)
class FieldRule:
    name: str
    check: Check
    required: bool = True


Schema = tuple[FieldRule, ...]


def nonempty_string(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be a string"
    if not value.strip():
        return "must not be empty"
    return None


def nonnegative_integer(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int):
        return "must be an integer"
    if value < 0:
        return "must be >= 0"
    return None


def positive_number(value: Any) -> str | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "must be a number"
    if not math.isfinite(value) or value <= 0:
        return "must be > 0"
    return None


def boolean(value: Any) -> str | None:
    return None if isinstance(value, bool) else "must be true or false"


def iso_datetime(value: Any) -> str | None:
    if not isinstance(value, str):
        return "must be an ISO 8601 date-time string"
    try:
        datetime.fromisoformat(value)
    except ValueError:
        return "must be an ISO 8601 date-time string"
    return None


def integer_between(low: int, high: int) -> Check:
    def check(value: Any) -> str | None:
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if not low <= value <= high:
            return f"must be between {low} and {high}"
        return None

    return check


def one_of(*choices: str) -> Check:
    def check(value: Any) -> str | None:
        if value not in choices:
            return f"must be one of {', '.join(choices)}"
        return None

    return check


def characteristics(value: Any) -> str | None:
    if not isinstance(value, list):
        return "must be a list"
    for index, item in enumerate(value):
        if not isinstance(item, dict):
            return f"item {index} must be an object"
        if "name" not in item:
            return f"item {index} needs a name"
        if nonempty_string(item["name"]) is not None:
            return f"item {index} name must be a non-empty string"
    return None


def validate(schema: Schema, document: Any) -> str | None:
    """The first problem of ``document`` as ``"<field>: <reason>"``, or None."""
    if not isinstance(document, Mapping):
        return "body: must be a JSON object"
    for rule in schema:
        if rule.name not in document:
            if rule.required:
                return f"{rule.name}: is required"
            continue
        reason = rule.check(document[rule.name])
        if reason is not None:
            return f"{rule.name}: {reason}"
    return None


#: ERP production confirmation (docs/simulators.md)
CONFIRMATION: Schema = (
    FieldRule("order", nonempty_string),
    FieldRule("operation", nonempty_string),
    FieldRule("material", nonempty_string),
    FieldRule("lot", nonempty_string),
    FieldRule("good", nonnegative_integer),
    FieldRule("scrap", nonnegative_integer),
    FieldRule("unit", nonempty_string),
    FieldRule("start", iso_datetime),
    FieldRule("end", iso_datetime),
    FieldRule("final", boolean),
)

#: WMS goods receipt
GOODS_RECEIPT: Schema = (
    FieldRule("material", nonempty_string),
    FieldRule("lot", nonempty_string),
    FieldRule("quantity", positive_number),
    FieldRule("unit", nonempty_string),
    FieldRule("source_location", nonempty_string),
)

#: QMS inspection result
INSPECTION_RESULT: Schema = (
    FieldRule("lot", nonempty_string),
    FieldRule("material", nonempty_string),
    FieldRule("characteristics", characteristics),
    FieldRule("decision", one_of("accept", "reject", "hold")),
)

#: QMS nonconformance (raised by an SPC alarm)
NONCONFORMANCE: Schema = (
    FieldRule("machine", nonempty_string),
    FieldRule("characteristic", nonempty_string),
    FieldRule("rule", integer_between(1, 8)),
    FieldRule("time", iso_datetime),
)
