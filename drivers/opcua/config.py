"""Configuration models of the OPC UA driver.

Monitoring settings (sampling interval, queue size, discard policy, data-change filter) are
looked up tag first, then the tag's poll group, then the device; the first one set wins.
"""

from __future__ import annotations

__all__ = [
    "DataChangeFilter",
    "MonitoringSettings",
    "OpcUaDevice",
    "OpcUaIdentity",
    "OpcUaPollGroup",
    "OpcUaSecurity",
    "OpcUaTag",
    "SecurityMode",
    "SecurityPolicyName",
]

from enum import StrEnum
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator

from drivers.opcua.addressing import ALIAS_PATTERN, parse_browse_path, parse_node_id
from gateway.config.common import ConfigModel, Name, PollGroup, PositiveSeconds, TagBase
from gateway.datatypes import DataType


class SecurityPolicyName(StrEnum):
    """Security policies (the deprecated SHA-1 ones are not offered)."""

    NONE = "None"
    BASIC256SHA256 = "Basic256Sha256"
    AES128_SHA256_RSAOAEP = "Aes128_Sha256_RsaOaep"
    AES256_SHA256_RSAPSS = "Aes256_Sha256_RsaPss"


class SecurityMode(StrEnum):
    """Message security modes."""

    NONE = "None"
    SIGN = "Sign"
    SIGN_AND_ENCRYPT = "SignAndEncrypt"


class DataChangeFilter(ConfigModel):
    """When the server reports a change of a monitored item (OPC UA DataChangeFilter)."""

    trigger: Literal["status", "status_value", "status_value_timestamp"] = "status_value"
    """Report on a change of the status only, of status or value, or of any of the three."""
    deadband_type: Literal["none", "absolute", "percent"] = "none"
    """``absolute``: in the value's units; ``percent``: of the node's EURange (AnalogItems)."""
    deadband_value: Annotated[float, Field(ge=0)] = 0.0

    @model_validator(mode="after")
    def _check(self) -> DataChangeFilter:
        if self.deadband_type == "percent" and self.deadband_value > 100:
            raise ValueError("a percent deadband is between 0 and 100")
        if self.deadband_type == "none" and self.deadband_value:
            raise ValueError("deadband_value needs deadband_type absolute or percent")
        return self


class MonitoringSettings(ConfigModel):
    """Per-item subscription settings; unset fields fall back to the poll group, then device."""

    sampling_interval: Annotated[float, Field(ge=0, le=86_400)] | None = None
    """Seconds between two samples of the value on the server; 0 = as fast as it can (or on
    every change); unset = the subscription's publishing interval."""
    queue_size: Annotated[int, Field(ge=1, le=10_000)] | None = None
    """Values the server keeps for an item between two publishes (1 = the latest only)."""
    discard_oldest: bool | None = None
    """When the queue is full, drop the oldest value (true) or the newest (false)."""
    filter: DataChangeFilter | None = None
    """Data-change filter (trigger and deadband); unset = report status or value changes."""


class OpcUaPollGroup(PollGroup, MonitoringSettings):
    """Tags read together (``mode: poll``) every `interval`, or subscribed together in one
    subscription (``mode: subscribe``) with this group's publishing interval."""

    publishing_interval: PositiveSeconds | None = None
    """Seconds between two notification messages of this group's subscription (the device's
    `publishing_interval` when unset)."""


class OpcUaTag(TagBase, MonitoringSettings):
    """One OPC UA variable, by NodeId or by browse path."""

    type: DataType = DataType.FLOAT64
    node: str | None = None
    """NodeId: ``ns=2;s=Line1.Press.Count``, ``ns=3;i=1001``, ``ns=2;g=<guid>``,
    ``ns=2;b=<base64>``, ``i=2258``; with the namespace by URI ``nsu=urn:acme:plc;s=...`` or
    by an alias from the device's `namespaces` (``nsu=plc;s=...``), resolved at every connect."""
    path: str | None = None
    """Browse path from the Objects folder, ``plc:Line1/plc:Press/plc:Count``: each element
    ``<alias>:<BrowseName>`` or ``<index>:<BrowseName>`` (no prefix: namespace 0)."""
    mode: Literal["subscribe", "poll"] = "subscribe"
    """Monitored item in a subscription (default), or read every poll-group interval."""
    count: Annotated[int, Field(ge=1, le=10_000)] = 1
    """Elements of an array variable; more than 1 makes elements ``name[i]``."""

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str | None) -> str | None:
        if value is not None:
            parse_node_id(value)  # raises ValueError with the reason
        return value

    @field_validator("path")
    @classmethod
    def _check_path(cls, value: str | None) -> str | None:
        if value is not None:
            parse_browse_path(value)
        return value

    @model_validator(mode="after")
    def _check_address(self) -> OpcUaTag:
        if (self.node is None) == (self.path is None):
            raise ValueError("give exactly one of `node` (a NodeId) or `path` (a browse path)")
        if (
            self.filter is not None
            and self.filter.deadband_type != "none"
            and not self.type.is_numeric
        ):
            raise ValueError(f"a deadband needs a numeric tag, this one is {self.type.value}")
        return self


