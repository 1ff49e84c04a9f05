"""``run``, ``check`` and ``schema``: the commands that read a config file."""

from __future__ import annotations

__all__ = ["register"]

import argparse
import asyncio
import json
import sys

from gateway.cli.common import setup_logging
from gateway.errors import ConfigError


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run the gateway with a config file")
    run.add_argument("--config", "-c", required=True, help="YAML config file")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_run)

    check = commands.add_parser("check", help="validate a config file; exit 2 listing errors")
    check.add_argument("--config", "-c", required=True, help="YAML config file")
    check.set_defaults(func=_check)

    schema = commands.add_parser("schema", help="print the config's JSON Schema (for editors)")
    schema.set_defaults(func=_schema)


def _check(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    tags = sum(len(d.tags) for d in config.devices)
    print(
        f"{args.config}: valid: gateway {config.gateway.id}, {len(config.devices)} devices, "
        f"{tags} tags, {len(config.processors)} processors, {len(config.outputs)} outputs, "
        f"{len(config.destinations)} destinations"
    )
    return 0


def _schema(_args: argparse.Namespace) -> int:
    from gateway.config.model import GatewayConfig

    schema = GatewayConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "edge-gateway configuration"
    print(json.dumps(schema, indent=2))
    return 0


def _run(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config
    from gateway.runtime.app import Gateway

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    setup_logging(args.log_level or config.gateway.log_level)
    asyncio.run(_serve(Gateway(config)))
    return 0


async def _serve(gateway: object) -> None:
    from gateway.api.server import ApiServer
    from gateway.runtime.app import Gateway

    assert isinstance(gateway, Gateway)
    api = ApiServer(gateway) if gateway.config.gateway.api is not None else None
    if api is not None:
        await api.start()
    try:
        await gateway.run_until_signal()
    finally:
        if api is not None:
            await api.stop()
