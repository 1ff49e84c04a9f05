"""``edge-gateway outbox list|show|retry|drop``: the backlog and the dead-letter queue.

The commands work on the outbox database directly (``--config`` finds it in the gateway's
``data_dir``, ``--db`` names it), also while the gateway runs: SQLite in WAL mode lets both
work at once, and the gateway's dispatchers look at the outbox again within seconds.
Typical repair of a refused document: ``outbox list --state dead`` shows the target's reason;
fix the mapping in the config and restart the gateway; ``outbox show ID --config ...`` shows
what would be sent now; ``outbox retry ID`` (or ``--all``) sends it again.
"""

from __future__ import annotations

__all__ = ["register"]

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

_STATES = ("pending", "dead", "delivered")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    outbox = commands.add_parser(
        "outbox", help="see the outbox backlog and dead letters, replay or drop them"
    )
    actions = outbox.add_subparsers(dest="action", required=True, metavar="ACTION")

    def common(parser: argparse.ArgumentParser) -> None:
        where = parser.add_mutually_exclusive_group(required=True)
        where.add_argument("--config", "-c", help="the gateway's config file (finds data_dir)")
        where.add_argument("--db", help="the outbox database file (data_dir/outbox.db)")
        parser.add_argument("--json", action="store_true", help="print JSON")

    listing = actions.add_parser("list", help="counts per destination and the entries")
    common(listing)
    listing.add_argument(
        "--state",
        choices=[*_STATES, "undelivered", "all"],
        default="undelivered",
        help="which entries to list (default: pending and dead)",
    )
    listing.add_argument("--destination", "-d", help="only this destination")
    listing.add_argument("--limit", type=int, default=50, help="entries to list (default 50)")
    listing.set_defaults(func=_list)

    show = actions.add_parser("show", help="one entry: document, attempts, last error")
    common(show)
    show.add_argument("id", type=int, help="delivery id (from outbox list)")
    show.set_defaults(func=_show)

    retry = actions.add_parser("retry", help="send dead (or waiting) entries again, now")
    common(retry)
    retry.add_argument("ids", type=int, nargs="*", help="delivery ids")
    retry.add_argument("--all", action="store_true", help="every dead entry (of --destination)")
    retry.add_argument("--destination", "-d", help="with --all: only this destination")
    retry.set_defaults(func=_retry)

    drop = actions.add_parser("drop", help="remove undelivered entries for good")
    common(drop)
    drop.add_argument("ids", type=int, nargs="+", help="delivery ids")
    drop.add_argument("--yes", action="store_true", help="confirm: the documents are not sent")
    drop.set_defaults(func=_drop)


class _Fail(Exception):
    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def _database(args: argparse.Namespace) -> Path:
    if args.db:
        path = Path(args.db)
    else:
        from gateway.config.load import load_config
        from gateway.errors import ConfigError

        try:
            config = load_config(args.config)
        except ConfigError as exc:
            raise _Fail(str(exc)) from None
        path = Path(config.gateway.data_dir) / "outbox.db"
    if not path.is_file():
        raise _Fail(f"no outbox database at {path} (has the gateway run with this config?)")
    return path


def _run(args: argparse.Namespace, work: Any) -> int:
    from gateway.errors import OutboxError
    from gateway.outbox.store import OutboxStore

    try:
        store = OutboxStore(_database(args))
        try:
            return int(work(store))
        finally:
            store.close()
    except _Fail as exc:
        print(exc, file=sys.stderr)
        return exc.code
    except OutboxError as exc:
        print(exc, file=sys.stderr)
        return 1


def _age(ns: int | None) -> str:
    if not ns:
        return "-"
    seconds = max(0.0, time.time() - ns / 1e9)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def _row_json(row: Any) -> dict[str, Any]:
    document = row.document
    return {
        "id": row.id,
        "destination": row.destination,
        "state": row.state,
        "attempts": row.attempts,
        "kind": document.kind,
        "key": document.key,
        "order": document.ordering_key,
        "machine": document.cell,
        "created": document.created_ns,
        "next_attempt_ns": row.next_attempt_ns,
        "last_attempt_ns": row.last_attempt_ns,
        "finished_ns": row.finished_ns,
        "reference": row.reference,
        "last_error": row.last_error,
    }


def _list(args: argparse.Namespace) -> int:
    import numpy as np

    def work(store: Any) -> int:
        counts = store.counts()
        hour = time.time_ns() - 3600 * 10**9
        latencies = store.latencies(hour)
        summary = {}
        for name in sorted(set(counts) | set(latencies)):
            values = np.asarray(latencies.get(name, []), np.float64) / 1e9
            summary[name] = {
                **{state: counts.get(name, {}).get(state, 0) for state in _STATES},
                "latency_p50_s": float(np.quantile(values, 0.5)) if len(values) else None,
                "latency_p99_s": float(np.quantile(values, 0.99)) if len(values) else None,
            }
        states: list[str | None] = [args.state]
        if args.state == "undelivered":
            states = ["dead", "pending"]
        elif args.state == "all":
            states = [None]
        rows = []
        for state in states:
            rows += store.listing(state=state, destination=args.destination, limit=args.limit)
        rows = rows[: args.limit]
        if args.json:
            print(json.dumps({"destinations": summary, "entries": [_row_json(r) for r in rows]}))
            return 0
        print(f"{'destination':16} {'pending':>8} {'dead':>6} {'delivered':>10} "
              f"{'p50 (1h)':>9} {'p99 (1h)':>9}")  # fmt: skip
        for name, figures in summary.items():
            p50, p99 = figures["latency_p50_s"], figures["latency_p99_s"]
            print(
                f"{name:16} {figures['pending']:>8} {figures['dead']:>6} "
                f"{figures['delivered']:>10} {_seconds(p50):>9} {_seconds(p99):>9}"
            )
        if not summary:
            print("(the outbox is empty)")
        if rows:
            print()
            print(f"{'id':>8}  {'destination':14} {'state':8} {'tries':>5} {'age':>6}  "
                  f"{'kind':12} {'order':14} problem / reference")  # fmt: skip
            for row in rows:
                text = row.last_error if row.state != "delivered" else row.reference
                print(
                    f"{row.id:>8}  {row.destination:14} {row.state:8} {row.attempts:>5} "
                    f"{_age(row.document.created_ns):>6}  {row.document.kind:12} "
                    f"{row.document.ordering_key[:14]:14} {text[:120]}"
                )
        return 0

    return _run(args, work)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 10 else f"{value:.1f}s"


