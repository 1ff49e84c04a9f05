"""The root configuration model: one YAML file describes the whole gateway."""

from __future__ import annotations

__all__ = [
    "ApiConfig",
    "DeviceConfig",
    "GatewayConfig",
    "GatewaySection",
    "Location",
    "OutboxConfig",
    "PipelineConfig",
]

from typing import Annotated, Literal

from pydantic import Field

from drivers.modbus.config import ModbusRtuDevice, ModbusRtuTcpDevice, ModbusTcpDevice
from drivers.opcua.config import OpcUaDevice
from gateway.config.common import ConfigModel, Name, TopicToken
from gateway.config.destinations import DestinationConfig
from gateway.config.outputs import OutputConfig
from gateway.config.processors import ProcessorConfig
from gateway.config.shifts import ShiftCalendarConfig

DeviceConfig = Annotated[
    ModbusTcpDevice | ModbusRtuDevice | ModbusRtuTcpDevice | OpcUaDevice,
    Field(discriminator="protocol"),
]


class Location(ConfigModel):
    """The gateway's place in the ISA-95 equipment hierarchy (the UNS topic prefix)."""

    enterprise: TopicToken
    site: TopicToken
    area: TopicToken
    line: TopicToken

    @property
    def path(self) -> str:
        return f"{self.enterprise}/{self.site}/{self.area}/{self.line}"


class ApiConfig(ConfigModel):
    """The local HTTP API (health, tags, metrics, outbox)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    """0 picks a free port."""


class GatewaySection(ConfigModel):
    """Who and where this gateway is."""

    id: Name
    """Unique gateway id; part of every document's idempotency key and of MQTT client ids."""
    location: Location
    data_dir: str = "./data"
    """Folder for the outbox database and saved processor state."""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    api: ApiConfig | None = None


class OutboxConfig(ConfigModel):
    """The durable outbox of business documents."""

    retention: Annotated[float, Field(gt=0, le=366 * 86_400)] = 7 * 86_400
    """Seconds a delivered document is kept for audit before it is removed."""
    max_documents: Annotated[int, Field(ge=100)] = 1_000_000
    """Bound on undelivered deliveries (pending and dead letters); new documents are refused
    at the bound (the processors keep their counts and report them later)."""
    alarm_at: Annotated[float, Field(gt=0, lt=1)] = 0.8
    """Fraction of `max_documents` at which the outbox alarm goes on (log, metric)."""
    commit_interval: Annotated[float, Field(ge=0, le=1)] = 0.0
    """Seconds a commit waits to group further documents into one transaction. With 0, a
    commit starts as soon as the previous one ended, and everything that arrived meanwhile
    goes into it (group commit without added latency)."""


class PipelineConfig(ConfigModel):
    """Queues between the drivers, the processors and the outputs."""

    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Batches waiting for the pipeline; when full the oldest is dropped and counted."""


class GatewayConfig(ConfigModel):
    """The whole configuration."""

    gateway: GatewaySection
    devices: list[DeviceConfig] = Field(default_factory=list)
    processors: list[ProcessorConfig] = Field(default_factory=list)
    shifts: ShiftCalendarConfig | None = None
    """The shift calendar (planned time for OEE, the work reports' shift_end trigger); one
    24-hour shift a day (UTC) when not set."""
    outputs: list[OutputConfig] = Field(default_factory=list)
    destinations: list[DestinationConfig] = Field(default_factory=list)
    outbox: OutboxConfig = Field(default_factory=OutboxConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
