"""HTTP plumbing shared by the business connectors: one client per destination (auth, TLS,
client certificates, cookies, timeouts), and the classification of answers.

Classification (:func:`classify`), the same for every profile unless the profile knows better:

* 2xx: delivered.
* "already exists" (409 by default, or what the profile recognises): delivered.
* 408, 425, 429, 5xx and every transport failure (refused, reset, timeout, TLS): retryable,
  honouring ``Retry-After``.
* 401, 403, 404, 405, 407, 415: retryable too. They say the *destination* is misconfigured
  (credentials, URL), so every document would fail the same way: the backlog waits, the
  circuit breaker opens and the error is logged, instead of every document going to the
  dead-letter queue.
* any other 4xx (400, 417, 422...): the document is refused: dead-letter queue, with the
  target's reason.
"""

from __future__ import annotations

__all__ = [
    "CONFIG_STATUSES",
    "HttpClient",
    "HttpReply",
    "auth_headers",
    "classify",
    "during",
    "json_reason",
    "parse_retry_after",
    "ssl_context",
]

import base64
import email.utils
import json
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from gateway.config.destinations import (
    ApiKeyAuth,
    Auth,
    BasicAuth,
    BearerAuth,
    ClientCertificateAuth,
    TlsConfig,
)
from gateway.errors import DeliveryError

RETRYABLE_STATUSES = frozenset({408, 425, 429})
CONFIG_STATUSES = frozenset({401, 403, 404, 405, 407, 415})
"""Answers that mean the destination (not the document) is wrong: retried, never dead-lettered."""


def auth_headers(auth: Auth | None) -> dict[str, str]:
    """The headers carrying a destination's credentials (none for a client certificate)."""
    if auth is None or isinstance(auth, ClientCertificateAuth):
        return {}
    if isinstance(auth, BearerAuth):
        return {"Authorization": f"Bearer {auth.token.get_secret_value()}"}
    if isinstance(auth, BasicAuth):
        raw = f"{auth.username}:{auth.password.get_secret_value()}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}
    assert isinstance(auth, ApiKeyAuth)
    return {auth.header: auth.key.get_secret_value()}


def ssl_context(auth: Auth | None, tls: TlsConfig | None) -> ssl.SSLContext | None:
    """The TLS context for https URLs: the CA to trust and the client certificate, if any."""
    if tls is None and not isinstance(auth, ClientCertificateAuth):
        return None
    context = ssl.create_default_context(cafile=tls.ca if tls is not None else None)
    if tls is not None and not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    if isinstance(auth, ClientCertificateAuth):
        password = auth.password.get_secret_value() if auth.password is not None else None
        context.load_cert_chain(auth.cert, auth.key, password)
    return context


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


def json_reason(body: str) -> str:
    """The human part of an error body: JSON ``error``/``message``/``detail`` or the text."""
    try:
        data = json.loads(body)
    except ValueError:
        return " ".join(body.split())[:300]
    if isinstance(data, dict):
        for key in ("error", "message", "detail", "title", "errors"):
            if key in data:
                found = data[key]
                if isinstance(found, dict):
                    found = found.get("message", found)
                    if isinstance(found, dict):
                        found = found.get("value", found)
                return str(found)[:300]
    return " ".join(body.split())[:300]


@dataclass(frozen=True, slots=True)
class HttpReply:
    """An answer, read completely."""

    status: int
    headers: Mapping[str, str]
    text: str

    def json(self) -> Any:
        """The body as JSON; None when it is not JSON."""
        try:
            return json.loads(self.text)
        except ValueError:
            return None


def classify(
    destination: str,
    reply: HttpReply,
    *,
    reason: Callable[[str], str] = json_reason,
    already_exists: Callable[[HttpReply], bool] | None = None,
) -> DeliveryError | None:
    """None when the document counts as delivered; otherwise the error to raise."""
    if 200 <= reply.status < 300:
        return None
    if already_exists is not None and already_exists(reply):
        return None
    text = reason(reply.text) or f"HTTP {reply.status}"
    message = f"HTTP {reply.status}: {text}"
    status = reply.status
    if status in RETRYABLE_STATUSES or status >= 500 or status in CONFIG_STATUSES:
        return DeliveryError(
            destination,
            message,
            retryable=True,
            retry_after=parse_retry_after(reply.headers.get("Retry-After")),
            status=status,
        )
    return DeliveryError(destination, message, retryable=False, status=status)


def during(step: str, error: DeliveryError) -> DeliveryError:
    """`error` of a preparatory request (a look-up, a token fetch), retryable: it says nothing
    about the document itself."""
    message = str(error).removeprefix(f"{error.destination}: ")
    return DeliveryError(
        error.destination,
        f"{step}: {message}",
        retryable=True,
        retry_after=error.retry_after,
        status=error.status,
    )


class HttpClient:
    """One destination's HTTP client: a connection pool with its auth, TLS and cookies.

    Every request has the destination's timeout; every transport failure becomes a retryable
    :class:`~gateway.errors.DeliveryError`. Cookies are kept (also for IP-address hosts), as
    session-based targets such as SAP need them.
    """

    def __init__(
        self,
        destination: str,
        *,
        timeout: float,
        concurrency: int,
        auth: Auth | None = None,
        tls: TlsConfig | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.destination = destination
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._limit = concurrency
        self._ssl = ssl_context(auth, tls)
        self.headers = {**(headers or {}), **auth_headers(auth)}
        self._session: aiohttp.ClientSession | None = None

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(
                    limit=self._limit + 2, ssl=self._ssl if self._ssl is not None else True
                ),
                cookie_jar=aiohttp.CookieJar(unsafe=True),
            )
        return self._session

    def forget_cookies(self) -> None:
        if self._session is not None:
            self._session.cookie_jar.clear()

    async def send(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """One request; the whole answer is read. Raises a retryable DeliveryError on any
        transport failure."""
        merged = {**self.headers, **(headers or {})}
        try:
            async with self.session().request(
                method, url, data=body, headers=merged, params=params
            ) as response:
                text = await response.text(errors="replace")
                return HttpReply(response.status, response.headers, text)
        except TimeoutError as exc:
            raise DeliveryError(
                self.destination, f"{method} {url}: no answer within the timeout", retryable=True
            ) from exc
        except aiohttp.ClientError as exc:
            raise DeliveryError(
                self.destination, f"{method} {url}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc
        except (OSError, ssl.SSLError) as exc:
            raise DeliveryError(
                self.destination, f"{method} {url}: {type(exc).__name__}: {exc}", retryable=True
            ) from exc

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None
