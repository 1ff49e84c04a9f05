"""Configuration models of the business destinations (ERP, WMS, QMS)."""

from __future__ import annotations

__all__ = [
    "ApiKeyAuth",
    "BasicAuth",
    "BearerAuth",
    "DestinationConfig",
    "RestDestinationConfig",
    "RetryPolicy",
    "System",
]

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, SecretStr, Tag

from gateway.config.common import ConfigModel, Name, PositiveSeconds


class System(StrEnum):
    """Which business system a destination is; decides which documents it receives."""

    ERP = "erp"
    """Production order confirmations (from completions)."""
    WMS = "wms"
    """Goods receipts of finished lots (from completions)."""
    QMS = "qms"
    """Inspection results per lot (from lot results)."""


class BearerAuth(ConfigModel):
    type: Literal["bearer"]
    token: SecretStr


class BasicAuth(ConfigModel):
    type: Literal["basic"]
    username: str
    password: SecretStr


class ApiKeyAuth(ConfigModel):
    type: Literal["api_key"]
    header: str = "X-API-Key"
    key: SecretStr


Auth = Annotated[BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")]


class RetryPolicy(ConfigModel):
    """Exponential backoff with full jitter between delivery attempts."""

    initial: PositiveSeconds = 1.0
    """Delay before the first retry."""
    maximum: PositiveSeconds = 60.0
    """Cap on the delay between retries."""
    multiplier: Annotated[float, Field(ge=1, le=10)] = 2.0


class RestDestinationConfig(ConfigModel):
    """A business system reached over HTTP with JSON bodies."""

    profile: Literal["rest"] = "rest"
    name: Name
    system: System
    url: Annotated[str, Field(pattern=r"^https?://")]
    """Endpoint receiving the documents (``POST``)."""
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
    auth: Auth | None = None
    timeout: PositiveSeconds = 10.0
    """Seconds for one request, connection included."""
    concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    """Documents in flight at once (documents of one order always go one after another)."""
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    constants: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """Fields added to every body (``source_location: LINE1-OUT``)."""


def _profile(value: Any) -> str:
    """The destination's profile; ``rest`` when the key is left out."""
    if isinstance(value, dict):
        return str(value.get("profile", "rest"))
    return str(getattr(value, "profile", "rest"))


DestinationConfig = Annotated[
    Annotated[RestDestinationConfig, Tag("rest")],
    Discriminator(_profile),
]
