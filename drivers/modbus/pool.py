"""Which devices share a connection: one :class:`ModbusLink` per TCP endpoint or serial port.

Devices (units) on the same serial port, or behind the same RTU-over-TCP endpoint, share one
link, as they share the wire; Modbus TCP devices share a connection only when they set
`share_connection` (units behind a gateway). Their connection settings must agree; when they do
not, :func:`check_shared_links` names both devices (and the driver refuses to start).
"""

from __future__ import annotations

__all__ = ["LinkPool", "check_shared_links", "link_settings"]

import weakref
from collections.abc import Iterable

from drivers.modbus.config import (
    ModbusDevice,
    ModbusRtuDevice,
    ModbusRtuTcpDevice,
    ModbusTcpDevice,
    Parity,
)
from drivers.modbus.link import LinkSettings, ModbusLink
from gateway.errors import ConfigError, ConfigIssue

_PARITY = {Parity.NONE: "N", Parity.EVEN: "E", Parity.ODD: "O"}


def link_settings(device: ModbusDevice) -> LinkSettings:
    """The connection settings a device's config implies."""
    if isinstance(device, ModbusTcpDevice):
        return LinkSettings("tcp", device.host, device.port, window=device.max_outstanding)
    if isinstance(device, ModbusRtuTcpDevice):
        return LinkSettings("rtu_tcp", device.host, device.port, frame_gap=device.inter_frame_delay)
    assert isinstance(device, ModbusRtuDevice)
    return LinkSettings(
        "serial",
        device.port,
        baudrate=device.baudrate,
        bytesize=device.bytesize,
        parity=_PARITY[device.parity],
        stopbits=device.stopbits,
        frame_gap=device.frame_gap,
        local_echo=device.local_echo,
    )


def _key(device: ModbusDevice, settings: LinkSettings) -> tuple[str, str, int]:
    if isinstance(device, ModbusTcpDevice) and not device.share_connection:
        return "own", device.name, 0
    kind = "serial" if settings.kind == "serial" else "tcp"
    return kind, settings.address, settings.port


def _conflict(first: str, second: str, a: LinkSettings, b: LinkSettings) -> str:
    differences = [
        f"{field} {getattr(b, field)!r} vs {getattr(a, field)!r}"
        for field in ("kind", "baudrate", "bytesize", "parity", "stopbits", "window", "frame_gap")
        if getattr(a, field) != getattr(b, field)
    ]
    return (
        f"device {second} shares {a.describe()} with device {first}, but its connection "
        f"settings differ: {', '.join(differences)}"
    )


def check_shared_links(devices: Iterable[object]) -> list[ConfigIssue]:
    """Devices that share a connection but disagree on its settings, as config issues."""
    seen: dict[tuple[str, str, int], tuple[str, LinkSettings]] = {}
    issues = []
    for index, device in enumerate(devices):
        if not isinstance(device, ModbusTcpDevice | ModbusRtuTcpDevice | ModbusRtuDevice):
            continue
        settings = link_settings(device)
        key = _key(device, settings)
        if key not in seen:
            seen[key] = (device.name, settings)
            continue
        first, first_settings = seen[key]
        if first_settings != settings:
            message = _conflict(first, device.name, first_settings, settings)
            issues.append(ConfigIssue(f"devices[{index}]", message))
    return issues


class LinkPool:
    """The links of one gateway, by endpoint."""

    def __init__(self) -> None:
        self._links: dict[tuple[str, str, int], tuple[str, ModbusLink]] = {}

    def link(self, device: ModbusDevice) -> ModbusLink:
        """The shared link for `device`; ConfigError when its settings clash with a sharer's."""
        settings = link_settings(device)
        key = _key(device, settings)
        found = self._links.get(key)
        if found is None:
            link = ModbusLink(settings, device.timeout)
            self._links[key] = (device.name, link)
            return link
        first, link = found
        if link.settings != settings:
            message = _conflict(first, device.name, link.settings, settings)
            raise ConfigError([ConfigIssue(f"devices.{device.name}", message)])
        return link


_POOLS: weakref.WeakKeyDictionary[object, LinkPool] = weakref.WeakKeyDictionary()


def pool_for(owner: object) -> LinkPool:
    """The pool of one gateway instance (keyed by an object that lives as long as it)."""
    pool = _POOLS.get(owner)
    if pool is None:
        pool = _POOLS[owner] = LinkPool()
    return pool
