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
from gateway.runtime.interfaces import Connector, Driver, Output, Processor, TagWriter
from gateway.tags import TagTable


@dataclass(frozen=True, slots=True)
class BuildContext:
    """What every factory may need besides its own config section."""

    config: GatewayConfig
    table: TagTable
    metrics: Metrics
    write_tag: TagWriter | None = None
    """Writes a tag through its driver (MQTT commands); None where nothing may write."""

    @property
    def cells(self) -> Mapping[str, str]:
        """Device name → its ISA-95 work unit (the device name unless `cell` is set)."""
        return {d.name: d.cell or d.name for d in self.config.devices}


def _modbus(section: Any, ctx: BuildContext) -> Driver:
    from drivers.modbus.driver import ModbusDriver

    return ModbusDriver(section, ctx.table, ctx.metrics)


def _opcua(section: Any, ctx: BuildContext) -> Driver:
    from drivers.opcua.driver import OpcUaDriver

    return OpcUaDriver(section, ctx.table, ctx.metrics, data_dir=ctx.config.gateway.data_dir)


def _work_report(section: Any, ctx: BuildContext) -> Processor:
    from gateway.processors.work_report import WorkReportProcessor

    return WorkReportProcessor(section, ctx.table, ctx.config.gateway.id, ctx.config.shifts)


def _lot_quality(section: Any, ctx: BuildContext) -> Processor:
    from gateway.processors.lot_quality import LotQualityProcessor

    return LotQualityProcessor(section, ctx.table, ctx.config.gateway.id)


def _oee(section: Any, ctx: BuildContext) -> Processor:
    from gateway.processors.oee import OeeProcessor

    return OeeProcessor(section, ctx.table, ctx.config.gateway.id, ctx.config.shifts)


def _genealogy(section: Any, ctx: BuildContext) -> Processor:
    from pathlib import Path

    from gateway.processors.genealogy import GenealogyProcessor
    from gateway.processors.genealogy_store import GenealogyStore

    store = GenealogyStore.shared(Path(ctx.config.gateway.data_dir) / "genealogy.db")
    return GenealogyProcessor(section, ctx.table, ctx.config.gateway.id, store=store)


def _mqtt(section: Any, ctx: BuildContext) -> Output:
    from gateway.outputs.mqtt import MqttOutput

    return MqttOutput(
        section,
        ctx.table,
        gateway_id=ctx.config.gateway.id,
        location_path=ctx.config.gateway.location.path,
        cells=ctx.cells,
        metrics=ctx.metrics,
        data_dir=ctx.config.gateway.data_dir,
        write_tag=ctx.write_tag,
    )


def _influxdb(section: Any, ctx: BuildContext) -> Output:
    from gateway.outputs.influx import InfluxOutput

    return InfluxOutput(
        section,
        ctx.table,
        gateway_id=ctx.config.gateway.id,
        location=ctx.config.gateway.location,
        cells=ctx.cells,
        metrics=ctx.metrics,
    )


def _rest(section: Any, ctx: BuildContext) -> Connector:
    from gateway.connectors.rest import RestConnector

    return RestConnector(section, gateway_id=ctx.config.gateway.id)


def _sap(section: Any, ctx: BuildContext) -> Connector:
    from gateway.connectors.sap import SapConnector

    return SapConnector(section, gateway_id=ctx.config.gateway.id)


def _erpnext(section: Any, ctx: BuildContext) -> Connector:
    from gateway.connectors.erpnext import ErpNextConnector

    return ErpNextConnector(section, gateway_id=ctx.config.gateway.id)


def _b2mml(section: Any, ctx: BuildContext) -> Connector:
    from gateway.connectors.b2mml import B2mmlConnector

    return B2mmlConnector(section, gateway_id=ctx.config.gateway.id)


DRIVERS: dict[str, Callable[[Any, BuildContext], Driver]] = {
    "modbus_tcp": _modbus,
    "modbus_rtu": _modbus,
    "modbus_rtu_tcp": _modbus,
    "opcua": _opcua,
}
PROCESSORS: dict[str, Callable[[Any, BuildContext], Processor]] = {
    "work_report": _work_report,
    "lot_quality": _lot_quality,
    "spc": _lot_quality,
    "oee": _oee,
    "genealogy": _genealogy,
}
OUTPUTS: dict[str, Callable[[Any, BuildContext], Output]] = {"mqtt": _mqtt, "influxdb": _influxdb}
CONNECTORS: dict[str, Callable[[Any, BuildContext], Connector]] = {
    "rest": _rest,
    "sap_s4hana": _sap,
    "erpnext": _erpnext,
    "b2mml": _b2mml,
}
