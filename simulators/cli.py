"""The ``simulate`` command: ``plant``, ``erp``, ``wms``, ``qms`` and ``all``.

The gateway's CLI calls :func:`register` with its subparsers and then ``sys.exit(args.func(args))``;
``python -m simulators`` does the same on its own. Each simulator runs until SIGINT or SIGTERM,
prints where it listens (JSON) on start-up and, with ``--ports-file``, writes that JSON to a file
atomically (removed again on a clean shutdown).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import os
import signal
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .faults import Faults, FaultSettings

if TYPE_CHECKING:
    from .business import BusinessSimulator

# The simulators themselves (asyncua's server, aiohttp) are imported when a `simulate` command
# runs, not when the `edge-gateway` parser is built: every other command stays light.

__all__ = ["register", "write_ports_file"]

_log = logging.getLogger(__name__)


class _Runnable(Protocol):
    async def start(self) -> None: ...
    async def stop(self) -> None: ...
    def ports(self) -> dict[str, Any]: ...


# ---------------------------------------------------------------------------- argument types
def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0 to 65535, 0 = free port)")
    return value


def _float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def _non_negative(text: str) -> float:
    value = _float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} must be >= 0")
    return value


def _probability(text: str) -> float:
    value = _float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{value} must be a probability between 0 and 1")
    return value


def _speed(text: str) -> float:
    value = _float(text)
    if not 0.0 < value <= 100_000.0:
        raise argparse.ArgumentTypeError(f"{value} must be > 0 (and at most 100000)")
    return value


# ---------------------------------------------------------------------------- parsers
def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--ports-file",
        type=Path,
        help="write the chosen ports as JSON to this file (atomically; removed at shutdown)",
    )
    faults = parser.add_argument_group("fault injection")
    faults.add_argument(
        "--latency-ms",
        type=_non_negative,
        default=0.0,
        metavar="N",
        help="delay every response by N ms",
    )
    faults.add_argument(
        "--error-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="answer with an error with probability P (503 / exception 4 / Bad)",
    )
    faults.add_argument(
        "--drop-rate",
        type=_probability,
        default=0.0,
        metavar="P",
        help="close the connection without an answer with probability P",
    )
    faults.add_argument(
        "--down-for",
        type=_non_negative,
        default=0.0,
        metavar="S",
        help="refuse connections for the first S seconds",
    )


def _add_plant_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--speed",
        type=_speed,
        default=60.0,
        help="scenario clock speed relative to real time (default 60)",
    )
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument(
        "--paused",
        action="store_true",
        help="keep the scenario clock stopped until POST /_control/start on the plant control",
    )
    parser.add_argument(
        "--scenario",
        choices=("demo", "endless"),
        default="demo",
        help="demo (finishes in about 40 s at speed 60) or endless",
    )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``simulate`` command (with ``plant``, ``erp``, ``wms``, ``qms``, ``all``)."""
    simulate = subparsers.add_parser(
        "simulate",
        help="run the bundled simulators (PLC, ERP, WMS, QMS)",
        description="Run the bundled simulators until SIGINT/SIGTERM. Port 0 picks a free port.",
    )
    which = simulate.add_subparsers(dest="simulator", required=True, metavar="SIMULATOR")

    plant = which.add_parser("plant", help="the plant as a Modbus TCP PLC and an OPC UA PLC")
    _add_common(plant)
    _add_plant_options(plant)
    plant.add_argument("--modbus-port", type=_port, default=0, help="Modbus TCP port (0 = free)")
    plant.add_argument("--opcua-port", type=_port, default=0, help="OPC UA port (0 = free)")
    plant.add_argument("--control-port", type=_port, default=0, help="HTTP control port (0 = free)")
    plant.set_defaults(func=_run_plant)

    for name, cls in (("erp", "ErpSimulator"), ("wms", "WmsSimulator"), ("qms", "QmsSimulator")):
        parser = which.add_parser(name, help=f"the {name.upper()} simulator (HTTP/JSON)")
        _add_common(parser)
        parser.add_argument("--port", type=_port, default=0, help="HTTP port (0 = free)")
        parser.add_argument(
            "--control-port",
            type=_port,
            default=None,
            help="separate HTTP control port (0 = free); /_control is also on the main port",
        )
        parser.set_defaults(func=_business_runner(cls))

    everything = which.add_parser("all", help="everything at once, on free ports")
    _add_common(everything)
    _add_plant_options(everything)
    everything.set_defaults(func=_run_all)


# ---------------------------------------------------------------------------- runners
def _faults(args: argparse.Namespace) -> FaultSettings:
    return FaultSettings(
        latency_ms=args.latency_ms,
        error_rate=args.error_rate,
        drop_rate=args.drop_rate,
        down_for_s=args.down_for,
    )


class _BusinessRunnable:
    def __init__(self, sim: BusinessSimulator) -> None:
        self.sim = sim

    async def start(self) -> None:
        await self.sim.start()

    async def stop(self) -> None:
        await self.sim.stop()

    def ports(self) -> dict[str, Any]:
        return {self.sim.SYSTEM: {"url": self.sim.url, "control_url": self.sim.control_url}}


def _run_plant(args: argparse.Namespace) -> int:
    from .stack import PlantSimulator

    return _run(
        lambda: PlantSimulator(
            args.scenario,
            args.speed,
            args.seed,
            args.host,
            modbus_port=args.modbus_port,
            opcua_port=args.opcua_port,
            control_port=args.control_port,
            faults=_faults(args),
            paused=args.paused,
        ),
        args.ports_file,
    )


def _business_runner(class_name: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from . import business

        cls: type[BusinessSimulator] = getattr(business, class_name)
        return _run(
            lambda: _BusinessRunnable(
                cls(args.host, args.port, args.control_port, Faults(_faults(args)))
            ),
            args.ports_file,
        )

    return run


def _run_all(args: argparse.Namespace) -> int:
    from .stack import SimulatorStack

    settings = _faults(args)
    return _run(
        lambda: SimulatorStack(
            args.scenario,
            args.speed,
            args.seed,
            args.host,
            latency_ms=settings.latency_ms,
            error_rate=settings.error_rate,
            drop_rate=settings.drop_rate,
            down_for_s=settings.down_for_s,
            paused=args.paused,
        ),
        args.ports_file,
    )


def _run(factory: Callable[[], _Runnable], ports_file: Path | None) -> int:
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    for noisy in ("asyncua", "pymodbus"):
        logging.getLogger(noisy).setLevel(logging.ERROR)
    try:
        return asyncio.run(_serve(factory, ports_file))
    except KeyboardInterrupt:
        return 0


async def _serve(factory: Callable[[], _Runnable], ports_file: Path | None) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if ports_file is not None:
        await asyncio.to_thread(ports_file.unlink, missing_ok=True)
    runnable = factory()
    try:
        await runnable.start()
    except OSError as exc:
        print(f"simulate: cannot start: {exc}", file=sys.stderr)
        return 1
    try:
        ports = runnable.ports()
        print(json.dumps(ports, indent=2), flush=True)
        if ports_file is not None:
            await asyncio.to_thread(write_ports_file, ports_file, ports)
        await stop.wait()
    finally:
        await runnable.stop()
        if ports_file is not None:
            await asyncio.to_thread(ports_file.unlink, missing_ok=True)
    return 0


def write_ports_file(path: Path, ports: dict[str, Any]) -> None:
    """Write ``ports`` as JSON to ``path`` atomically (temporary file, then rename)."""
    directory = path.resolve().parent
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(ports, handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
