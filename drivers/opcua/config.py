"""Configuration models of the OPC UA driver."""

from __future__ import annotations

__all__ = ["OpcUaDevice", "OpcUaTag"]

import re
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator

from gateway.config.common import ConfigModel, Name, PollGroup, PositiveSeconds, TagBase
from gateway.datatypes import DataType

_NODE_ID = re.compile(r"^(?:(?:ns=\d+|nsu=[^;]+);)?(?:[isgb]=.+)$")


class OpcUaTag(TagBase):
    """One OPC UA variable."""

    type: DataType = DataType.FLOAT64
    node: str
    """NodeId: ``ns=2;s=Line1.M1.State``, or with the namespace by URI:
    ``nsu=urn:plant;s=Line1.M1.State`` (resolved to its index at every connect)."""
    mode: Literal["subscribe", "poll"] = "subscribe"
    """Monitored item in a subscription (default), or read in the poll group's cycle."""
    count: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Elements of an array variable; more than 1 makes elements ``name[i]``."""

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str) -> str:
        if not _NODE_ID.match(value):
            raise ValueError(
                "not a NodeId: expected ns=<index>;s=<name>, nsu=<uri>;i=<number>, "
                "g=<guid> or b=<base64>"
            )
        return value


class OpcUaDevice(ConfigModel):
    """An OPC UA server."""

    protocol: Literal["opcua"]
    name: Name
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$")]
    """``opc.tcp://host:port/path``."""
    timeout: PositiveSeconds = 5.0
    """Seconds to wait for a connection or a service response."""
    publishing_interval: PositiveSeconds = 0.5
    """Seconds between two notifications of the subscription."""
    sampling_interval: Annotated[float, Field(ge=0)] | None = None
    """Seconds between two samples of a monitored item (publishing interval when not set)."""
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Values a monitored item keeps between two publishes."""
    username: str | None = None
    password: SecretStr | None = None
    cell: Name | None = None
    poll_groups: list[PollGroup] = Field(default_factory=lambda: [PollGroup(name="default")])
    tags: list[OpcUaTag] = Field(default_factory=list)
