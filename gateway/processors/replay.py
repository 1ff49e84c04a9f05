"""Replay a recorded tag history through a config's processors (``edge-gateway replay``).

The history is CSV rows ``timestamp, tag, value[, quality]`` (a header row naming these columns
is optional; with a header, columns are found by name). Rows with the same timestamp form one
batch per device, as a poll would; the processors see the batches in file order and every
document they emit comes out, in order. Nothing is written anywhere: no outbox, no output, no
genealogy database.

* timestamp: ISO 8601 (``2025-05-04T10:15:00.250Z``; without an offset it is UTC) or a number
  of seconds since the epoch (milliseconds, microseconds and nanoseconds are recognised by size).
* tag: the tag id ``device/tag`` (``M1/Measurements[3]`` for an array element).
* value: a number (``true``/``false`` for booleans) or, for string tags, the text; empty for a
  bad sample.
* quality: ``good`` (default), ``uncertain`` or ``bad``, optionally with a reason
  (``bad: timeout``).
"""

from __future__ import annotations

__all__ = ["HistoryError", "batches_from_rows", "build_processors", "parse_timestamp"]

import math
from collections.abc import Iterable, Iterator, Sequence
from datetime import UTC, datetime

import numpy as np

from gateway import quality
from gateway.batch import SampleBatch
from gateway.config.model import GatewayConfig
from gateway.config.processors import GenealogyConfig
from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.runtime.interfaces import Processor
from gateway.tags import TagTable

_COLUMNS = ("timestamp", "tag", "value", "quality")


class HistoryError(GatewayError):
    """A row of the history cannot be read; the message names its line."""


def parse_timestamp(text: str) -> int:
    """ISO 8601 or epoch seconds (ms, µs, ns by magnitude) → ns since the epoch."""
    text = text.strip()
    if text.isdigit():  # exact integer arithmetic for whole s, ms, µs and ns
        whole = int(text)
        for limit, scale in ((10**11, 10**9), (10**14, 10**6), (10**17, 10**3)):
            if whole < limit:
                return whole * scale
        return whole
    try:
        number = float(text)
    except ValueError:
        number = math.nan
    if not math.isnan(number):
        if not math.isfinite(number) or number < 0:
            raise ValueError(f"timestamp {text!r} is not a time")
        for bound, factor in ((1e11, 1e9), (1e14, 1e6), (1e17, 1e3)):
            if number < bound:
                return round(number * factor)
        return round(number)
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"timestamp {text!r} is neither ISO 8601 nor a number of seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _quality(text: str) -> int:
    severity, _, reason = text.strip().partition(":")
    name = severity.strip().lower()
    if name in ("", "good"):
        return quality.GOOD
    if name == "bad":
        return quality.bad(reason.strip() or "recorded")
    if name == "uncertain":
        return quality.uncertain(reason.strip() or "recorded")
    raise ValueError(f"quality {text!r} is not good, uncertain or bad")


def _columns(header: Sequence[str]) -> dict[str, int] | None:
    names = [h.strip().lower() for h in header]
    if "tag" not in names or "value" not in names:
        return None
    found = {name: names.index(name) for name in _COLUMNS if name in names}
    if "timestamp" not in found:
        for alias in ("time", "ts"):
            if alias in names:
                found["timestamp"] = names.index(alias)
    if "timestamp" not in found:
        raise HistoryError("line 1: the header names no timestamp column (timestamp or time)")
    return found


