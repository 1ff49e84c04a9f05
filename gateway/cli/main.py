"""``edge-gateway``: one command, with subcommands.

Exit codes: 0 success, 1 failure at run time, 2 bad input (config, arguments, data file).
"""

from __future__ import annotations

__all__ = ["main"]

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence

from gateway.errors import ConfigError

Handler = Callable[[argparse.Namespace], int]


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("asyncua", "pymodbus", "amqtt", "transitions"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))


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
    _setup_logging(args.log_level or config.gateway.log_level)
    gateway = Gateway(config)
    asyncio.run(_serve(gateway))
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


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo

    _setup_logging(args.log_level)
    return run_demo(
        forever=args.forever,
        speed=args.speed,
        seed=args.seed,
        keep_dir=args.data_dir,
        quiet=args.quiet,
    )


def _bench(args: argparse.Namespace) -> int:
    from gateway.bench import run_benchmark

    _setup_logging("warning")
    return run_benchmark(args.name, json_output=args.json, options=args.options)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Industrial edge gateway: PLC tags to MES work reports, ERP/WMS/QMS, MQTT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the gateway with a config file")
    run.add_argument("--config", "-c", required=True, help="YAML config file")
    run.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    run.set_defaults(func=_run)

    check = commands.add_parser("check", help="validate a config file; exit 2 listing errors")
    check.add_argument("--config", "-c", required=True, help="YAML config file")
    check.set_defaults(func=_check)

    schema = commands.add_parser("schema", help="print the config's JSON Schema (for editors)")
    schema.set_defaults(func=_schema)

    demo = commands.add_parser(
        "demo", help="the whole flow on the bundled simulators, checked end to end"
    )
    demo.add_argument("--forever", action="store_true", help="keep everything running")
    demo.add_argument("--speed", type=float, default=60.0, help="scenario clock speed-up")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--data-dir", help="keep the gateway's data here (default: a temp dir)")
    demo.add_argument("--quiet", action="store_true", help="no live progress view")
    demo.add_argument(
        "--log-level", default="warning", choices=["debug", "info", "warning", "error"]
    )
    demo.set_defaults(func=_demo)

    bench = commands.add_parser("bench", help="run a benchmark: edge-gateway bench NAME")
    bench.add_argument("name", help="benchmark name (edge-gateway bench list)")
    bench.add_argument("--json", action="store_true", help="end with one JSON object")
    bench.add_argument("options", nargs="*", help="KEY=VALUE options of the benchmark")
    bench.set_defaults(func=_bench)

    from simulators.cli import register as register_simulators

    register_simulators(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.func
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
