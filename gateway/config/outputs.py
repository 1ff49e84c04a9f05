"""Configuration models of the northbound outputs: MQTT (UNS JSON or Sparkplug B) and InfluxDB.

See ``docs/mqtt.md`` for the topic tree, the payloads and the store-and-forward policy.
"""

from __future__ import annotations

__all__ = [
    "CommandsConfig",
    "InfluxOutputConfig",
    "MqttOutputConfig",
    "MqttTlsConfig",
    "OutputConfig",
    "SparkplugConfig",
    "StoreForwardConfig",
]

from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, model_validator

from gateway.config.common import ConfigModel, Name, PositiveSeconds, TopicToken

_TOPIC_ROOT = r"^[^/+#$\s][^+#\s]*[^/+#\s]$|^[^/+#$\s]$"
SparkplugId = Annotated[str, Field(pattern=r"^[^/+#\s]+$", min_length=1, max_length=64)]


def _check_file(path: str | None, what: str) -> None:
    if path is not None and not Path(path).expanduser().is_file():
        raise ValueError(f"{what} {path!r} does not exist or is not a file")


class MqttTlsConfig(ConfigModel):
    """TLS towards the broker. The broker's certificate and host name are verified by default."""

    ca_file: str | None = None
    """PEM file of the CA(s) that signed the broker's certificate (the system CAs when unset)."""
    cert_file: str | None = None
    """PEM client certificate, for brokers that require one (``require_certificate true``)."""
    key_file: str | None = None
    """PEM private key of the client certificate (when not inside `cert_file`)."""
    key_password: SecretStr | None = None
    verify: bool = True
    """Verify the broker's certificate chain and host name. Turn off only on a test bench."""

    @model_validator(mode="after")
    def _check(self) -> MqttTlsConfig:
        _check_file(self.ca_file, "ca_file")
        _check_file(self.cert_file, "cert_file")
        _check_file(self.key_file, "key_file")
        if self.key_file is not None and self.cert_file is None:
            raise ValueError("key_file needs cert_file")
        return self


class StoreForwardConfig(ConfigModel):
    """The buffer that holds messages while the broker is unreachable or slow.

    Messages that cannot go out at once (no connection, the in-flight window is full, the primary
    host is offline) are appended to the buffer and replayed in order after reconnecting, while
    live values go first. When the buffer is full the *oldest* messages are dropped, counted in
    ``gateway_buffer_dropped`` and logged; an alarm is logged (and ``gateway_buffer_alarm`` is 1)
    while it is fuller than `alarm_percent`.
    """

    disk: bool = True
    """Keep the buffer on disk (it survives restarts); in memory only when false."""
    directory: str | None = None
    """Folder of the buffer's segment files (``<data_dir>/buffer-<output name>`` when unset)."""
    max_bytes: Annotated[int, Field(ge=1 << 16, le=1 << 40)] = 256 << 20
    """Bound on the buffered messages (topic + payload + 11 bytes each), 256 MiB by default."""
    alarm_percent: Annotated[float, Field(gt=0, le=100)] = 80.0
    fsync_interval: Annotated[float, Field(ge=0, le=60)] = 1.0
    """Seconds between fsyncs of the buffer files (0: after every write). Every write is handed
    to the operating system at once, so a crash of the gateway loses nothing; a power loss can
    lose at most this much."""


class SparkplugConfig(ConfigModel):
    """Sparkplug B 3.0 payloads (``payload: sparkplug``)."""

    group_id: SparkplugId | None = None
    """The Sparkplug group (the ISA-95 site when unset)."""
    edge_node_id: SparkplugId | None = None
    """This gateway's edge node id (the gateway id when unset)."""
    primary_host_id: SparkplugId | None = None
    """Wait for ``spBv1.0/STATE/<primary_host_id>`` to say online before NBIRTH; when the host
    goes offline, send NDEATH, disconnect and start over."""
    device_id: Literal["device", "cell"] = "device"
    """Sparkplug device id of a PLC: the device name or its ISA-95 cell."""


class BatchedConfig(ConfigModel):
    """One message per device poll with every changed value (``payload: batched``)."""

    keys: Literal["names", "aliases"] = "names"
    """Name each value by its tag name, or by its position in the retained ``batch/meta``
    message (smaller messages for large devices)."""


