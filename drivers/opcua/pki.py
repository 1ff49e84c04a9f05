"""The gateway's certificate store for OPC UA security (a folder, like UaExpert's or
node-opcua's)::

    pki/
      own/cert.der            our application instance certificate (made on first use)
      own/private/key.pem     its private key (mode 0600)
      trusted/                server certificates we accept (``edge-gateway trust``)
      rejected/               server certificates we saw and did not accept

A server certificate is trusted when the exact same certificate (same SHA-1 thumbprint) is in
``trusted/``; nothing is accepted on first use unless the device says so. The functions here
do file I/O: callers on the event loop run them with :func:`asyncio.to_thread`.
"""

from __future__ import annotations

__all__ = ["CertificateInfo", "Pki", "default_application_uri", "describe_certificate"]

import datetime as dt
import hashlib
import os
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto.cert_gen import dump_private_key_as_pem, generate_self_signed_app_certificate
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_CERTIFICATE_DAYS = 5 * 365 + 1
_KEY_BITS = 2048


def default_application_uri() -> str:
    """``urn:<hostname>:edge-gateway``."""
    return f"urn:{socket.gethostname()}:edge-gateway"


@dataclass(frozen=True, slots=True)
class CertificateInfo:
    """What a person checks before trusting a certificate."""

    subject: str
    application_uri: str | None
    hosts: tuple[str, ...]
    not_before: dt.datetime
    not_after: dt.datetime
    sha1: str
    sha256: str
    path: Path | None = None

    @property
    def expired(self) -> bool:
        now = dt.datetime.now(dt.UTC)
        return not self.not_before <= now <= self.not_after

    def lines(self) -> list[str]:
        return [
            f"subject          {self.subject}",
            f"application URI  {self.application_uri or '(none)'}",
            f"hosts            {', '.join(self.hosts) or '(none)'}",
            f"valid            {self.not_before:%Y-%m-%d} to {self.not_after:%Y-%m-%d}"
            + ("  EXPIRED or not yet valid" if self.expired else ""),
            f"SHA-1            {_colons(self.sha1)}",
            f"SHA-256          {_colons(self.sha256)}",
        ]


def _colons(hex_digest: str) -> str:
    return ":".join(hex_digest[i : i + 2] for i in range(0, len(hex_digest), 2)).upper()


def describe_certificate(der: bytes, path: Path | None = None) -> CertificateInfo:
    """Subject, application URI, validity and fingerprints of a DER certificate."""
    cert = x509.load_der_x509_certificate(der)
    uri: str | None = None
    hosts: list[str] = []
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
        uri = uris[0] if uris else None
        hosts = [*san.get_values_for_type(x509.DNSName)]
        hosts += [str(ip) for ip in san.get_values_for_type(x509.IPAddress)]
    except x509.ExtensionNotFound:
        pass
    return CertificateInfo(
        subject=cert.subject.rfc4514_string(),
        application_uri=uri,
        hosts=tuple(hosts),
        not_before=cert.not_valid_before_utc,
        not_after=cert.not_valid_after_utc,
        sha1=hashlib.sha1(der).hexdigest(),  # the OPC UA thumbprint
        sha256=hashlib.sha256(der).hexdigest(),
        path=path,
    )


class Pki:
    """One certificate store folder."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.own_certificate = self.root / "own" / "cert.der"
        self.own_key = self.root / "own" / "private" / "key.pem"
        self.trusted = self.root / "trusted"
        self.rejected = self.root / "rejected"

    def ensure_own(self, application_uri: str) -> CertificateInfo:
        """Our certificate, made (with a new key) when missing; reused otherwise.

        Raises ValueError when the existing certificate names another application URI: servers
        check it against the URI we announce, so it must match.
        """
        if self.own_certificate.is_file() and self.own_key.is_file():
            der = self.own_certificate.read_bytes()
            info = describe_certificate(der, self.own_certificate)
            if info.application_uri != application_uri:
                raise ValueError(
                    f"our certificate {self.own_certificate} is for application URI "
                    f"{info.application_uri!r}, the config says {application_uri!r}: set "
                    "security.application_uri to match, or delete own/ to make a new certificate "
                    "(servers must then trust the new one)"
                )
            return info
        self.own_key.parent.mkdir(parents=True, exist_ok=True)
        self.trusted.mkdir(parents=True, exist_ok=True)
        self.rejected.mkdir(parents=True, exist_ok=True)
        key = rsa.generate_private_key(public_exponent=65537, key_size=_KEY_BITS)
        hostname = socket.gethostname()
        names: list[x509.GeneralName] = [
            x509.UniformResourceIdentifier(application_uri),
            x509.DNSName(hostname),
        ]
        cert = generate_self_signed_app_certificate(
            key,
            f"edge-gateway@{hostname}",
            {"organizationName": "edge-gateway"},
            names,
            extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
            days=_CERTIFICATE_DAYS,
        )
        descriptor = os.open(self.own_key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            file.write(dump_private_key_as_pem(key))
        der = cert.public_bytes(Encoding.DER)
        self.own_certificate.write_bytes(der)
        return describe_certificate(der, self.own_certificate)

    def is_trusted(self, der: bytes) -> bool:
        thumbprint = hashlib.sha1(der).hexdigest()
        return any(info.sha1 == thumbprint for info in self._folder(self.trusted))

    def trust(self, der: bytes) -> Path:
        """Put a server certificate into ``trusted/`` (and take it out of ``rejected/``)."""
        path = self._store(self.trusted, der)
        thumbprint = hashlib.sha1(der).hexdigest()
        for info in self._folder(self.rejected):
            if info.sha1 == thumbprint and info.path is not None:
                info.path.unlink(missing_ok=True)
        return path

    def reject(self, der: bytes) -> Path:
        """Keep an untrusted server certificate in ``rejected/`` for ``edge-gateway trust``."""
        return self._store(self.rejected, der)

    def trusted_certificates(self) -> list[CertificateInfo]:
        return self._folder(self.trusted)

    def rejected_certificates(self) -> list[CertificateInfo]:
        return self._folder(self.rejected)

    def _store(self, folder: Path, der: bytes) -> Path:
        folder.mkdir(parents=True, exist_ok=True)
        info = describe_certificate(der)
        name = _safe_name(info.subject)
        path = folder / f"{name} [{info.sha1}].der"
        if not path.exists():
            path.write_bytes(der)
        return path

    @staticmethod
    def _folder(folder: Path) -> list[CertificateInfo]:
        if not folder.is_dir():
            return []
        found = []
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in (".der", ".crt", ".cer", ".pem"):
                continue
            data = path.read_bytes()
            try:
                if data.startswith(b"-----BEGIN"):
                    data = x509.load_pem_x509_certificate(data).public_bytes(Encoding.DER)
                found.append(describe_certificate(data, path))
            except ValueError:
                continue  # not a certificate: ignored
        return found


def _safe_name(subject: str) -> str:
    common = re.search(r"CN=([^,]+)", subject)
    text = common.group(1) if common else subject
    return re.sub(r"[^A-Za-z0-9_.@-]+", "_", text)[:60] or "server"


def common_name(der: bytes) -> str:
    """The certificate's CN, or its whole subject."""
    cert = x509.load_der_x509_certificate(der)
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else cert.subject.rfc4514_string()
