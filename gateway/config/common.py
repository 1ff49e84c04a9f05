"""Building blocks shared by every config model (gateway core, drivers, outputs, destinations).

Every model forbids unknown keys and is frozen: a typo in a key is an error that names its path,
and nothing changes the config after start-up validation.
"""

from __future__ import annotations

__all__ = [
    "NAME_PATTERN",
    "ConfigModel",
    "Name",
    "PollGroup",
    "PositiveSeconds",
    "TagBase",
    "TopicToken",
]

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gateway.datatypes import DataType

NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.\-\[\]]*$"
"""Names of devices, tags, outputs: safe in MQTT topics and URLs (no ``/ + # $`` or spaces)."""

Name = Annotated[str, Field(pattern=NAME_PATTERN, min_length=1, max_length=128)]
TopicToken = Annotated[str, Field(pattern=r"^[^/+#$\s][^/+#\s]*$", min_length=1, max_length=128)]
PositiveSeconds = Annotated[float, Field(gt=0, le=86_400)]


class ConfigModel(BaseModel):
    """Base of every config model: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class PollGroup(ConfigModel):
    """A set of tags read together at one rate."""

    name: Name
    """Referenced by tags through `poll_group`."""
    interval: PositiveSeconds = 1.0
    """Seconds between two reads, scheduled on the clock (no drift)."""


class TagBase(ConfigModel):
    """Fields every tag has, whatever its protocol."""

    name: Name
    """Unique within its device; the tag's id is ``device/name``."""
    type: DataType = DataType.FLOAT64
    """Type of the value in the device."""
    unit: str = ""
    """Engineering unit after scaling (``°C``, ``bar``, ``EA``)."""
    description: str = ""
    scale: float = 1.0
    """Engineering value = raw × scale + offset (numeric types only)."""
    offset: float = 0.0
    deadband: Annotated[float, Field(ge=0)] = 0.0
    """Absolute deadband in engineering units: a change smaller than this is not reported."""
    deadband_percent: Annotated[float, Field(ge=0, le=100)] = 0.0
    """Deadband in percent of `span` (or of the last value when no span is set)."""
    span: tuple[float, float] | None = None
    """Engineering range [low, high], for the percent deadband and write range checks."""
    max_age: PositiveSeconds | None = None
    """Report an unchanged value again once it is this many seconds old."""
    writable: bool = False
    """Writes (API, MQTT commands) are refused unless this is true."""
    poll_group: Name = "default"

    @model_validator(mode="after")
    def _check_span(self) -> TagBase:
        if self.span is not None and not self.span[0] < self.span[1]:
            raise ValueError("span must be [low, high] with low < high")
        return self
