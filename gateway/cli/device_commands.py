"""``read``: poll devices once and print every tag's value and quality, and how it was read.

For commissioning: ``edge-gateway read --config plant.yaml --device M1 --tag 'Good*'``. Works
with every driver: one that can poll once (Modbus) is asked to; any other is run until each of
its tags has reported or ``--timeout`` passes. A driver that describes its request plan (Modbus:
requests per device, registers wasted to gaps, the minimum possible) has it printed. Exit codes:
0 every tag good, 1 a device failed or a tag is not good, 2 bad config or arguments.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import asyncio
import fnmatch
import json
import sys
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from gateway.cli.common import setup_logging
from gateway.errors import ConfigError, GatewayError

if TYPE_CHECKING:
    from gateway.batch import SampleBatch
    from gateway.runtime.interfaces import Driver
    from gateway.tags import TagTable


@runtime_checkable
class _PollsOnce(Protocol):
    async def poll_once(self) -> list[SampleBatch]: ...


@runtime_checkable
class _DescribesPlan(Protocol):
    def describe_plan(self) -> list[str]: ...

    def plan_summary(self) -> dict[str, Any]: ...


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    read = commands.add_parser(
        "read",
        help="poll devices once; print every tag's value, quality and the request plan",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    read.add_argument("--config", "-c", required=True, help="YAML config file")
    read.add_argument("--device", "-d", action="append", help="only this device (repeat for more)")
    read.add_argument(
        "--tag", "-t", action="append", help="only tags with this name or glob (repeatable)"
    )
    read.add_argument(
        "--timeout", type=float, default=10.0, help="seconds to wait for each device (10)"
    )
    read.add_argument("--json", action="store_true", help="print one JSON document instead")
    read.set_defaults(func=_read)


def _read(args: argparse.Namespace) -> int:
    from gateway.config.load import load_config
    from gateway.metrics import Metrics
    from gateway.runtime.registry import DRIVERS, BuildContext
    from gateway.tags import TagTable

    setup_logging("warning")
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    devices = list(config.devices)
    if args.device:
        known = {d.name for d in devices}
        unknown = [name for name in args.device if name not in known]
        if unknown:
            print(
                f"unknown device {', '.join(unknown)}; the config has: {', '.join(sorted(known))}",
                file=sys.stderr,
            )
            return 2
        devices = [d for d in devices if d.name in args.device]
    if args.tag:
        patterns: list[str] = args.tag
        devices = [
            d.model_copy(
                update={
                    "tags": [
                        t for t in d.tags if any(fnmatch.fnmatchcase(t.name, p) for p in patterns)
                    ]
                }
            )
            for d in devices
        ]
        devices = [d for d in devices if d.tags]
        if not devices:
            print(f"no tag matches {', '.join(patterns)}", file=sys.stderr)
            return 2
    selected = config.model_copy(update={"devices": devices})
    table = TagTable((d.name, d.tags) for d in devices)
    try:
        ctx = BuildContext(selected, table, Metrics())
        drivers = [DRIVERS[d.protocol](d, ctx) for d in devices]
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    reports = asyncio.run(_read_all(drivers, table, args.timeout))
    if args.json:
        print(json.dumps({"devices": reports}, indent=2, default=str))
    else:
        for report in reports:
            _print_report(report)
    failed = any(
        r["error"] or any(t["quality"] != "good" for t in r["tags"]) or not r["tags"]
        for r in reports
    )
    return 1 if failed else 0


async def _read_all(drivers: list[Driver], table: TagTable, timeout: float) -> list[dict[str, Any]]:
    return list(await asyncio.gather(*(_read_one(d, table, timeout) for d in drivers)))


async def _read_one(driver: Driver, table: TagTable, timeout: float) -> dict[str, Any]:
    report: dict[str, Any] = {"device": driver.name, "error": None, "plan": None, "tags": []}
    batches: list[SampleBatch] = []
    try:
        async with asyncio.timeout(timeout):
            await driver.connect()
            if isinstance(driver, _PollsOnce):
                batches = await driver.poll_once()
            else:
                batches = await _until_every_tag(driver, table)
    except TimeoutError:
        report["error"] = f"no complete answer within {timeout:g} s"
    except GatewayError as exc:
        report["error"] = str(exc)
    finally:
        await driver.close()
    if isinstance(driver, _DescribesPlan):
        report["plan"] = driver.plan_summary()
        report["plan_text"] = driver.describe_plan()
    report["tags"] = _rows(batches, table)
    return report


async def _until_every_tag(driver: Driver, table: TagTable) -> list[SampleBatch]:
    """Run a driver that has no single poll until each of its tags reported once."""
    wanted = {int(i) for i in table.device_indices(driver.name)}
    batches: list[SampleBatch] = []
    done = asyncio.Event()

    def sink(batch: SampleBatch) -> None:
        batches.append(batch)
        wanted.difference_update(int(i) for i in batch.tags)
        if not wanted:
            done.set()

    task = asyncio.create_task(driver.run(sink))
    waiter = asyncio.create_task(done.wait())
    try:
        finished, _ = await asyncio.wait({task, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if task in finished:
            task.result()  # the driver failed: raise its error
    finally:
        for pending in (task, waiter):
            pending.cancel()
        await asyncio.gather(task, waiter, return_exceptions=True)
    return batches


def _rows(batches: list[SampleBatch], table: TagTable) -> list[dict[str, Any]]:
    from gateway.quality import describe

    latest: dict[int, tuple[object, int]] = {}
    for batch in batches:
        for row in range(len(batch)):
            latest[int(batch.tags[row])] = (batch.value_of(row), int(batch.quality[row]))
    rows = []
    for index in sorted(latest):
        info = table[index]
        value, code = latest[index]
        if isinstance(value, float) and info.type.is_integer and value.is_integer():
            value = int(value)
        rows.append({"tag": info.id, "value": value, "unit": info.unit, "quality": describe(code)})
    return rows


def _print_report(report: dict[str, Any]) -> None:
    for line in report.get("plan_text") or [f"{report['device']}:"]:
        print(line)
    if report["error"]:
        print(f"  FAILED: {report['error']}")
    shown = [_shown(tag["value"]) for tag in report["tags"]]
    tag_width = max((len(t["tag"]) for t in report["tags"]), default=0)
    value_width = max((len(v) for v in shown), default=0)
    unit_width = max((len(t["unit"]) for t in report["tags"]), default=0)
    for tag, value in zip(report["tags"], shown, strict=True):
        print(
            f"  {tag['tag']:<{tag_width}}  {value:>{value_width}} "
            f"{tag['unit']:<{unit_width}}  {tag['quality']}"
        )
    print()


def _shown(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, float):
        return f"{value:.7g}"
    return str(value)
