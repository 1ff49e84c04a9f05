"""From a config section's ``type``/``protocol``/``profile`` name to the factory that builds it.

Factories import their module when called, so ``edge-gateway check`` stays fast and a missing
optional library only matters for the components a config uses.
"""

from __future__ import annotations

__all__ = ["CONNECTORS", "DRIVERS", "OUTPUTS", "PROCESSORS", "BuildContext"]

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.config.model import GatewayConfig
from gateway.metrics import Metrics
from gateway.runtime.interfaces import Connector, Driver, Output, Processor
from gateway.tags import TagTable


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What every factory may need besides its own config section."""

    config: GatewayConfig
    table: TagTable
    metrics: Metrics

    @property
    def cells(self) -> Mapping[str, str]:
        """Device name → its ISA-95 work unit (the device name unless `cell` is set)."""
        return {d.name: d.cell or d.name for d in self.config.devices}


def _modbus_tcp(section: Any, ctx: BuildContext) -> Driver:
    from drivers.modbus.driver import ModbusTcpDriver

    return ModbusTcpDriver(section, ctx.table, ctx.metrics)


def _opcua(section: Any, ctx: BuildContext) -> Driver:
    from drivers.opcua.driver import OpcUaDriver

    return OpcUaDriver(section, ctx.table, ctx.metrics)


def _work_report(section: Any, ctx: BuildContext) -> Processor:
    from gateway.processors.work_report import WorkReportProcessor

    return WorkReportProcessor(section, ctx.table, ctx.config.gateway.id)


def _lot_quality(section: Any, ctx: BuildContext) -> Processor:
    from gateway.processors.lot_quality import LotQualityProcessor

    return LotQualityProcessor(section, ctx.table, ctx.config.gateway.id)


def _mqtt(section: Any, ctx: BuildContext) -> Output:
    from gateway.outputs.mqtt import MqttOutput

    return MqttOutput(
        section,
        ctx.table,
        gateway_id=ctx.config.gateway.id,
        location_path=ctx.config.gateway.location.path,
        cells=ctx.cells,
        metrics=ctx.metrics,
    )


def _rest(section: Any, ctx: BuildContext) -> Connector:
    from gateway.connectors.rest import RestConnector

    return RestConnector(section)


DRIVERS: dict[str, Callable[[Any, BuildContext], Driver]] = {
    "modbus_tcp": _modbus_tcp,
    "opcua": _opcua,
}
PROCESSORS: dict[str, Callable[[Any, BuildContext], Processor]] = {
    "work_report": _work_report,
    "lot_quality": _lot_quality,
}
OUTPUTS: dict[str, Callable[[Any, BuildContext], Output]] = {"mqtt": _mqtt}
CONNECTORS: dict[str, Callable[[Any, BuildContext], Connector]] = {"rest": _rest}
