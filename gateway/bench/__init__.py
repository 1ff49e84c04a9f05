"""``edge-gateway bench NAME [--json] [KEY=VALUE ...]``: the benchmark harness.

Each benchmark is a module in this package with a ``run(options) -> Result`` function; it prints
readable figures as it goes and returns the figures for the JSON line. Ratios are always against
a baseline measured in the same run, on the same machine.
"""

from __future__ import annotations

__all__ = ["BENCHMARKS", "Result", "run_benchmark"]

import importlib
import json
import sys
from collections.abc import Mapping
from typing import Any

Result = dict[str, Any]

BENCHMARKS: Mapping[str, str] = {
    "pipeline": "decode, change detection and routing on columnar batches vs a per-sample loop",
    "aggregation": "SPC (8 Nelson rules) and work reports on 1M + 1M samples vs Python, pandas",
    "mqtt": "MQTT output into Mosquitto: QoS 0 / QoS 1 messages/s and store-and-forward replay",
    "opcua": "10,000 subscribed OPC UA variables (node-opcua server): CPU, memory, latency",
    "modbus": "10 simulated Modbus devices × 1,000 mixed tags every 100 ms vs pymodbus' client",
    "outbox": "durable enqueues and deliveries to the ERP simulator vs one commit per document",
    "e2e": "10 Modbus devices × 1,000 registers → edge-gateway run → batched MQTT → subscriber",
}


def _parse_options(options: list[str]) -> dict[str, str]:
    parsed = {}
    for option in options:
        key, sep, value = option.partition("=")
        if not sep:
            raise ValueError(f"benchmark option {option!r} is not KEY=VALUE")
        parsed[key] = value
    return parsed


def run_benchmark(name: str, *, json_output: bool, options: list[str]) -> int:
    """Run one benchmark; exit code 2 for an unknown name or bad options."""
    if name == "list":
        for bench, description in BENCHMARKS.items():
            print(f"{bench:12} {description}")
        return 0
    if name not in BENCHMARKS:
        print(f"unknown benchmark {name!r}; available: {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    try:
        parsed = _parse_options(options)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    module = importlib.import_module(f"gateway.bench.{name}")
    result: Result = module.run(parsed)
    if json_output:
        print(json.dumps({"bench": name, **result}))
    return 0
