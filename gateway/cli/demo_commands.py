"""``demo`` and ``bench``."""

from __future__ import annotations

__all__ = ["register"]

import argparse

from gateway.cli.common import setup_logging


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = commands.add_parser(
        "demo", help="the whole flow on the bundled simulators, checked end to end"
    )
    demo.add_argument("--forever", action="store_true", help="keep everything running")
    demo.add_argument("--speed", type=float, default=60.0, help="scenario clock speed-up")
    demo.add_argument("--seed", type=int, default=1)
    demo.add_argument("--data-dir", help="keep the gateway's data here (default: a temp dir)")
    demo.add_argument("--quiet", action="store_true", help="no live progress view")
    demo.add_argument("--log-level", default="error", choices=["debug", "info", "warning", "error"])
    demo.set_defaults(func=_demo)

    bench = commands.add_parser("bench", help="run a benchmark: edge-gateway bench NAME")
    bench.add_argument("name", help="benchmark name (edge-gateway bench list)")
    bench.add_argument("--json", action="store_true", help="end with one JSON object")
    bench.add_argument("options", nargs="*", help="KEY=VALUE options of the benchmark")
    bench.set_defaults(func=_bench)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo.run import run_demo

    setup_logging(args.log_level)
    return run_demo(
        forever=args.forever,
        speed=args.speed,
        seed=args.seed,
        keep_dir=args.data_dir,
        quiet=args.quiet,
    )


def _bench(args: argparse.Namespace) -> int:
    from gateway.bench import run_benchmark

    setup_logging("warning")
    return run_benchmark(args.name, json_output=args.json, options=args.options)
