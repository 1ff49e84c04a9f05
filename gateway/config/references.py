"""Checks across sections of a validated config: names unique, references resolvable."""

from __future__ import annotations

__all__ = ["check_references", "tag_ids"]

from collections import Counter
from collections.abc import Iterable

from gateway.config.common import TagBase
from gateway.config.model import GatewayConfig
from gateway.config.processors import (
    GenealogyConfig,
    LotQualityConfig,
    OeeConfig,
    SpcConfig,
    WorkReportConfig,
)
from gateway.errors import ConfigIssue


def tag_ids(config: GatewayConfig) -> dict[str, TagBase]:
    """Every configured tag by its id ``device/tag``."""
    return {f"{device.name}/{tag.name}": tag for device in config.devices for tag in device.tags}


def check_references(config: GatewayConfig) -> list[ConfigIssue]:
    """Every cross-reference problem, each with its config path."""
    issues: list[ConfigIssue] = []
    issues += _duplicates("devices", [d.name for d in config.devices])
    issues += _duplicates("outputs", [o.name for o in config.outputs])
    issues += _duplicates("destinations", [d.name for d in config.destinations])
    issues += _duplicates("processors", [p.key for p in config.processors], field="name")
    for index, device in enumerate(config.devices):
        where = f"devices[{index}]"
        issues += _duplicates(f"{where}.tags", [t.name for t in device.tags])
        groups = [g.name for g in device.poll_groups]
        issues += _duplicates(f"{where}.poll_groups", groups)
        for tag_index, tag in enumerate(device.tags):
            if tag.poll_group not in groups:
                issues.append(
                    ConfigIssue(
                        f"{where}.tags[{tag_index}].poll_group",
                        f"unknown poll group {tag.poll_group!r}; defined: {', '.join(groups)}",
                    )
                )
    issues += _shared_links(config)
    tags = tag_ids(config)
    for index, processor in enumerate(config.processors):
        where = f"processors[{index}]"
        if isinstance(processor, WorkReportConfig):
            issues += _work_report(where, processor, tags)
        elif isinstance(processor, LotQualityConfig | SpcConfig):
            issues += _lot_quality(where, processor, tags)
        elif isinstance(processor, OeeConfig):
            issues += _oee(where, processor, tags)
        elif isinstance(processor, GenealogyConfig):
            issues += _genealogy(where, processor, tags)
    return issues


def _shared_links(config: GatewayConfig) -> list[ConfigIssue]:
    """Devices on one serial line or Modbus endpoint must agree on its settings."""
    if not any(device.protocol.startswith("modbus") for device in config.devices):
        return []  # (the check imports the Modbus driver)
    from drivers.modbus.pool import check_shared_links

    return check_shared_links(config.devices)


def _duplicates(where: str, names: Iterable[str], field: str = "name") -> list[ConfigIssue]:
    counts = Counter(names)
    issues = []
    seen: set[str] = set()
    for index, name in enumerate(names if isinstance(names, list) else list(names)):
        if counts[name] > 1 and name in seen:
            issues.append(ConfigIssue(f"{where}[{index}].{field}", f"duplicate name {name!r}"))
        seen.add(name)
    return issues


def _missing(where: str, ref: str | None, tags: dict[str, TagBase]) -> list[ConfigIssue]:
    if ref is None or ref in tags:
        return []
    device = ref.split("/", 1)[0]
    known = sorted(t.split("/", 1)[1] for t in tags if t.startswith(device + "/"))
    hint = f"; {device} has: {', '.join(known[:12])}" if known else f"; no device {device!r}"
    return [ConfigIssue(where, f"unknown tag {ref!r}{hint}")]


def _work_report(
    where: str, processor: WorkReportConfig, tags: dict[str, TagBase]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for field in ("good", "scrap", "rework"):
        counter = getattr(processor, field)
        if counter is None:
            continue
        issues += _missing(f"{where}.{field}.tag", counter.tag, tags)
        tag = tags.get(counter.tag)
        if tag is not None and not tag.type.is_integer:
            issues.append(
                ConfigIssue(
                    f"{where}.{field}.tag",
                    f"a counter must be an integer tag, {counter.tag} is {tag.type.value}",
                )
            )
    for field in ("order", "operation", "material", "lot"):
        issues += _missing(f"{where}.{field}", getattr(processor, field), tags)
    return issues


def _lot_quality(
    where: str, processor: LotQualityConfig | SpcConfig, tags: dict[str, TagBase]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for field in ("lot", "order", "material"):
        issues += _missing(f"{where}.{field}", getattr(processor, field), tags)
    for index, characteristic in enumerate(processor.characteristics):
        here = f"{where}.characteristics[{index}]"
        issues += _missing(f"{here}.values", characteristic.values, tags)
        issues += _missing(f"{here}.sequence", characteristic.sequence, tags)
        values = tags.get(characteristic.values)
        if values is not None and not values.type.is_numeric:
            issues.append(ConfigIssue(f"{here}.values", "measurements must be a numeric tag"))
        if characteristic.sequence and values is not None and getattr(values, "count", 1) < 2:
            issues.append(
                ConfigIssue(
                    f"{here}.values",
                    "with `sequence`, values must be an array tag "
                    "(count > 1) used as a ring buffer",
                )
            )
    return issues


def _numeric_scalar(where: str, ref: str | None, tags: dict[str, TagBase]) -> list[ConfigIssue]:
    """A tag that must hold one number (a state code, a process value)."""
    tag = tags.get(ref) if ref else None
    if tag is None:
        return []
    if not tag.type.is_numeric:
        return [ConfigIssue(where, f"{ref} must be a numeric tag, it is {tag.type.value}")]
    if getattr(tag, "count", 1) > 1:
        return [ConfigIssue(where, f"{ref} is an array tag; name one element ({ref}[0])")]
    return []


def _oee(where: str, processor: OeeConfig, tags: dict[str, TagBase]) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for field in ("state", "reason", "order", "material"):
        issues += _missing(f"{where}.{field}", getattr(processor, field), tags)
    issues += _numeric_scalar(f"{where}.state", processor.state, tags)
    issues += _numeric_scalar(f"{where}.reason", processor.reason, tags)
    for field in ("good", "scrap", "rework"):
        counter = getattr(processor, field)
        if counter is None:
            continue
        issues += _missing(f"{where}.{field}.tag", counter.tag, tags)
        tag = tags.get(counter.tag)
        if tag is not None and not tag.type.is_integer:
            issues.append(
                ConfigIssue(
                    f"{where}.{field}.tag",
                    f"a counter must be an integer tag, {counter.tag} is {tag.type.value}",
                )
            )
    return issues


def _genealogy(
    where: str, processor: GenealogyConfig, tags: dict[str, TagBase]
) -> list[ConfigIssue]:
    issues: list[ConfigIssue] = []
    for field in ("lot", "order", "operation", "material"):
        issues += _missing(f"{where}.{field}", getattr(processor, field), tags)
    for index, component in enumerate(processor.components):
        issues += _missing(f"{where}.components[{index}].tag", component.tag, tags)
    for index, ref in enumerate(processor.process):
        issues += _missing(f"{where}.process[{index}]", ref, tags)
        issues += _numeric_scalar(f"{where}.process[{index}]", ref, tags)
        if ref in processor.process[:index]:
            issues.append(ConfigIssue(f"{where}.process[{index}]", f"{ref} is listed twice"))
    return issues
