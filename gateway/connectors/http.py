"""HTTP plumbing shared by the business connectors: auth headers and response classification."""

from __future__ import annotations

__all__ = ["auth_headers", "classify_response", "parse_retry_after"]

import base64
import email.utils
import json
import time

from gateway.config.destinations import ApiKeyAuth, BasicAuth, BearerAuth
from gateway.errors import DeliveryError

_RETRYABLE = frozenset({408, 425, 429, 500, 502, 503, 504})


def auth_headers(auth: BearerAuth | BasicAuth | ApiKeyAuth | None) -> dict[str, str]:
    """The headers carrying a destination's credentials."""
    if auth is None:
        return {}
    if isinstance(auth, BearerAuth):
        return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
    if isinstance(auth, BasicAuth):
        raw = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    return {auth.header: auth.key.get_secret_value()}


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _reason(body: str) -> str:
    try:
        data = json.loads(body)
    except ValueError:
        return body.strip()[:300]
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "exception", "_server_messages"):
            if key in data:
                found = data[key]
                if isinstance(found, dict):
                    found = found.get("message", found)
                    if isinstance(found, dict):
                        found = found.get("value", found)
                return str(found)[:300]
    return body.strip()[:300]


def classify_response(
    destination: str, status: int, body: str, retry_after: str | None
) -> DeliveryError | None:
    """None for success (2xx, and 409 "already exists"); otherwise the error to raise."""
    if 200 <= status < 300 or status == 409:
        return None
    reason = _reason(body) or f"HTTP {status}"
    if status in _RETRYABLE:
        return DeliveryError(
            destination,
            f"HTTP {status}: {reason}",
            retryable=True,
            retry_after=parse_retry_after(retry_after),
            status=status,
        )
    return DeliveryError(destination, f"HTTP {status}: {reason}", retryable=False, status=status)
