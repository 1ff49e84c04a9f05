"""Configuration models of the northbound outputs."""

from __future__ import annotations

__all__ = ["MqttOutputConfig", "OutputConfig"]

from typing import Annotated, Literal

from pydantic import Field, SecretStr

from gateway.config.common import ConfigModel, Name, PositiveSeconds


class MqttOutputConfig(ConfigModel):
    """Publishes tag values and events to an MQTT broker on a Unified Namespace topic tree."""

    type: Literal["mqtt"]
    name: Name = "mqtt"
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=1, le=65535)] = 1883
    client_id: Annotated[str, Field(min_length=1, max_length=64)] | None = None
    """MQTT client id (``<gateway id>-<output name>`` when not set)."""
    username: str | None = None
    password: SecretStr | None = None
    keepalive: Annotated[int, Field(ge=5, le=3600)] = 30
    """Seconds between keep-alive pings."""
    mqtt_version: Literal["5", "3.1.1"] = "5"
    qos: Literal[0, 1] = 1
    retain: bool = False
    """Publish tag values retained, so a new subscriber gets the last value at once."""
    topic_root: str | None = None
    """Topic prefix; the ISA-95 path ``enterprise/site/area/line`` when not set."""
    tags: list[str] = Field(default_factory=lambda: ["*"])
    """Glob patterns on tag ids (``M1/*``, ``*/Temperature``) selecting what is published."""
    events: bool = True
    """Also publish business events (completions, lot results) under ``<root>/<cell>/mes/...``."""
    connect_timeout: PositiveSeconds = 10.0
    queue_size: Annotated[int, Field(ge=1, le=100_000)] = 1000
    """Batches waiting for this output; when full the oldest batch is dropped and counted."""


OutputConfig = Annotated[MqttOutputConfig, Field(discriminator="type")]
