"""``edge-gateway``: one command, with subcommands.

Each subcommand lives in a module with a ``register(subparsers)`` function listed in
:data:`COMMAND_MODULES`; handlers import what they need when they run, so ``--help`` and
``check`` stay fast. Exit codes: 0 success, 1 failure at run time, 2 bad input (config,
arguments, data file).
"""

from __future__ import annotations

__all__ = ["COMMAND_MODULES", "build_parser", "main"]

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

Handler = Callable[[argparse.Namespace], int]

COMMAND_MODULES = (
    "gateway.cli.config_commands",  # run, check, schema
    "gateway.cli.demo_commands",  # demo, bench
    "gateway.cli.mes_commands",  # spc, replay, genealogy
    "gateway.cli.device_commands",  # read
    "gateway.cli.opcua_commands",  # browse, trust
    "gateway.cli.outbox_commands",  # outbox list|show|retry|drop
    "simulators.cli",  # simulate
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edge-gateway",
        description="Industrial edge gateway: PLC tags to MES work reports, ERP/WMS/QMS, MQTT.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        # commands taking KEY=VALUE options (bench) accept them before or after their flags
        if hasattr(args, "options") and all("=" in e and not e.startswith("-") for e in extra):
            args.options = [*args.options, *extra]
        else:
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
    handler: Handler = args.func
    try:
        return int(handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
