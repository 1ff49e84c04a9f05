"""``spc``, ``replay`` and ``genealogy``: offline analysis for quality and process engineers.

``edge-gateway spc FILE.csv --column NAME --usl X --lsl Y [--subgroup K] [--json]``
    control chart, capability and the eight Nelson rules of one CSV column (semantics in
    ``docs/mes.md``, comparable with other SPC tools).
``edge-gateway replay --config FILE --input tags.csv``
    a recorded tag history through the config's processors; the documents as JSON lines.
``edge-gateway genealogy --config FILE LOT [--where-used] [--depth N]``
    a lot's genealogy from the gateway's database.

Exit codes: 0 success, 1 failure at run time, 2 bad input (a message names the line or field).
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import csv
import json
import math
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    spc = commands.add_parser(
        "spc", help="control chart, capability (Cp/Cpk/Pp/Ppk) and Nelson rules of a CSV column"
    )
    spc.add_argument("file", help="CSV file with a header row, one measurement per row")
    spc.add_argument("--column", required=True, help="name of the measurement column")
    spc.add_argument("--usl", type=float, required=True, help="upper specification limit")
    spc.add_argument("--lsl", type=float, required=True, help="lower specification limit")
    spc.add_argument(
        "--subgroup",
        type=int,
        default=1,
        help="1: individuals/moving range chart (default); 2..10: X-bar/R chart",
    )
    spc.add_argument("--json", action="store_true", help="print one JSON object")
    spc.set_defaults(func=_spc)

    replay = commands.add_parser(
        "replay", help="feed a recorded tag history through the config's processors"
    )
    replay.add_argument("--config", "-c", required=True, help="YAML config file")
    replay.add_argument(
        "--input", "-i", required=True, help="CSV: timestamp, tag, value[, quality]"
    )
    replay.set_defaults(func=_replay)

    genealogy = commands.add_parser(
        "genealogy", help="what went into a lot, or where a component lot was used"
    )
    genealogy.add_argument("--config", "-c", required=True, help="YAML config file")
    genealogy.add_argument("lot", help="lot number")
    genealogy.add_argument(
        "--where-used", action="store_true", help="forward: the lots that consumed it"
    )
    genealogy.add_argument("--depth", type=int, default=10, help="levels to follow (default 10)")
    genealogy.set_defaults(func=_genealogy)


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 2


# --- spc ----------------------------------------------------------------------------------


def _read_column(handle: TextIO, column: str, source: str) -> list[float]:
    reader = csv.reader(handle)
    header = next(reader, None)
    if header is None:
        raise ValueError(f"{source} is empty; expected a header row naming the columns")
    names = [h.strip() for h in header]
    if column not in names:
        raise ValueError(
            f"{source} has no column {column!r}; columns: {', '.join(repr(n) for n in names)}"
        )
    index = names.index(column)
    values: list[float] = []
    for row in reader:
        line = reader.line_num
        if not row:
            continue  # a blank line between records
        if index >= len(row):
            raise ValueError(f"{source} line {line}: the row has no {column!r} cell")
        cell = row[index].strip()
        if not cell:
            raise ValueError(f"{source} line {line}: empty cell in column {column!r}")
        try:
            value = float(cell)
        except ValueError:
            raise ValueError(
                f"{source} line {line}: {cell!r} in column {column!r} is not a number"
            ) from None
        if not math.isfinite(value):
            raise ValueError(
                f"{source} line {line}: {cell!r} in column {column!r} is not a finite number"
            )
        values.append(value)
    return values


def _spc(args: argparse.Namespace) -> int:
    from gateway.processors.spc import analyze

    try:
        with open(args.file, encoding="utf-8-sig", newline="") as handle:
            values = _read_column(handle, args.column, args.file)
    except OSError as exc:
        return _fail(f"cannot read {args.file}: {exc.strerror}")
    except UnicodeDecodeError:
        return _fail(f"{args.file} is not UTF-8 text")
    except (ValueError, csv.Error) as exc:
        return _fail(str(exc))
    if not (math.isfinite(args.usl) and math.isfinite(args.lsl)):
        return _fail("--usl and --lsl must be finite numbers")
    try:
        result = analyze(values, lsl=args.lsl, usl=args.usl, subgroup=args.subgroup)
    except ValueError as exc:
        return _fail(str(exc))
    if args.json:
        print(json.dumps(result.as_dict()))
        return 0
    print(_report(args, result))
    return 0


def _fmt(value: float, digits: int = 6) -> str:
    return f"{value:.{digits}g}" if math.isfinite(value) else "n/a"


def _report(args: argparse.Namespace, result: Any) -> str:
    from gateway.processors.nelson import RULES

    k = result.subgroup
    chart = "individuals / moving range" if k == 1 else f"X-bar / R, subgroups of {k}"
    points = len(result.points)
    lines = [
        f"{args.file}, column {args.column!r}: {result.n} values; {chart} chart, {points} points",
        "",
        f"  mean           {_fmt(result.mean, 8)}",
        f"  sigma within   {_fmt(result.sigma_within)}   "
        f"({'mean moving range / 1.128' if k == 1 else f'mean range / d2({k})'})",
        f"  sigma overall  {_fmt(result.sigma_overall)}   (sample standard deviation)",
        f"  spec           LSL {args.lsl:g}   USL {args.usl:g}",
        f"  capability     Cp {_fmt(result.cp, 4)}   Cpk {_fmt(result.cpk, 4)}   "
        f"Pp {_fmt(result.pp, 4)}   Ppk {_fmt(result.ppk, 4)}",
        f"  chart          CL {_fmt(result.cl, 8)}   UCL {_fmt(result.ucl, 8)}   "
        f"LCL {_fmt(result.lcl, 8)}",
        "",
        "  Nelson rules (0-based indices of the last point of each violating window):",
    ]
    for rule in range(1, 9):
        found = result.violations[str(rule)]
        shown = ", ".join(str(i) for i in found[:20]) + (" ..." if len(found) > 20 else "")
        lines.append(f"    {rule}  {RULES[rule]:<78} {len(found):>5}  {shown}")
    total = sum(len(v) for v in result.violations.values())
    lines.append("")
    lines.append("  in control: no rule violated" if not total else f"  {total} violations")
    return "\n".join(lines)


# --- replay -------------------------------------------------------------------------------


def _numbered_rows(handle: TextIO) -> Iterator[tuple[int, list[str]]]:
    reader = csv.reader(handle)
    for row in reader:
        yield reader.line_num, row


def _replay(args: argparse.Namespace) -> int:
    import orjson

    from gateway.config.load import load_config
    from gateway.errors import ConfigError
    from gateway.processors.replay import HistoryError, batches_from_rows, build_processors
    from gateway.tags import TagTable

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not config.processors:
        return _fail(f"{args.config} configures no processors: nothing to replay")
    table = TagTable((d.name, d.tags) for d in config.devices)
    processors = build_processors(config, table)
    kinds: Counter[str] = Counter()
    batches = samples = 0
    out = sys.stdout.buffer
    try:
        with open(args.input, encoding="utf-8-sig", newline="") as handle:
            for batch, line in batches_from_rows(_numbered_rows(handle), table):
                batches += 1
                samples += len(batch)
                for processor in processors:
                    try:
                        documents = processor.ingest(batch)
                    except Exception as exc:  # a processor bug: say where, no traceback
                        print(
                            f"error: processor {processor.name} failed on the batch of "
                            f"{batch.source} at {args.input} line {line}: "
                            f"{type(exc).__name__}: {exc}",
                            file=sys.stderr,
                        )
                        return 1
                    processor.commit()
                    for document in documents:
                        kinds[document.kind] += 1
                        out.write(
                            orjson.dumps(
                                {
                                    "kind": document.kind,
                                    "key": document.key,
                                    "cell": document.cell,
                                    "ordering_key": document.ordering_key,
                                    "body": document.body,
                                },
                                option=orjson.OPT_APPEND_NEWLINE,
                                default=str,
                            )
                        )
    except OSError as exc:
        return _fail(f"cannot read {args.input}: {exc.strerror}")
    except UnicodeDecodeError:
        return _fail(f"{args.input} is not UTF-8 text")
    except HistoryError as exc:
        out.flush()
        return _fail(f"{args.input} {exc}")
    except csv.Error as exc:
        return _fail(f"{args.input}: {exc}")
    out.flush()
    summary = ", ".join(f"{count} {kind}" for kind, count in sorted(kinds.items())) or "none"
    print(
        f"replay: {samples} samples in {batches} batches through {len(processors)} processors; "
        f"documents: {summary}",
        file=sys.stderr,
    )
    return 0


# --- genealogy ----------------------------------------------------------------------------


def _genealogy(args: argparse.Namespace) -> int:
    import sqlite3

    from gateway.config.load import load_config
    from gateway.errors import ConfigError
    from gateway.processors.genealogy_store import backward, forward

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    path = Path(config.gateway.data_dir) / "genealogy.db"
    if not path.exists():
        return _fail(f"no genealogy database at {path} (is a genealogy processor configured?)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        try:
            found = (forward if args.where_used else backward)(db, args.lot, args.depth)
        finally:
            db.close()
    except sqlite3.Error as exc:
        print(f"error: {path}: {exc}", file=sys.stderr)
        return 1
    if found is None:
        print(f"lot {args.lot!r} is not in {path}", file=sys.stderr)
        return 1
    print(json.dumps(found, indent=2))
    return 0
