"""``browse`` and ``trust``: look at an OPC UA server's address space, and manage which server
certificates the gateway trusts.

Both take the connection from the command line (``opc.tcp://host:port`` plus security options)
or from a device of a config file (``--config plant.yaml --device M3``), so they connect exactly
as the gateway will.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import asyncio
import getpass
import os
import sys
from pathlib import Path
from typing import Any

from gateway.cli.common import setup_logging


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    browse = commands.add_parser(
        "browse",
        help="print an OPC UA server's address space (or, with --yaml, a tag list)",
        description="Walk the address space from the Objects folder (or --from NODE) and print "
        "objects and variables with data types, access levels and NodeIds (namespaces by URI).",
    )
    browse.add_argument("endpoint", nargs="?", help="opc.tcp://host:port[/path]")
    browse.add_argument("--depth", type=int, default=3, help="levels below the start (default 3)")
    browse.add_argument(
        "--from", dest="start", default="i=85", help="start NodeId (default: Objects)"
    )
    browse.add_argument("--yaml", action="store_true", help="print a config `tags:` list")
    browse.add_argument("--all", action="store_true", help="include the Server object")
    _connection_options(browse)
    browse.set_defaults(func=_browse)

    trust = commands.add_parser(
        "trust",
        help="show an OPC UA server's certificate and trust it (or --list the trusted ones)",
        description="Fetch the server's certificate, show its subject, application URI, validity "
        "and fingerprints, and after confirmation put it into the PKI folder's trusted/. Also "
        "makes our own certificate if it does not exist yet and prints it for the server side.",
    )
    trust.add_argument("endpoint", nargs="?", help="opc.tcp://host:port[/path]")
    trust.add_argument("--list", action="store_true", help="list trusted and rejected certificates")
    trust.add_argument("--yes", action="store_true", help="trust without asking")
    trust.add_argument(
        "--fingerprint",
        help="trust only a certificate with this SHA-1 or SHA-256 fingerprint (no prompt)",
    )
    _connection_options(trust)
    trust.set_defaults(func=_trust)


def _connection_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("connection (the same options as a device's config)")
    group.add_argument("--config", "-c", help="take the connection from this config file ...")
    group.add_argument("--device", help="... and this OPC UA device of it")
    group.add_argument(
        "--policy",
        choices=["None", "Basic256Sha256", "Aes128_Sha256_RsaOaep", "Aes256_Sha256_RsaPss"],
        help="security policy (default None)",
    )
    group.add_argument("--mode", choices=["Sign", "SignAndEncrypt"], help="default SignAndEncrypt")
    group.add_argument("--pki", help="certificate store folder (default ./data/pki)")
    group.add_argument(
        "--application-uri", help="our application URI (default urn:<host>:edge-gateway)"
    )
    group.add_argument(
        "--username", help="user name (password: --password, $OPCUA_PASSWORD or asked)"
    )
    group.add_argument("--password", help="password (prefer $OPCUA_PASSWORD)")
    group.add_argument("--user-certificate", help="X.509 user certificate file")
    group.add_argument("--user-key", help="private key of the user certificate")
    group.add_argument("--timeout", type=float, default=5.0, help="seconds per request (default 5)")
    group.add_argument(
        "--log-level", default="error", choices=["debug", "info", "warning", "error"]
    )


class _UsageError(Exception):
    pass


def _settings(args: argparse.Namespace) -> Any:
    """ConnectionSettings from --config/--device or from the command-line options."""
    from drivers.opcua.config import OpcUaDevice, OpcUaIdentity, OpcUaSecurity
    from drivers.opcua.session import ConnectionSettings

    if args.config:
        from gateway.config.load import load_config

        config = load_config(args.config)
        devices = [d for d in config.devices if isinstance(d, OpcUaDevice)]
        chosen = [d for d in devices if args.device in (None, d.name)]
        if len(chosen) != 1:
            names = ", ".join(d.name for d in devices) or "none"
            raise _UsageError(f"choose one OPC UA device with --device (the config has: {names})")
        device = chosen[0]
        if args.endpoint and args.endpoint != device.endpoint:
            device = device.model_copy(update={"endpoint": args.endpoint})
        base = Path(args.config).parent
        data_dir = Path(config.gateway.data_dir)
        return ConnectionSettings.for_device(
            device, data_dir if data_dir.is_absolute() else base / data_dir
        )
    if not args.endpoint or not args.endpoint.startswith("opc.tcp://"):
        raise _UsageError("give the server's endpoint (opc.tcp://host:port) or --config/--device")
    password = args.password or os.environ.get("OPCUA_PASSWORD")
    if args.username and password is None and sys.stdin.isatty():
        password = getpass.getpass(f"password of {args.username}: ")
    try:
        security = OpcUaSecurity.model_validate(
            {
                "policy": args.policy or "None",
                "mode": args.mode,
                "application_uri": args.application_uri,
            }
        )
        identity = OpcUaIdentity.model_validate(
            {
                "username": args.username,
                "password": password if args.username else None,
                "certificate": args.user_certificate,
                "private_key": args.user_key,
            }
        )
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    return ConnectionSettings(
        args.endpoint,
        security,
        identity,
        Path(args.pki or "data/pki"),
        timeout=args.timeout,
    )


def _browse(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError, GatewayError

    setup_logging(args.log_level)
    try:
        settings = _settings(args)
        return asyncio.run(_browse_async(args, settings))
    except (_UsageError, ConfigError) as exc:
        print(f"edge-gateway browse: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"edge-gateway browse: {exc}", file=sys.stderr)
        return 1


async def _browse_async(args: argparse.Namespace, settings: Any) -> int:
    from drivers.opcua.addressing import parse_node_id, resolve_node_id
    from drivers.opcua.browse import browse, format_tree, format_yaml
    from drivers.opcua.session import open_session

    try:
        start_address = parse_node_id(args.start)
    except ValueError as exc:
        raise _UsageError(f"--from {args.start}: {exc}") from None
    session = await open_session(settings)
    try:
        start = resolve_node_id(start_address, session.namespaces, {})
        root = await browse(session, start, max(0, args.depth), include_server=args.all)
    except Exception as exc:  # a CLI: any failure becomes one line, not a traceback
        from asyncua.ua.uaerrors import UaStatusCodeError

        reason = exc.args[0] if isinstance(exc, UaStatusCodeError) else exc
        print(f"edge-gateway browse: browsing failed: {reason!r}", file=sys.stderr)
        return 1
    finally:
        await session.close()
    lines = (
        [
            f"# from {settings.endpoint}, {args.start}, depth {args.depth}",
            *format_yaml(root, session.namespaces),
        ]
        if args.yaml
        else format_tree(root, session.namespaces)
    )
    print("\n".join(lines))
    return 0


def _trust(args: argparse.Namespace) -> int:
    from gateway.errors import ConfigError, GatewayError

    setup_logging(args.log_level)
    try:
        settings = _settings(args) if (args.endpoint or args.config) else None
        if args.list:
            return _list(settings.pki_dir if settings else Path(args.pki or "data/pki"))
        if settings is None:
            raise _UsageError(
                "give the server's endpoint (opc.tcp://host:port) or --config/--device"
            )
        return asyncio.run(_trust_async(args, settings))
    except (_UsageError, ConfigError) as exc:
        print(f"edge-gateway trust: {exc}", file=sys.stderr)
        return 2
    except GatewayError as exc:
        print(f"edge-gateway trust: {exc}", file=sys.stderr)
        return 1


def _list(pki_dir: Path) -> int:
    from drivers.opcua.pki import Pki

    pki = Pki(pki_dir)
    for title, certificates in (
        ("trusted", pki.trusted_certificates()),
        ("rejected (seen, not trusted)", pki.rejected_certificates()),
    ):
        print(f"{title} in {pki_dir}: {len(certificates)}")
        for info in certificates:
            print(f"  {info.path.name if info.path else ''}")
            print("\n".join(f"    {line}" for line in info.lines()))
    return 0


async def _trust_async(args: argparse.Namespace, settings: Any) -> int:
    from drivers.opcua.pki import Pki, describe_certificate
    from drivers.opcua.session import fetch_server_certificates

    pki = Pki(settings.pki_dir)
    existed = pki.own_certificate.is_file()
    try:
        own = await asyncio.to_thread(pki.ensure_own, settings.application_uri)
    except ValueError as exc:
        raise _UsageError(str(exc)) from None
    print(f"our certificate ({'existing' if existed else 'generated now'}): {own.path}")
    print("\n".join(f"  {line}" for line in own.lines()))
    print("  the server must trust it too (copy it into the server's trusted certificates)\n")
    offered = await fetch_server_certificates(settings.endpoint, settings.timeout)
    if args.policy and args.policy != "None":
        offered = [
            (e, der) for e, der in offered if e.SecurityPolicyUri.endswith("#" + args.policy)
        ]
    certificates = list({der: None for _, der in offered})
    if not certificates:
        print(f"{settings.endpoint} offers no secured endpoint (security None only)")
        return 1
    wanted = (args.fingerprint or "").replace(":", "").lower()
    trusted_any = False
    for der in certificates:
        info = describe_certificate(der)
        print(f"server certificate of {settings.endpoint}:")
        print("\n".join(f"  {line}" for line in info.lines()))
        if await asyncio.to_thread(pki.is_trusted, der):
            print("  already trusted")
            trusted_any = True
            continue
        if wanted:
            accept = wanted in (info.sha1, info.sha256)
            if not accept:
                print("  not trusted: the fingerprint does not match --fingerprint")
        elif args.yes:
            accept = True
        elif sys.stdin.isatty():
            answer = await asyncio.to_thread(input, "  trust this certificate? [y/N] ")
            accept = answer.strip().lower() in ("y", "yes")
        else:
            print("  not trusted: confirm with --yes or --fingerprint when not at a terminal")
            accept = False
        if accept:
            path = await asyncio.to_thread(pki.trust, der)
            print(f"  trusted: saved as {path}")
            trusted_any = True
    return 0 if trusted_any else 1