class CommandsConfig(ConfigModel):
    """Writes requested over MQTT. Off unless enabled; only writable tags can ever be written."""

    enabled: bool = False
    tags: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns on tag ids that may be written (and only those with ``writable: true``)."""
    timeout: PositiveSeconds = 10.0
    """Seconds one write may take before it is answered as failed."""
    max_pending: Annotated[int, Field(ge=1, le=1000)] = 32
    """Writes running at once; further requests are refused as busy."""


class MqttOutputConfig(ConfigModel):
    """Publishes tag values and events to an MQTT broker (Unified Namespace or Sparkplug B)."""

    type: Literal["mqtt"]
    name: Name = "mqtt"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] | None = None
    """1883, or 8883 with TLS, when unset."""
    client_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """MQTT client id (``<gateway id>-<output name>`` when not set)."""
    username: str | None = None
    password: SecretStr | None = None
    tls: MqttTlsConfig | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    """Seconds between keep-alive pings."""
    mqtt_version: Literal["5", "3.1.1"] = "5"
    clean_start: bool = True
    """Start a new session on every connect (MQTT 5 clean start, 3.1.1 clean session)."""
    session_expiry: Annotated[int, Field(ge=0, le=0xFFFFFFFF)] = 0
    """MQTT 5: seconds the broker keeps the session (subscriptions) after a disconnect."""
    connect_timeout: PositiveSeconds = 10.0
    payload: Literal["uns", "sparkplug", "batched"] = "uns"
    """``uns``: one JSON message per changed tag on the ISA-95 topic tree; ``sparkplug``:
    Sparkplug B 3.0 protobuf (see `sparkplug`)."""
    qos: Literal[0, 1] = 1
    """QoS of tag values (UNS mode; Sparkplug data is QoS 0 as the specification requires)."""
    retain: bool = False
    """Publish tag values retained, so a new subscriber gets the last value at once."""
    topic_root: Annotated[str, Field(pattern=_TOPIC_ROOT, max_length=256)] | None = None
    """Topic prefix; the ISA-95 path ``enterprise/site/area/line`` when not set."""
    tags: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns on tag ids (``M1/*``, ``*/Temperature``) selecting what is published."""
    events: bool = True
    """Also publish business events (completions, lot results) under ``<root>/<cell>/...``."""
    status: bool = True
    """A retained ``<root>/_gateway/<id>/status`` message: online at connect, offline as the
    last will (UNS mode; Sparkplug uses NBIRTH/NDEATH)."""
    max_inflight: Annotated[int, Field(ge=1, le=65535)] = 2000
    """QoS 1 messages sent and not yet acknowledged; beyond that new messages are buffered
    (capped by the broker's MQTT 5 receive maximum)."""
    store_and_forward: StoreForwardConfig = Field(default_factory=StoreForwardConfig)
    sparkplug: SparkplugConfig = Field(default_factory=SparkplugConfig)
    batched: BatchedConfig = Field(default_factory=BatchedConfig)
    commands: CommandsConfig = Field(default_factory=CommandsConfig)
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Batches waiting for this output; when full the oldest batch is dropped and counted."""

    @property
    def broker_port(self) -> int:
        if self.port is not None:
            return self.port
        return 8883 if self.tls is not None else 1883

    @model_validator(mode="after")
    def _check(self) -> MqttOutputConfig:
        if self.password is not None and self.username is None:
            raise ValueError("password needs username")
        if self.session_expiry and self.mqtt_version != "5":
            raise ValueError("session_expiry needs mqtt_version 5")
        if self.payload == "batched" and self.commands.enabled:
            raise ValueError(
                "commands are served by the uns and sparkplug payloads; run a second mqtt "
                "output with payload uns for them"
            )
        return self


class InfluxRetry(ConfigModel):
    """Backoff between attempts of a failed write (5xx, 429, timeouts, connection errors)."""

    initial: PositiveSeconds = 1.0
    maximum: PositiveSeconds = 60.0


class InfluxOutputConfig(ConfigModel):
    """Writes tag values to InfluxDB 2/3 (or anything speaking ``/api/v2/write``).

    Mapping: one line per device and timestamp; measurement from `measurement`; tags
    ``gateway``, ``enterprise``, ``site``, ``area``, ``line``, ``cell``, ``device`` plus
    `constant_tags`; one field per PLC tag, named by the tag (``Temperature``,
    ``Measurements[3]``): numbers as floats, ``bool`` tags as booleans, strings as strings.
    Bad samples (no value) are left out.
    """

    type: Literal["influxdb"]
    name: Name = "influxdb"
    url: Annotated[str, Field(pattern=r"^https?://[^\s]+$")]
    """Base URL of the server, for example ``http://influx.local:8086``."""
    token: SecretStr | None = None
    org: str = ""
    bucket: Annotated[str, Field(min_length=1)]
    precision: Literal["s", "ms", "us", "ns"] = "ms"
    """Timestamp precision of the written points."""
    measurement: Annotated[str, Field(min_length=1, max_length=128)] = "plc"
    """Measurement name; ``{device}`` and ``{cell}`` are replaced per line."""
    constant_tags: dict[TopicToken, str] = Field(default_factory=dict)
    """Extra tags on every line (``{plant: dallas}``)."""
    tags: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns on tag ids selecting what is written."""
    batch_size: Annotated[int, Field(ge=1, le=100_000)] = 5000
    """Lines per write request."""
    flush_interval: PositiveSeconds = 1.0
    """Seconds a line may wait for its batch to fill."""
    gzip: bool = True
    timeout: PositiveSeconds = 10.0
    verify_ssl: bool = True
    ca_file: str | None = None
    max_buffered_lines: Annotated[int, Field(ge=100, le=10_000_000)] = 200_000
    """Lines held while the server is unreachable; when full the oldest are dropped and
    counted."""
    retry: InfluxRetry = Field(default_factory=InfluxRetry)
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000

    @model_validator(mode="after")
    def _check(self) -> InfluxOutputConfig:
        _check_file(self.ca_file, "ca_file")
        unknown = set(_placeholders(self.measurement)) - {"device", "cell"}
        if unknown:
            raise ValueError(
                f"measurement may use {{device}} and {{cell}}, not {', '.join(sorted(unknown))}"
            )
        return self


def _placeholders(template: str) -> list[str]:
    import string

    try:
        return [field for _, field, _, _ in string.Formatter().parse(template) if field]
    except ValueError as exc:
        raise ValueError(f"measurement {template!r}: {exc}") from None


OutputConfig = Annotated[MqttOutputConfig | InfluxOutputConfig, Field(discriminator="type")]
