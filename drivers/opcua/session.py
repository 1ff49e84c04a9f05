"""Opening an OPC UA session the same way for the driver, ``browse`` and ``trust``.

One call does: our certificate (made on first use) and the server's (must be trusted) when the
security policy is not None, the user identity, the connection with asyncua's auto-reconnect
off (the gateway's supervisor is the only retry loop), and, once connected, the server's
namespace array and advertised operation limits. Failures become :mod:`drivers.opcua.errors`
or :class:`~gateway.errors.NotConnectedError` with a message that says what to do.
"""

from __future__ import annotations

__all__ = [
    "ConnectionSettings",
    "OperationLimits",
    "Session",
    "fetch_server_certificates",
    "open_session",
]

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncua import ua
from asyncua.client.client import Client
from asyncua.client.ua_client import UaClientState
from asyncua.crypto import security_policies
from asyncua.observer import NULL_OBSERVER, Observer
from asyncua.ua.attribute_ids import AttributeIds
from asyncua.ua.object_ids import ObjectIds
from asyncua.ua.status_codes import StatusCodes
from asyncua.ua.uaerrors import UaError, UaStatusCodeError

from drivers.opcua.config import (
    OpcUaDevice,
    OpcUaIdentity,
    OpcUaSecurity,
    SecurityMode,
    SecurityPolicyName,
)
from drivers.opcua.errors import (
    CertificateRejectedError,
    IdentityRejectedError,
    UntrustedServerError,
)
from drivers.opcua.pki import Pki, default_application_uri, describe_certificate
from gateway.errors import NotConnectedError

log = logging.getLogger(__name__)

_POLICIES: dict[SecurityPolicyName, type[security_policies.SecurityPolicy]] = {
    SecurityPolicyName.NONE: security_policies.SecurityPolicyNone,
    SecurityPolicyName.BASIC256SHA256: security_policies.SecurityPolicyBasic256Sha256,
    SecurityPolicyName.AES128_SHA256_RSAOAEP: security_policies.SecurityPolicyAes128Sha256RsaOaep,
    SecurityPolicyName.AES256_SHA256_RSAPSS: security_policies.SecurityPolicyAes256Sha256RsaPss,
}
_MODES = {
    SecurityMode.NONE: ua.MessageSecurityMode.None_,
    SecurityMode.SIGN: ua.MessageSecurityMode.Sign,
    SecurityMode.SIGN_AND_ENCRYPT: ua.MessageSecurityMode.SignAndEncrypt,
}
_REJECTED_CERTIFICATE = {
    StatusCodes.BadCertificateUntrusted,
    StatusCodes.BadSecurityChecksFailed,
    StatusCodes.BadCertificateInvalid,
    StatusCodes.BadCertificateRevoked,
    StatusCodes.BadCertificateIssuerRevoked,
    StatusCodes.BadCertificateUseNotAllowed,
    StatusCodes.BadCertificateTimeInvalid,
    StatusCodes.BadCertificateHostNameInvalid,
    StatusCodes.BadCertificateIssuerTimeInvalid,
    StatusCodes.BadCertificateChainIncomplete,
}
_REJECTED_IDENTITY = {
    StatusCodes.BadIdentityTokenInvalid,
    StatusCodes.BadIdentityTokenRejected,
    StatusCodes.BadUserAccessDenied,
    StatusCodes.BadUserSignatureInvalid,
}
_LIMITS = "Server_ServerCapabilities_OperationLimits_MaxNodesPer"
_LIMIT_NODES = {
    "read": getattr(ObjectIds, _LIMITS + "Read"),
    "write": getattr(ObjectIds, _LIMITS + "Write"),
    "browse": getattr(ObjectIds, _LIMITS + "Browse"),
    "translate": getattr(ObjectIds, _LIMITS + "TranslateBrowsePathsToNodeIds"),
    "monitored_items": ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall,
}
_UNADVERTISED_LIMIT = 1000
"""Items per call when the server does not say (keeps each message a few hundred kB)."""


@dataclass(frozen=True, slots=True)
class ConnectionSettings:
    """Everything needed to open a session (from a device's config, or the CLI's options)."""

    endpoint: str
    security: OpcUaSecurity
    identity: OpcUaIdentity
    pki_dir: Path
    timeout: float = 5.0
    keepalive: float = 5.0
    label: str = ""
    """Who is connecting, for messages (the device name)."""

    @classmethod
    def for_device(cls, device: OpcUaDevice, data_dir: str | Path) -> ConnectionSettings:
        pki_dir = device.security.pki_dir or Path(data_dir) / "pki"
        return cls(
            device.endpoint,
            device.security,
            device.identity,
            Path(pki_dir),
            device.timeout,
            device.keepalive,
            device.name,
        )

    @property
    def application_uri(self) -> str:
        return self.security.application_uri or default_application_uri()

    @property
    def where(self) -> str:
        return f"{self.label}: " if self.label else ""