def batches_from_rows(
    rows: Iterable[tuple[int, Sequence[str]]], table: TagTable
) -> Iterator[tuple[SampleBatch, int]]:
    """Batches (one per timestamp and device) from numbered CSV rows; with each, its first line.

    Raises :class:`HistoryError` naming the line of a row that cannot be read.
    """
    columns: dict[str, int] | None = None
    first = True
    pending: list[tuple[int, int, float, object, int]] = []  # tag, stamp, value, object, code
    pending_stamp: int | None = None
    pending_line = 0
    for line, row in rows:
        if not row or all(not cell.strip() for cell in row):
            continue
        if first:
            first = False
            columns = _columns(row)
            if columns is not None:
                continue
        sample = _sample(line, row, columns, table)
        stamp = sample[1]
        if pending_stamp is not None and stamp != pending_stamp:
            yield from _flush(pending, table, pending_line)
            pending = []
        if not pending:
            pending_line = line
        pending_stamp = stamp
        pending.append(sample)
    if pending:
        yield from _flush(pending, table, pending_line)


def _sample(
    line: int, row: Sequence[str], columns: dict[str, int] | None, table: TagTable
) -> tuple[int, int, float, object, int]:
    where = columns or {"timestamp": 0, "tag": 1, "value": 2, "quality": 3}

    def cell(name: str) -> str:
        index = where.get(name)
        if index is None or index >= len(row):
            return ""
        return row[index]

    if not cell("tag").strip():
        raise HistoryError(f"line {line}: no tag; expected timestamp, tag, value[, quality]")
    try:
        stamp = parse_timestamp(cell("timestamp"))
    except ValueError as exc:
        raise HistoryError(f"line {line}: {exc}") from None
    tag_id = cell("tag").strip()
    try:
        index = table.index(tag_id)
    except KeyError:
        raise HistoryError(f"line {line}: unknown tag {tag_id!r} (not in the config)") from None
    try:
        code = _quality(cell("quality"))
    except ValueError as exc:
        raise HistoryError(f"line {line}: {exc}") from None
    text = cell("value")
    info = table[index]
    if not text.strip():
        if code == quality.GOOD and info.type.is_numeric:
            raise HistoryError(f"line {line}: {tag_id} has an empty value with good quality")
        return index, stamp, math.nan, (None if info.type.is_numeric else ""), code
    if not info.type.is_numeric:
        return index, stamp, math.nan, text, code
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return index, stamp, float(lowered == "true"), None, code
    try:
        value = float(text)
    except ValueError:
        raise HistoryError(
            f"line {line}: {tag_id} is {info.type.value}, {text.strip()!r} is not a number"
        ) from None
    if not math.isfinite(value):
        raise HistoryError(f"line {line}: {tag_id}: {text.strip()!r} is not a finite number")
    return index, stamp, value if code >> 14 < 2 else math.nan, None, code


def _flush(
    samples: list[tuple[int, int, float, object, int]], table: TagTable, line: int
) -> Iterator[tuple[SampleBatch, int]]:
    devices: dict[str, list[tuple[int, int, float, object, int]]] = {}
    for sample in samples:
        devices.setdefault(table[sample[0]].device, []).append(sample)
    for device, rows in devices.items():
        tags = np.array([r[0] for r in rows], np.int32)
        objects = None
        if any(r[3] is not None for r in rows):
            objects = np.array([r[3] for r in rows], object)
        stamp = rows[0][1]
        yield (
            SampleBatch(
                device,
                tags,
                np.array([r[2] for r in rows], np.float64),
                np.array([r[4] for r in rows], np.uint16),
                np.full(len(rows), stamp, np.int64),
                objects,
                received_ns=stamp,
                unique_tags=len(set(tags.tolist())) == len(tags),
            ),
            line,
        )


def build_processors(config: GatewayConfig, table: TagTable) -> list[Processor]:
    """The config's processors, built as the gateway builds them but writing nothing.

    The genealogy processor gets no store: its documents come out, nothing goes to the
    database.
    """
    from gateway.processors.genealogy import GenealogyProcessor
    from gateway.runtime.registry import PROCESSORS, BuildContext

    ctx = BuildContext(config, table, Metrics())
    built: list[Processor] = []
    for section in config.processors:
        if isinstance(section, GenealogyConfig):
            built.append(GenealogyProcessor(section, table, config.gateway.id, store=None))
        else:
            built.append(PROCESSORS[section.type](section, ctx))
    return built
