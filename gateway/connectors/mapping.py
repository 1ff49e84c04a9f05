"""The field mapping language: our document's fields → the target's fields.

A mapping is a table ``target field → FieldSpec`` per document kind (see
:class:`~gateway.config.destinations.FieldSpec`). Each profile brings its own table (SAP's
``OrderID: order``...); the destination's ``mapping`` section is merged over it by target name.
:func:`compile_mapping` checks the table once at start-up against the kind's declared fields
(:data:`gateway.documents.KINDS`) and turns it into a :class:`CompiledMapping`, whose
:meth:`~CompiledMapping.apply` builds the body of one document with no further checks of the
table itself.

For one field the steps are, in this order: the source value (``from``) or the constant
(``value``); ``default`` when it is missing or null; the ``values`` table; for numbers
``convert`` (unit of measure), ``factor``, ``offset``, ``round``; for timestamps ``format`` in
``timezone``; for strings ``format: guid``, ``zero_pad``, ``max_length``; finally ``type``. A
field whose value ends up missing is left out of the body. Target names may be paths:
``items[0].batch_no`` builds ``{"items": [{"batch_no": ...}]}``.
"""

from __future__ import annotations

__all__ = [
    "CompiledMapping",
    "MappingError",
    "check_format",
    "compile_mapping",
    "conversion",
    "format_timestamp",
    "parse_path",
    "set_path",
]

import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from gateway.config.destinations import FieldSpec, KindMapping
from gateway.documents import KINDS


class MappingError(ValueError):
    """A mapping is invalid (at start-up) or cannot be applied to a document (at delivery).

    `problems` lists every problem as ``"<path>: <reason>"``.
    """

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


# --- units of measure ------------------------------------------------------------------------

# unit → (dimension, factor to the dimension's base unit, offset added after the factor)
_UNITS: dict[str, tuple[str, float, float]] = {}


def _units(dimension: str, table: Mapping[str, float], *aliases: tuple[str, str]) -> None:
    for name, factor in table.items():
        _UNITS[name.lower()] = (dimension, factor, 0.0)
    for alias, name in aliases:
        _UNITS[alias.lower()] = _UNITS[name.lower()]


_units(
    "length",
    {"m": 1.0, "km": 1000.0, "cm": 0.01, "mm": 0.001, "um": 1e-6, "in": 0.0254, "ft": 0.3048},
    ("µm", "um"),
    ("mtr", "m"),
)
_units(
    "mass",
    {"kg": 1.0, "g": 0.001, "mg": 1e-6, "t": 1000.0, "lb": 0.45359237, "oz": 0.028349523125},
    ("kgm", "kg"),
    ("grm", "g"),
    ("tne", "t"),
)
_units(
    "volume",
    {"m3": 1.0, "l": 0.001, "ml": 1e-6, "gal": 0.003785411784},
    ("ltr", "l"),
    ("mtq", "m3"),
)
_units(
    "time",
    {"s": 1.0, "ms": 0.001, "min": 60.0, "h": 3600.0, "d": 86400.0},
    ("sec", "s"),
    ("hur", "h"),
)
_units(
    "pressure",
    {"pa": 1.0, "kpa": 1000.0, "mpa": 1e6, "bar": 1e5, "mbar": 100.0, "psi": 6894.757293168},
)
_units(
    "count",
    {"ea": 1.0, "pce": 1.0, "pc": 1.0, "st": 1.0, "pcs": 1.0, "nos": 1.0, "dz": 12.0},
    ("each", "ea"),
    ("unit", "ea"),
    ("dzn", "dz"),
)
# temperatures: to kelvin
_UNITS["k"] = ("temperature", 1.0, 0.0)
_UNITS["c"] = ("temperature", 1.0, 273.15)
_UNITS["°c"] = _UNITS["c"]
_UNITS["f"] = ("temperature", 5.0 / 9.0, 273.15 - 32.0 * 5.0 / 9.0)
_UNITS["°f"] = _UNITS["f"]


