"""Load a YAML config file into a validated :class:`GatewayConfig`, or report every problem.

* YAML syntax errors name the line and column.
* Unknown keys, wrong types and out-of-range values name their path
  (``devices[1].tags[3].address``) and the line they are on.
* ``${NAME}`` and ``${NAME:-default}`` in a string are replaced by environment variables,
  ``${file:/run/secrets/erp_token}`` by a file's content (trailing newline removed). Values that
  came from such a reference are never shown in messages, nor are values of fields whose name
  says they are secret.
* References between sections (a processor's tag, a tag's poll group) are checked after the
  types, so one run lists every error.
"""

from __future__ import annotations

__all__ = ["load_config", "load_config_text"]

import os
import re
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import TypeAdapter, ValidationError

from gateway.config.model import DeviceConfig, GatewayConfig
from gateway.config.references import check_references
from gateway.config.yaml_reader import read_yaml
from gateway.errors import ConfigError, ConfigIssue

_REFERENCE = re.compile(r"\$\{([^}]*)\}")
_SECRET_WORDS = ("password", "secret", "token", "key")
_UNION_TAGS = frozenset(
    {
        "modbus_tcp",
        "modbus_rtu",
        "modbus_rtu_tcp",
        "opcua",
        "work_report",
        "lot_quality",
        "spc",
        "oee",
        "genealogy",
        "mqtt",
        "influxdb",
        "rest",
        "sap_s4hana",
        "erpnext",
        "b2mml",
        "bearer",
        "basic",
        "api_key",
        "client_certificate",
    }
)

PathKey = tuple[str | int, ...]


def load_config(path: str | Path) -> GatewayConfig:
    """Read, substitute, validate and cross-check a config file. Raises :class:`ConfigError`."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [ConfigIssue("", f"cannot read the file: {exc.strerror}")], source
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([ConfigIssue("", "the file is not UTF-8 text")], source) from None
    return load_config_text(text, source=source, base_dir=Path(path).parent)


def load_config_text(
    text: str, *, source: str = "<config>", base_dir: Path | None = None
) -> GatewayConfig:
    """Like :func:`load_config`, from a string."""
    data, lines = _parse_yaml(text, source)
    issues: list[ConfigIssue] = []
    secret_paths: set[PathKey] = set()
    data = _substitute(data, (), issues, secret_paths, lines, base_dir or Path.cwd())
    if not isinstance(data, dict):
        issues.append(ConfigIssue("", "the file must hold a mapping (gateway:, devices:, ...)", 1))
        raise ConfigError(issues, source)
    try:
        config = GatewayConfig.model_validate(_share_tag_lists(data))
    except ValidationError as exc:
        issues.extend(_issues_from_validation(exc, lines, secret_paths))
        raise ConfigError(issues, source) from None
    issues.extend(
        ConfigIssue(issue.path, issue.message, issue.line or _line_of(issue.path, lines))
        for issue in check_references(config)
    )
    if issues:
        raise ConfigError(issues, source)
    return config


# --- YAML with line numbers -----------------------------------------------------------------


_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Lines:
    """Path → line of a YAML document, computed only when a message needs a line number.

    Loading builds plain data from the parser's events (:mod:`gateway.config.yaml_reader`); the
    node tree with its marks (several times the size of the data for a large tag list) is only
    composed when an error must name a line.
    """

    def __init__(self, text: str) -> None:
        self._text = text
        self._lines: dict[str, int] | None = None

    def get(self, path: str) -> int | None:
        if self._lines is None:
            self._lines = {}
            try:
                node = yaml.compose(self._text, Loader=_Loader)
            except yaml.YAMLError:
                node = None
            if node is not None:
                _record_lines(node, (), self._lines)
        return self._lines.get(path)


def _parse_yaml(text: str, source: str) -> tuple[Any, _Lines]:
    try:
        data = read_yaml(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        column = f", column {mark.column + 1}" if mark is not None else ""
        problem = exc.problem or exc.context or "invalid YAML"
        raise ConfigError(
            [ConfigIssue("", f"YAML syntax error{column}: {problem}", line)], source
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError([ConfigIssue("", f"YAML error: {exc}")], source) from None
    return ({} if data is None else data), _Lines(text)


def _record_lines(node: yaml.Node, path: PathKey, lines: dict[str, int]) -> None:
    lines.setdefault(format_path(path), node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else str(key_node)
            child = (*path, key)
            lines[format_path(child)] = key_node.start_mark.line + 1
            _record_lines(value_node, child, lines)
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _record_lines(item, (*path, index), lines)


def format_path(path: PathKey) -> str:
    """``("devices", 1, "tags", 3, "address")`` → ``devices[1].tags[3].address``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


def _line_of(path: str, lines: _Lines) -> int | None:
    while path:
        found = lines.get(path)
        if found is not None:
            return found
        cut = max(path.rfind("."), path.rfind("["))
        if cut <= 0:
            break
        path = path[:cut]
    return lines.get(path)


# --- ${ENV} and ${file:...} references ------------------------------------------------------


