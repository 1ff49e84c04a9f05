"""Configuration models of the processors (work reports, lot quality)."""

from __future__ import annotations

__all__ = [
    "CharacteristicConfig",
    "CounterConfig",
    "LotQualityConfig",
    "ProcessorConfig",
    "TagRef",
    "Trigger",
    "WorkReportConfig",
]

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from gateway.config.common import ConfigModel, Name, PositiveSeconds

TagRef = Annotated[str, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*/[A-Za-z0-9_][^/+#\s]*$")]
"""A tag by its id: ``device/tag`` (``M1/GoodCount``)."""


class Trigger(StrEnum):
    """Events that close a work-report segment and emit a completion."""

    ORDER_CHANGE = "order_change"
    LOT_CHANGE = "lot_change"
    CONTAINER_FULL = "container_full"
    SHIFT_END = "shift_end"


class CounterConfig(ConfigModel):
    """A PLC part counter."""

    tag: TagRef
    rollover: Annotated[int, Field(ge=2)] | None = None
    """The counter wraps to 0 at this value (65536 for 16 bits); from the tag's type when unset."""

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, data: Any) -> Any:
        return {"tag": data} if isinstance(data, str) else data


class WorkReportConfig(ConfigModel):
    """Turns a machine's counters and order/lot tags into completion documents."""

    type: Literal["work_report"]
    name: Name | None = None
    """Unique processor name (``work_report.<machine>`` when not set); keys its saved state."""
    machine: Name
    """The machine (work unit) reported on; usually the device name."""
    work_center: str | None = None
    """The ERP work centre; the machine name when not set."""
    good: CounterConfig
    scrap: CounterConfig | None = None
    rework: CounterConfig | None = None
    order: TagRef
    """Tag holding the current order number (empty when no order is active)."""
    operation: TagRef | None = None
    material: TagRef | None = None
    lot: TagRef | None = None
    unit: str = "EA"
    """Unit of measure of the quantities (ERP's unit, ``EA`` = each)."""
    triggers: list[Trigger] = Field(
        default_factory=lambda: [Trigger.ORDER_CHANGE, Trigger.LOT_CHANGE]
    )
    container_quantity: Annotated[int, Field(ge=1)] | None = None
    """Good parts per container, for the ``container_full`` trigger."""
    checkpoint_interval: PositiveSeconds = 5.0
    """Seconds between two saves of the running totals (documents are always saved at once)."""

    @property
    def key(self) -> str:
        return self.name or f"work_report.{self.machine}"

    @model_validator(mode="after")
    def _check_container(self) -> WorkReportConfig:
        if Trigger.CONTAINER_FULL in self.triggers and self.container_quantity is None:
            raise ValueError("the container_full trigger needs container_quantity")
        return self


class CharacteristicConfig(ConfigModel):
    """A measured quality characteristic."""

    name: Name
    values: TagRef
    """A measurement tag, or with `sequence`, an array tag used as a ring buffer."""
    sequence: TagRef | None = None
    """Counter of measured parts: part number s sits in slot (s - 1) mod len(values)."""
    nominal: float | None = None
    lsl: float | None = None
    """Lower specification limit."""
    usl: float | None = None
    """Upper specification limit."""
    unit: str = ""

    @model_validator(mode="after")
    def _check_limits(self) -> CharacteristicConfig:
        if self.lsl is not None and self.usl is not None and not self.lsl < self.usl:
            raise ValueError("lsl must be below usl")
        return self


class LotQualityConfig(ConfigModel):
    """Summarises each lot's measurements and emits a lot result when the lot ends."""

    type: Literal["lot_quality"]
    name: Name | None = None
    machine: Name
    lot: TagRef
    order: TagRef | None = None
    material: TagRef | None = None
    characteristics: Annotated[list[CharacteristicConfig], Field(min_length=1)]
    reject_out_of_spec_fraction: Annotated[float, Field(ge=0, le=1)] = 0.05
    """Reject the lot when more than this fraction of its measurements is out of spec."""
    hold_cpk_below: Annotated[float, Field(ge=0)] = 1.0
    """Hold the lot (for a quality engineer) when a characteristic's Cpk is below this."""

    @property
    def key(self) -> str:
        return self.name or f"lot_quality.{self.machine}"


ProcessorConfig = Annotated[WorkReportConfig | LotQualityConfig, Field(discriminator="type")]
