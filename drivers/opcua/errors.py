"""Errors of the OPC UA driver: connection failures a person has to act on, with the action."""

from __future__ import annotations

__all__ = ["CertificateRejectedError", "IdentityRejectedError", "UntrustedServerError"]

from gateway.errors import NotConnectedError


class UntrustedServerError(NotConnectedError):
    """The server's certificate is not in our trusted folder (nothing is accepted on first use
    unless configured). The supervisor keeps retrying, so trusting it takes effect without a
    restart."""


class CertificateRejectedError(NotConnectedError):
    """The server refused our application certificate: it must be trusted on the server."""


class IdentityRejectedError(NotConnectedError):
    """The server refused the user identity (user name, password or user certificate)."""