@dataclass(frozen=True, slots=True)
class OperationLimits:
    """Items per service call, as the server advertises them (or our default when it does not),
    capped by the device's `max_items_per_call`."""

    read: int = _UNADVERTISED_LIMIT
    write: int = _UNADVERTISED_LIMIT
    browse: int = _UNADVERTISED_LIMIT
    translate: int = _UNADVERTISED_LIMIT
    monitored_items: int = _UNADVERTISED_LIMIT


@dataclass(slots=True)
class Session:
    """A connected client with what was learnt at connect."""

    client: Client
    namespaces: list[str]
    limits: OperationLimits
    timeout: float

    async def close(self) -> None:
        """Close the session (deleting its subscriptions on the server) and the channel."""
        with contextlib.suppress(Exception):  # closing a dead connection may fail any way
            await asyncio.wait_for(self.client.disconnect(), self.timeout)


async def open_session(
    settings: ConnectionSettings,
    *,
    max_items_per_call: int | None = None,
    on_connection_lost: Callable[[Exception], Coroutine[Any, Any, None]] | None = None,
) -> Session:
    """Connect, activate a session, read the namespace array and the operation limits."""
    where = settings.where
    client = Client(
        settings.endpoint, timeout=settings.timeout, watchdog_intervall=settings.keepalive
    )
    client.name = client.description = "edge-gateway"
    client.application_uri = settings.application_uri
    client.product_uri = "urn:edge-gateway"
    # an abandoned session (a cut cable) and its subscriptions expire on the server soon
    client.session_timeout = int(max(30.0, 6 * settings.keepalive) * 1000)
    pki = Pki(settings.pki_dir)
    secured = settings.security.policy is not SecurityPolicyName.NONE
    if secured:
        await _set_security(client, settings, pki)
    await _set_identity(client, settings.identity, where)
    client.connection_lost_callback = on_connection_lost
    states = _StateRecorder()
    client.uaclient.observer = states
    try:
        try:
            await asyncio.wait_for(client.connect(auto_reconnect=False), settings.timeout * 3)
        finally:
            client.uaclient.observer = NULL_OBSERVER
        namespaces = await asyncio.wait_for(client.get_namespace_array(), settings.timeout)
        limits = await _read_limits(client, settings.timeout, max_items_per_call)
    except (OSError, TimeoutError, UaError, AssertionError, ConnectionError) as exc:
        with contextlib.suppress(Exception):
            client.disconnect_socket()
        raise _connect_error(exc, settings, pki, secured, states.reached) from exc
    return Session(client, namespaces, limits, settings.timeout)


async def fetch_server_certificates(
    endpoint: str, timeout: float
) -> list[tuple[ua.EndpointDescription, bytes]]:
    """The server's endpoints that offer security, with their certificates (over a
    security-None channel, as GetEndpoints is meant to be used)."""
    client = Client(endpoint, timeout=timeout)
    try:
        endpoints = await asyncio.wait_for(client.connect_and_get_server_endpoints(), timeout * 2)
    except (OSError, TimeoutError, UaError, ConnectionError) as exc:
        raise NotConnectedError(f"cannot get the endpoints of {endpoint}: {_reason(exc)}") from exc
    return [
        (e, _first_certificate(e.ServerCertificate))
        for e in endpoints
        if e.ServerCertificate and e.SecurityMode != ua.MessageSecurityMode.None_
    ]


async def _set_security(client: Client, settings: ConnectionSettings, pki: Pki) -> None:
    security = settings.security
    where = settings.where
    try:
        await asyncio.to_thread(pki.ensure_own, settings.application_uri)
    except (ValueError, OSError) as exc:
        raise NotConnectedError(f"{where}{exc}") from exc
    policy = _POLICIES[security.policy]
    mode = _MODES[security.effective_mode]
    offered = await fetch_server_certificates(settings.endpoint, settings.timeout)
    match = [
        (e, der)
        for e, der in offered
        if e.SecurityPolicyUri == policy.URI and e.SecurityMode == mode
    ]
    if not match:
        choices = sorted(
            {f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}" for e, _ in offered}
        )
        raise NotConnectedError(
            f"{where}{settings.endpoint} offers no endpoint with {security.policy.value}/"
            f"{security.effective_mode.value}; it offers: "
            f"{', '.join(choices) or 'security None only'}"
        )
    der = match[0][1]
    info = describe_certificate(der)
    trusted = await asyncio.to_thread(pki.is_trusted, der)
    if not trusted and security.trust_on_first_use:
        path = await asyncio.to_thread(pki.trust, der)
        log.warning(
            "%strusted the server certificate %s (SHA-1 %s) on first use: saved as %s",
            where,
            info.subject,
            info.sha1,
            path,
        )
    elif not trusted:
        path = await asyncio.to_thread(pki.reject, der)
        raise UntrustedServerError(
            f"{where}the server certificate of {settings.endpoint} ({info.subject}, SHA-1 "
            f"{info.sha1}) is not trusted; check and accept it with `edge-gateway trust "
            f"{settings.endpoint} --pki {settings.pki_dir}` (saved as {path})"
        )
    if info.expired:
        raise NotConnectedError(
            f"{where}the server certificate of {settings.endpoint} is not valid now "
            f"({info.not_before:%Y-%m-%d} to {info.not_after:%Y-%m-%d}); renew it on the server"
        )
    await client.set_security(
        policy,
        str(pki.own_certificate),
        str(pki.own_key),
        server_certificate=der,
        mode=mode,
    )