def _show(args: argparse.Namespace) -> int:
    def work(store: Any) -> int:
        row = store.get(args.id)
        if row is None:
            raise _Fail(f"no outbox entry {args.id}")
        preview = _preview(args, row)
        if args.json:
            print(json.dumps({**_row_json(row), "body": row.document.body, "would_send": preview}))
            return 0
        info = _row_json(row)
        for name in ("id", "destination", "state", "attempts", "kind", "key", "order", "machine"):
            print(f"{name:12} {info[name]}")
        print(f"{'created':12} {_age(row.document.created_ns)} ago")
        if row.last_attempt_ns:
            print(f"{'last try':12} {_age(row.last_attempt_ns)} ago")
        if row.state == "pending" and row.next_attempt_ns:
            wait = max(0.0, row.next_attempt_ns / 1e9 - time.time())
            print(f"{'next try':12} in {wait:.0f}s")
        if row.reference:
            print(f"{'reference':12} {row.reference}")
        if row.last_error:
            print(f"{'last error':12} {row.last_error}")
        print("document:")
        print(json.dumps(row.document.body, indent=2, ensure_ascii=False))
        if preview is not None:
            print(f"would send now: {preview['method']} {preview['url']}")
            if preview.get("note"):
                print(f"  ({preview['note']})")
            print(preview["body"])
        return 0

    return _run(args, work)


def _preview(args: argparse.Namespace, row: Any) -> dict[str, Any] | None:
    """What the destination's connector would send now (with --config): the mapping's result."""
    if not args.config:
        return None
    from gateway.config.load import load_config
    from gateway.connectors.base import PreviewConnector
    from gateway.errors import DeliveryError
    from gateway.metrics import Metrics
    from gateway.runtime.registry import CONNECTORS, BuildContext
    from gateway.tags import TagTable

    config = load_config(args.config)
    section = next((d for d in config.destinations if d.name == row.destination), None)
    if section is None:
        return {"error": f"destination {row.destination} is not in {args.config} any more"}
    ctx = BuildContext(config, TagTable((d.name, d.tags) for d in config.devices), Metrics())
    connector = CONNECTORS[section.profile](section, ctx)
    if not isinstance(connector, PreviewConnector):
        return None
    try:
        rendered = connector.render(row.document.as_document())
    except DeliveryError as exc:
        return {"method": "-", "url": "-", "body": "", "note": f"cannot be sent: {exc}"}
    if rendered is None:
        return {"method": "-", "url": "-", "body": "", "note": "nothing to send (skipped)"}
    return {
        "method": rendered.method,
        "url": rendered.url,
        "body": rendered.body,
        "note": rendered.note,
    }


def _retry(args: argparse.Namespace) -> int:
    if not args.ids and not args.all:
        print("give delivery ids, or --all (with --destination)", file=sys.stderr)
        return 2
    if args.ids and args.all:
        print("give delivery ids or --all, not both", file=sys.stderr)
        return 2

    def work(store: Any) -> int:
        if args.all:
            moved = store.requeue(None, destination=args.destination)
        else:
            unknown = [i for i in args.ids if store.get(i) is None]
            if unknown:
                raise _Fail(f"no outbox entries {', '.join(map(str, unknown))}")
            moved = store.requeue(args.ids, include_pending=True)
        total = sum(count for count, _ in moved.values())
        if args.json:
            print(json.dumps({"retried": total, "per_destination": {
                name: count for name, (count, _) in moved.items()}}))  # fmt: skip
        else:
            detail = ", ".join(f"{name}: {count}" for name, (count, _) in sorted(moved.items()))
            print(f"{total} entries due now{f' ({detail})' if detail else ''}; a running "
                  "gateway sends them within seconds")  # fmt: skip
        return 0

    return _run(args, work)


def _drop(args: argparse.Namespace) -> int:
    if not args.yes:
        print(
            "dropping removes the entries for good: the destination never gets these documents."
            " Add --yes to confirm.",
            file=sys.stderr,
        )
        return 2

    def work(store: Any) -> int:
        removed = store.drop(args.ids)
        missing = sorted(set(args.ids) - {r[0] for r in removed})
        if args.json:
            print(json.dumps({"dropped": [r[0] for r in removed], "not_found": missing}))
        else:
            for delivery_id, destination, state in removed:
                print(f"dropped {delivery_id} ({destination}, was {state})")
            if missing:
                print(f"not found or already delivered: {', '.join(map(str, missing))}")
        return 0 if removed else 2

    return _run(args, work)
