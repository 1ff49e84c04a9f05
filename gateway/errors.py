"""The gateway's error tree.

Library exceptions (pymodbus, asyncua, aiohttp, paho, sqlite3) are converted into these at the
driver, output or connector boundary, so that everything above the boundary handles a small,
typed set of failures.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "ConfigIssue",
    "DeliveryError",
    "DeviceError",
    "GatewayError",
    "NotConnectedError",
    "OutboxError",
    "WriteRefusedError",
]

from dataclasses import dataclass


class GatewayError(Exception):
    """Base class of every error the gateway raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    """One problem found in a configuration file.

    `path` is the dotted/indexed location (``devices[1].tags[3].address``), `line` the 1-based
    line in the YAML file when known.
    """

    path: str
    message: str
    line: int | None = None

    def __str__(self) -> str:
        where = self.path or "<root>"
        if self.line is not None:
            where = f"{where} (line {self.line})"
        return f"{where}: {self.message}"


class ConfigError(GatewayError):
    """The configuration is invalid; carries every issue found, not just the first."""

    def __init__(self, issues: list[ConfigIssue], source: str = "") -> None:
        self.issues = issues
        self.source = source
        head = f"{source}: " if source else ""
        lines = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{head}{len(issues)} configuration error(s)\n{lines}")


class NotConnectedError(GatewayError):
    """A component is not connected; the supervisor reconnects it with backoff."""


class DeviceError(GatewayError):
    """A device answered with an error (for example a Modbus exception code)."""

    def __init__(self, device: str, message: str, *, code: int | None = None) -> None:
        self.device = device
        self.code = code
        super().__init__(f"{device}: {message}")


class WriteRefusedError(GatewayError):
    """A write was refused before anything was sent (tag not writable, bad type or range)."""

    def __init__(self, tag: str, reason: str) -> None:
        self.tag = tag
        self.reason = reason
        super().__init__(f"write to {tag} refused: {reason}")


class DeliveryError(GatewayError):
    """Delivering a document or message failed.

    `retryable` says whether sending the same thing again later may succeed (5xx, 429, timeouts);
    `retry_after` is the delay the target asked for, in seconds, when it said so.
    """

    def __init__(
        self,
        destination: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
        status: int | None = None,
    ) -> None:
        self.destination = destination
        self.retryable = retryable
        self.retry_after = retry_after
        self.status = status
        super().__init__(f"{destination}: {message}")


class OutboxError(GatewayError):
    """The durable outbox could not store or update documents."""