class OpcUaSecurity(ConfigModel):
    """How the secure channel is protected, and where certificates live."""

    policy: SecurityPolicyName = SecurityPolicyName.NONE
    mode: SecurityMode | None = None
    """``Sign`` or ``SignAndEncrypt`` (the default with a policy other than None)."""
    pki_dir: str | None = None
    """Folder of the certificate store (``own/``, ``trusted/``, ``rejected/``); default
    ``<gateway.data_dir>/pki``."""
    application_uri: str | None = None
    """Our application URI, written into our certificate; default
    ``urn:<hostname>:edge-gateway``."""
    trust_on_first_use: bool = False
    """Trust an unknown server certificate on the first connection (saved to ``trusted/``).
    Off by default: trust servers with ``edge-gateway trust``."""

    @model_validator(mode="after")
    def _check_mode(self) -> OpcUaSecurity:
        if self.policy is SecurityPolicyName.NONE:
            if self.mode not in (None, SecurityMode.NONE):
                raise ValueError(f"mode {self.mode.value} needs a policy other than None")
        elif self.mode is SecurityMode.NONE:
            raise ValueError(f"policy {self.policy.value} needs mode Sign or SignAndEncrypt")
        return self

    @property
    def effective_mode(self) -> SecurityMode:
        if self.policy is SecurityPolicyName.NONE:
            return SecurityMode.NONE
        return self.mode or SecurityMode.SIGN_AND_ENCRYPT


class OpcUaIdentity(ConfigModel):
    """Who we are to the server: anonymous (nothing set), a user name and password, or an
    X.509 user certificate with its private key."""

    username: str | None = None
    password: SecretStr | None = None
    certificate: str | None = None
    """User certificate file (DER or PEM)."""
    private_key: str | None = None
    """Private key file of the user certificate (PEM or DER)."""
    private_key_password: SecretStr | None = None

    @model_validator(mode="after")
    def _check(self) -> OpcUaIdentity:
        if self.username is not None and self.certificate is not None:
            raise ValueError("give a username or a certificate, not both")
        if self.password is not None and self.username is None:
            raise ValueError("a password needs a username")
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("a user certificate needs its private_key (and the other way round)")
        return self

    @property
    def kind(self) -> Literal["anonymous", "username", "certificate"]:
        if self.username is not None:
            return "username"
        if self.certificate is not None:
            return "certificate"
        return "anonymous"


class OpcUaDevice(ConfigModel):
    """An OPC UA server."""

    protocol: Literal["opcua"]
    name: Name
    endpoint: Annotated[str, Field(pattern=r"^opc\.tcp://[^/:]+(:\d+)?(/.*)?$")]
    """``opc.tcp://host:port/path``."""
    timeout: PositiveSeconds = 5.0
    """Seconds to wait for a connection or a service response."""
    keepalive: PositiveSeconds = 5.0
    """Seconds between two checks that the session is alive; a dead session or channel is
    noticed within about twice this."""
    namespaces: dict[Annotated[str, Field(pattern=ALIAS_PATTERN)], str] = Field(
        default_factory=dict
    )
    """Aliases of namespace URIs (``plc: urn:acme:plc``) for NodeIds and browse paths; URIs are
    looked up in the server's namespace array at every connect."""
    security: OpcUaSecurity = Field(default_factory=OpcUaSecurity)
    identity: OpcUaIdentity = Field(default_factory=OpcUaIdentity)
    publishing_interval: PositiveSeconds = 0.5
    """Seconds between two notification messages of a subscription."""
    sampling_interval: Annotated[float, Field(ge=0, le=86_400)] | None = None
    """Seconds between two samples on the server (the publishing interval when not set)."""
    queue_size: Annotated[int, Field(ge=1, le=10_000)] = 10
    """Values a monitored item keeps between two publishes."""
    discard_oldest: bool = True
    """When a monitored item's queue is full, drop the oldest value (else the newest)."""
    filter: DataChangeFilter | None = None
    """Default data-change filter of monitored items."""
    max_items_per_call: Annotated[int, Field(ge=1, le=100_000)] | None = None
    """Cap on nodes per Read and monitored items per CreateMonitoredItems call, below what the
    server advertises (for servers whose advertised limits are wrong)."""
    cell: Name | None = None
    """ISA-95 work unit this device belongs to (the device name when not set)."""
    poll_groups: list[OpcUaPollGroup] = Field(
        default_factory=lambda: [OpcUaPollGroup(name="default")]
    )
    tags: list[OpcUaTag] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_aliases(self) -> OpcUaDevice:
        problems = []
        for index, tag in enumerate(self.tags):
            for alias in _aliases_of(tag):
                if alias not in self.namespaces:
                    known = ", ".join(self.namespaces) or "none defined"
                    problems.append(
                        f"tags[{index}] ({tag.name}): unknown namespace alias {alias!r} "
                        f"(namespaces: {known})"
                    )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _aliases_of(tag: OpcUaTag) -> list[str]:
    aliases = []
    if tag.node is not None:
        parsed = parse_node_id(tag.node)
        if parsed.namespace_uri is not None and parsed.is_alias:
            aliases.append(parsed.namespace_uri)
    if tag.path is not None:
        aliases.extend(
            element.namespace
            for element in parse_browse_path(tag.path)
            if isinstance(element.namespace, str)
        )
    return aliases