async def _set_identity(client: Client, identity: OpcUaIdentity, where: str) -> None:
    if identity.username is not None:
        client.set_user(identity.username)
        if identity.password is not None:
            client.set_password(identity.password.get_secret_value())
    elif identity.certificate is not None and identity.private_key is not None:
        password = identity.private_key_password
        try:
            await client.load_client_certificate(identity.certificate)
            await client.load_private_key(
                Path(identity.private_key),
                password.get_secret_value() if password is not None else None,
            )
        except (OSError, ValueError, TypeError) as exc:
            raise NotConnectedError(
                f"{where}cannot load the user certificate or key: {exc}"
            ) from exc


async def _read_limits(client: Client, timeout: float, cap: int | None) -> OperationLimits:
    # one node per Read: a server may allow fewer nodes per Read than there are limits
    results = await asyncio.wait_for(
        asyncio.gather(
            *(
                client.uaclient.read_attributes([ua.NodeId(ua.Int32(i))], AttributeIds.Value)
                for i in _LIMIT_NODES.values()
            )
        ),
        timeout,
    )
    limits = {}
    for name, (result,) in zip(_LIMIT_NODES, results, strict=True):
        value = result.Value.Value if good_status(result) and result.Value else None
        limit = int(value) if isinstance(value, int) and value > 0 else _UNADVERTISED_LIMIT
        limits[name] = min(limit, cap) if cap else limit
    return OperationLimits(**limits)


class _StateRecorder(Observer):
    """Notes the client states reached while connecting (where did it fail?)."""

    def __init__(self) -> None:
        self.reached: list[UaClientState] = []

    def observe_request(self, request: Any) -> AbstractContextManager[None]:
        return contextlib.nullcontext()

    def on_state_change(self, state: UaClientState) -> None:
        self.reached.append(state)


def _connect_error(
    exc: BaseException,
    settings: ConnectionSettings,
    pki: Pki,
    secured: bool,
    reached: list[UaClientState],
) -> NotConnectedError:
    where = settings.where
    status = exc.code if isinstance(exc, UaStatusCodeError) else None
    channel_open = UaClientState.CHANNEL_OPEN in reached or UaClientState.CONNECTED in reached
    own = pki.own_certificate
    if status == StatusCodes.BadCertificateUriInvalid:
        return CertificateRejectedError(
            f"{where}server rejected our certificate: its application URI does not match "
            f"{settings.application_uri!r} (certificate {own})"
        )
    if secured and (
        status in _REJECTED_CERTIFICATE
        or (
            not channel_open
            and isinstance(exc, AssertionError | ConnectionError)
            and UaClientState.SOCKET_OPEN in reached
        )
    ):
        return CertificateRejectedError(
            f"{where}server rejected our certificate: trust it on the server (copy {own} "
            f"into the server's trusted certificates; many servers put it in their rejected "
            f"folder), then it connects on the next retry ({_reason(exc)})"
        )
    if status in _REJECTED_IDENTITY:
        who = (
            f"user {settings.identity.username!r}"
            if settings.identity.kind == "username"
            else f"{settings.identity.kind} identity"
        )
        return IdentityRejectedError(f"{where}server rejected the {who}: {_reason(exc)}")
    if status == StatusCodes.BadSecurityPolicyRejected:
        return NotConnectedError(
            f"{where}server rejected security policy {settings.security.policy.value}"
        )
    return NotConnectedError(f"{where}cannot connect to {settings.endpoint}: {_reason(exc)}")


def good_status(data_value: ua.DataValue) -> bool:
    """A DataValue's status is good (no status at all counts as good)."""
    return data_value.StatusCode is None or data_value.StatusCode.is_good()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, UaStatusCodeError):
        return ua.StatusCode(exc.code).name
    if isinstance(exc, TimeoutError):
        return "no answer in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _first_certificate(data: bytes) -> bytes:
    """The first certificate of a DER chain (servers may send theirs with its issuers)."""
    if len(data) < 4 or data[0] != 0x30:
        return data
    if data[1] & 0x80:
        size_bytes = data[1] & 0x7F
        length = int.from_bytes(data[2 : 2 + size_bytes], "big")
        return data[: 2 + size_bytes + length]
    return data[: 2 + data[1]]