def _substitute(
    value: Any,
    path: PathKey,
    issues: list[ConfigIssue],
    secret_paths: set[PathKey],
    lines: _Lines,
    base_dir: Path,
) -> Any:
    # Containers are copied only where a reference was replaced: a tag list shared through a
    # YAML alias by many devices stays one list.
    if isinstance(value, dict):
        mapping = {
            key: _substitute(item, (*path, str(key)), issues, secret_paths, lines, base_dir)
            for key, item in value.items()
        }
        same = all(mapping[key] is item for key, item in value.items())
        return value if same else mapping
    if isinstance(value, list):
        items = [
            _substitute(item, (*path, index), issues, secret_paths, lines, base_dir)
            for index, item in enumerate(value)
        ]
        return value if all(a is b for a, b in zip(items, value, strict=True)) else items
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        secret_paths.add(path)
        return _resolve(match.group(1), path, issues, lines, base_dir)

    return _REFERENCE.sub(replace, value)


def _resolve(
    expression: str,
    path: PathKey,
    issues: list[ConfigIssue],
    lines: _Lines,
    base_dir: Path,
) -> str:
    where = format_path(path)
    if expression.startswith("file:"):
        file_path = Path(expression[5:]).expanduser()
        if not file_path.is_absolute():
            file_path = base_dir / file_path
        try:
            return file_path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            issues.append(
                ConfigIssue(
                    where,
                    f"cannot read secret file {file_path}: {exc.strerror}",
                    _line_of(where, lines),
                )
            )
            return ""
    name, has_default, default = expression.partition(":-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
        issues.append(
            ConfigIssue(
                where,
                f"bad reference ${{{expression}}}: expected ${{NAME}}, "
                "${NAME:-default} or ${file:PATH}",
                _line_of(where, lines),
            )
        )
        return ""
    found = os.environ.get(name)
    if found is not None:
        return found
    if has_default:
        return default
    issues.append(
        ConfigIssue(where, f"environment variable {name} is not set", _line_of(where, lines))
    )
    return ""


# --- devices sharing a tag list --------------------------------------------------------------


def _share_tag_lists(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a tag list that several devices share through a YAML alias once, and give every
    one of them the same (frozen) tag models: ten identical machines of 1,000 tags keep 1,000
    models, not 10,000. Anything unusual (an invalid list, an unknown protocol) is left to the
    normal validation, which reports errors with their paths."""
    devices = data.get("devices")
    if not isinstance(devices, list):
        return data
    counts: dict[tuple[int, str], int] = {}
    for device in devices:
        if isinstance(device, dict) and isinstance(device.get("tags"), list):
            key = (id(device["tags"]), str(device.get("protocol")))
            counts[key] = counts.get(key, 0) + 1
    if not any(count > 1 for count in counts.values()):
        return data
    validated: dict[tuple[int, str], list[Any]] = {}
    shared_devices = []
    for device in devices:
        if not isinstance(device, dict):
            shared_devices.append(device)
            continue
        tags = device.get("tags")
        key = (id(tags), str(device.get("protocol")))
        if counts.get(key, 0) < 2:
            shared_devices.append(device)
            continue
        if key not in validated:
            adapter = _tag_list_adapter(str(device.get("protocol")))
            try:
                validated[key] = adapter.validate_python(tags) if adapter else []
            except ValidationError:
                validated[key] = []
        models = validated[key]
        shared_devices.append({**device, "tags": models} if models else device)
    return {**data, "devices": shared_devices}


def _tag_list_adapter(protocol: str) -> TypeAdapter[list[Any]] | None:
    for member in get_args(get_args(DeviceConfig)[0]):
        field = member.model_fields.get("protocol")
        if field is not None and protocol in get_args(field.annotation):
            annotation = member.model_fields["tags"].annotation
            return TypeAdapter(annotation) if annotation is not None else None
    return None


# --- pydantic errors → issues ---------------------------------------------------------------


def _issues_from_validation(
    exc: ValidationError, lines: _Lines, secret_paths: set[PathKey]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for error in exc.errors(include_url=False):
        loc = _clean_loc(error["loc"])
        path = format_path(loc)
        message = _message(error)
        input_value = error.get("input")
        if (
            error["type"] not in ("missing", "extra_forbidden")
            and not _is_secret(loc, secret_paths)
            and isinstance(input_value, str | int | float | bool)
        ):
            shown = repr(input_value)
            if len(shown) <= 60:
                message = f"{message} (got {shown})"
        issues.append(ConfigIssue(path, message, _line_of(path, lines)))
    return issues


def _clean_loc(loc: tuple[int | str, ...]) -> PathKey:
    """Drop the union-member names pydantic inserts after a list index (``devices[0].opcua``)."""
    out: list[str | int] = []
    for index, part in enumerate(loc):
        previous = loc[index - 1] if index else None
        if (
            isinstance(part, str)
            and part in _UNION_TAGS
            and (isinstance(previous, int) or previous in ("auth",))
        ):
            continue
        if isinstance(part, str) and part.startswith("function-"):
            continue
        out.append(part)
    return tuple(out)


def _message(error: Any) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        return "unknown key"
    if kind == "missing":
        return "required key is missing"
    if kind == "union_tag_invalid":
        expected = error.get("ctx", {}).get("expected_tags", "")
        tag = error.get("ctx", {}).get("tag", "")
        return f"unknown type {tag!r}; expected one of {expected}"
    if kind == "union_tag_not_found":
        discriminator = error.get("ctx", {}).get("discriminator", "type")
        return f"required key {discriminator.strip(chr(39))} is missing"
    message: str = error["msg"]
    return message.removeprefix("Value error, ")


def _is_secret(loc: PathKey, secret_paths: set[PathKey]) -> bool:
    if any(loc[: len(p)] == p or p[: len(loc)] == loc for p in secret_paths):
        return True
    return any(
        isinstance(part, str) and any(word in part.lower() for word in _SECRET_WORDS)
        for part in loc
    )