def conversion(source: str, target: str) -> Callable[[float], float]:
    """A function converting numbers from `source` to `target` unit; ValueError if impossible."""
    try:
        from_dim, from_factor, from_offset = _UNITS[source.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown unit {source!r}; known: {', '.join(sorted(_UNITS))}") from None
    try:
        to_dim, to_factor, to_offset = _UNITS[target.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown unit {target!r}; known: {', '.join(sorted(_UNITS))}") from None
    if from_dim != to_dim:
        raise ValueError(f"cannot convert {source} ({from_dim}) to {target} ({to_dim})")

    def convert(value: float) -> float:
        base = value * from_factor + from_offset
        return (base - to_offset) / to_factor

    return convert


# --- formats ------------------------------------------------------------------------------------

TIME_FORMATS = (
    "iso",
    "iso_local",
    "date",
    "time",
    "odata_date",
    "odata_datetime",
    "odata_time",
    "epoch_s",
    "epoch_ms",
)
STRING_FORMATS = ("guid",)


def check_format(name: str) -> str:
    """ValueError unless `name` is a known format or a strftime pattern (contains ``%``)."""
    if name in TIME_FORMATS or name in STRING_FORMATS or "%" in name:
        return name
    raise ValueError(
        f"unknown format {name!r}; use one of {', '.join(TIME_FORMATS + STRING_FORMATS)} "
        "or a strftime pattern such as %d.%m.%Y %H:%M"
    )


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        moment = datetime.fromtimestamp(float(value), UTC)
    elif isinstance(value, str):
        moment = datetime.fromisoformat(value)
    else:
        raise ValueError(f"{value!r} is not a timestamp")
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def format_timestamp(value: Any, fmt: str, zone: ZoneInfo) -> str | int:
    """Format an ISO 8601 timestamp (or epoch seconds) in `zone` as `fmt` says."""
    moment = _parse_time(value)
    local = moment.astimezone(zone)
    if fmt == "iso":
        text = local.isoformat(timespec="milliseconds")
        return text.replace("+00:00", "Z") if local.utcoffset() == timedelta(0) else text
    if fmt == "iso_local":
        return local.replace(tzinfo=None).isoformat(timespec="seconds")
    if fmt == "date":
        return local.strftime("%Y-%m-%d")
    if fmt == "time":
        return local.strftime("%H:%M:%S")
    if fmt == "odata_date":
        midnight = datetime(local.year, local.month, local.day, tzinfo=UTC)
        return f"/Date({int((midnight - _EPOCH).total_seconds() * 1000)})/"
    if fmt == "odata_datetime":
        wall = local.replace(tzinfo=UTC)
        return f"/Date({int((wall - _EPOCH).total_seconds() * 1000)})/"
    if fmt == "odata_time":
        return f"PT{local.hour:02d}H{local.minute:02d}M{local.second:02d}S"
    if fmt == "epoch_s":
        return int(moment.timestamp())
    if fmt == "epoch_ms":
        return int(moment.timestamp() * 1000)
    return local.strftime(fmt)


def _guid(value: Any) -> str:
    text = str(value).replace("-", "").lower()
    if not re.fullmatch(r"[0-9a-f]{32}", text):
        raise ValueError(f"{value!r} is not 32 hexadecimal digits")
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


# --- paths ----------------------------------------------------------------------------------

_PATH_PART = re.compile(r"([A-Za-z_@$][\w@$ \-]*)((?:\[\d+\])*)")

PathKey = tuple[str | int, ...]


def parse_path(path: str) -> PathKey:
    """``items[0].batch_no`` → ``("items", 0, "batch_no")``; ValueError if malformed."""
    keys: list[str | int] = []
    for part in path.split("."):
        match = _PATH_PART.fullmatch(part)
        if match is None:
            raise ValueError(f"{path!r} is not a field name or path (name, a.b, items[0].x)")
        keys.append(match.group(1))
        keys.extend(int(index) for index in re.findall(r"\[(\d+)\]", match.group(2)))
    return tuple(keys)


def set_path(target: dict[str, Any], path: PathKey, value: Any) -> None:
    """Set `value` at `path` in `target`, creating objects and lists on the way."""
    node: Any = target
    for position, key in enumerate(path):
        last = position == len(path) - 1
        following = None if last else path[position + 1]
        empty: Any = [] if isinstance(following, int) else {}
        if isinstance(key, int):
            while len(node) <= key:
                node.append(None)
            if last:
                node[key] = value
            else:
                if node[key] is None:
                    node[key] = empty
                node = node[key]
        else:
            if last:
                node[key] = value
            else:
                node = node.setdefault(key, empty)


# --- compiled fields ---------------------------------------------------------------------------


def _table_key(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


_NUMERIC_TYPES = frozenset({"int", "float", "number"})


@dataclass(frozen=True, slots=True)
class _Field:
    target: str
    path: PathKey
    spec: FieldSpec
    zone: ZoneInfo
    convert: Callable[[float], float] | None
    items: CompiledMapping | None
    plain: bool = False
    """Only ``from``: the value is copied as it is (the common case, kept fast)."""

    def value(self, body: Mapping[str, Any]) -> Any:
        spec = self.spec
        value = body.get(spec.from_) if spec.from_ is not None else spec.value
        if value is None:
            value = spec.default
        if value is None:
            return None
        if spec.values is not None:
            value = spec.values.get(_table_key(value), value)
        if self.items is not None:
            if not isinstance(value, list):
                raise ValueError(f"{value!r} is not a list")
            return [self.items.apply(item) if isinstance(item, Mapping) else item for item in value]
        if (
            self.convert is not None
            or spec.factor is not None
            or spec.offset is not None
            or spec.round is not None
        ):
            value = self._number(value)
        if spec.format is not None:
            if spec.format == "guid":
                value = _guid(value)
            else:
                value = format_timestamp(value, spec.format, self.zone)
        if isinstance(value, str):
            if spec.zero_pad is not None and value.isdigit():
                value = value.zfill(spec.zero_pad)
            if spec.max_length is not None:
                value = value[: spec.max_length]
        return _cast(value, spec.type, spec.round)

    def _number(self, value: Any) -> float:
        spec = self.spec
        if isinstance(value, bool) or not isinstance(value, int | float | str):
            raise ValueError(f"{value!r} is not a number")
        number = float(value)
        if not math.isfinite(number):
            raise ValueError(f"{value!r} is not a finite number")
        if self.convert is not None:
            number = self.convert(number)
        if spec.factor is not None:
            number *= spec.factor
        if spec.offset is not None:
            number += spec.offset
        if spec.round is not None:
            number = round(number, spec.round)
        return number


def _cast(value: Any, kind: str | None, decimals: int | None) -> Any:
    if kind is None:
        if isinstance(value, float) and value.is_integer() and decimals == 0:
            return int(value)
        return value
    if kind == "string":
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float) and value.is_integer():
            return str(int(value))
        return str(value)
    if kind == "integer":
        if isinstance(value, bool):
            return int(value)
        return round(float(value))
    if kind == "number":
        return float(value)
    if kind == "boolean":
        if isinstance(value, str):
            if value.strip().lower() in ("true", "x", "1", "yes"):
                return True
            if value.strip().lower() in ("false", "", "0", "no"):
                return False
            raise ValueError(f"{value!r} is not a boolean")
        return bool(value)
    # decimal: a string with a fixed number of decimals (OData Edm.Decimal)
    places = 3 if decimals is None else decimals
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return f"{float(value):.{places}f}"


class CompiledMapping:
    """A checked mapping of one document kind; :meth:`apply` builds a body."""

    def __init__(self, kind: str, fields: Iterable[_Field]) -> None:
        self.kind = kind
        self.fields = tuple(fields)

    @property
    def targets(self) -> list[str]:
        return [f.target for f in self.fields]

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """The target's body for one document; :class:`MappingError` if a value cannot be
        converted (a non-numeric quantity, a malformed timestamp)."""
        out: dict[str, Any] = {}
        problems: list[str] = []
        for field in self.fields:
            if field.plain:
                value = body.get(field.spec.from_)  # type: ignore[arg-type]
                if value is not None:
                    if len(field.path) == 1:
                        out[field.target] = value
                    else:
                        set_path(out, field.path, value)
                continue
            try:
                value = field.value(body)
            except (ValueError, TypeError, OverflowError) as exc:
                source = field.spec.from_ or "value"
                problems.append(f"{self.kind} field {field.target} (from {source}): {exc}")
                continue
            if value is not None:
                set_path(out, field.path, value)
        if problems:
            raise MappingError(problems)
        return out


def compile_mapping(
    kind: str,
    defaults: Mapping[str, FieldSpec],
    user: KindMapping | None,
    *,
    timezone: str,
    where: str = "mapping",
    allowed_targets: Iterable[str] | None = None,
) -> CompiledMapping:
    """Merge the user's mapping over the profile's and check it against the kind's fields.

    Raises :class:`MappingError` listing every problem with its path (``where``).
    """
    spec = KINDS.get(kind)
    if spec is None:
        raise MappingError([f"{where}: unknown document kind {kind!r}; known: {', '.join(KINDS)}"])
    merged: dict[str, FieldSpec] = {} if user is not None and user.replace else dict(defaults)
    if user is not None:
        for target, field in user.fields.items():
            merged[target] = field
    problems: list[str] = []
    allowed = None if allowed_targets is None else set(allowed_targets)
    fields = []
    for target, field in merged.items():
        if field.drop:
            continue
        here = f"{where}.{kind}.fields.{target}"
        if allowed is not None and target not in allowed:
            known = ", ".join(sorted(allowed))
            problems.append(f"{here}: this profile has no field {target!r}; fields: {known}")
            continue
        compiled = _compile_field(target, field, dict(spec.fields), timezone, here, problems)
        if compiled is not None:
            fields.append(compiled)
    _check_conflicts([f.path for f in fields], where, kind, problems)
    if problems:
        raise MappingError(problems)
    return CompiledMapping(kind, fields)


def _compile_field(
    target: str,
    field: FieldSpec,
    declared: Mapping[str, str] | None,
    timezone: str,
    here: str,
    problems: list[str],
) -> _Field | None:
    try:
        path = parse_path(target)
    except ValueError as exc:
        problems.append(f"{here}: {exc}")
        return None
    source_type: str | None = None
    if field.from_ is not None and declared is not None:
        if field.from_ not in declared:
            known = ", ".join(declared)
            problems.append(f"{here}.from: unknown field {field.from_!r}; the document has {known}")
            return None
        source_type = declared[field.from_]
    elif field.value is not None:
        source_type = {bool: "bool", int: "int", float: "float", str: "str"}[type(field.value)]
    numeric = any(x is not None for x in (field.convert, field.factor, field.offset, field.round))
    checkable = source_type is not None and field.values is None
    if numeric and checkable and source_type not in _NUMERIC_TYPES:
        problems.append(f"{here}: convert/factor/offset/round need a number, not {source_type}")
    if field.format is not None and source_type is not None and field.values is None:
        if field.format == "guid":
            if source_type != "str":
                problems.append(f"{here}.format: guid needs a string field, not {source_type}")
        elif source_type not in ("timestamp", "str"):
            problems.append(f"{here}.format: {field.format} needs a timestamp, not {source_type}")
    if field.items is not None and source_type is not None and source_type != "list":
        problems.append(f"{here}.items: needs a list field, not {source_type}")
    items = None
    if field.items is not None:
        item_fields = []
        for item_target, item_spec in field.items.items():
            if item_spec.drop:
                continue
            compiled = _compile_field(
                item_target, item_spec, None, timezone, f"{here}.items.{item_target}", problems
            )
            if compiled is not None:
                item_fields.append(compiled)
        items = CompiledMapping(f"{target} item", item_fields)
    zone = ZoneInfo(field.timezone or timezone)
    convert = None
    if field.convert is not None:
        convert = conversion(field.convert.from_, field.convert.to)
    options = field.model_dump(exclude={"from_"}, exclude_defaults=True)
    plain = field.from_ is not None and not options
    return _Field(target, path, field, zone, convert, items, plain)


def _check_conflicts(paths: list[PathKey], where: str, kind: str, problems: list[str]) -> None:
    seen = set(paths)
    for path in paths:
        for cut in range(1, len(path)):
            if path[:cut] in seen:
                shown = ".".join(str(p) for p in path[:cut])
                problems.append(
                    f"{where}.{kind}: {shown} is a value and also holds other fields "
                    f"({'.'.join(str(p) for p in path)})"
                )
                return
