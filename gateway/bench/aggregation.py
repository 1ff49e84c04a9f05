"""``bench aggregation``: SPC with all Nelson rules and work reports, vs pure Python and pandas.

Workload (options in brackets):

* SPC: 1,000,000 measurements [measurements] of 10 characteristics [characteristics] (half as
  individuals charts, half as X̄/R charts of 5), limits from a 25-point baseline, all eight
  Nelson rules, an alarm document at the start of each run of violations. The data is normal
  noise, off centre by 1.5 sigma 1 % of the time; with all eight rules an in-control process
  alarms about every 70 points, so some 10,000 alarms come out. The measurements arrive as
  batches of 10,000 [batch] samples (a subscription queue or a replay), through the real ``spc``
  processor.
* Work reports: 1,000,000 counter samples [counter_samples] (good and scrap counters of 10
  machines, polled with the order and lot tags) through the real ``work_report`` processors:
  16-bit rollovers, a PLC restart per machine, bad-quality gaps, duplicates, order and lot
  changes. Batches of 2,500 polls [polls_per_batch] of one machine.

Every batch goes to every processor, as in the pipeline. The baselines do the same work from
the same batches and produce the same alarm records (fields and idempotency keys): a
straightforward pure-Python implementation, one sample at a time (run on the first tenth of the
data [python_fraction] and scaled by its rate), and pandas on all the data at once (a DataFrame
of the batches; ``groupby``, ``rolling`` windows, ``pivot``, grouped diffs and segment sums). All
three must find the same alarms and completions, or the benchmark fails. The three run one
after another in each of 4 rounds [repeats], so that a slow spell of a shared machine slows
them alike: in each round pure Python once, then the gateway again and again for as long as
pure Python took (its mean per run, so both are means over windows of the same length), then
pandas once; times are the best of the rounds. CPU seconds are the process's user + system time
of the same run. Speed-ups are ratios of CPU seconds, which the other load of a shared machine
changes much less than wall time; both are printed.
"""

from __future__ import annotations

__all__ = ["run"]

import gc
import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from gateway import quality
from gateway.batch import SampleBatch
from gateway.bench import Result
from gateway.bench.process import own_cpu_seconds
from gateway.config.load import load_config_text
from gateway.config.model import GatewayConfig
from gateway.processors.lot_quality import spc_alarm_key_prefix
from gateway.processors.spc import D2
from gateway.runtime.interfaces import Processor
from gateway.runtime.registry import PROCESSORS, BuildContext
from gateway.tags import TagTable

_K5 = 5
_BASELINE = 25
_ORDER_EVERY = 5000
_LOT_EVERY = 2500
_BAD = quality.bad("timeout")


@dataclass
class _Data:
    config: GatewayConfig
    table: TagTable
    subgroups: list[int]
    spc_batches: list[SampleBatch]
    counter_batches: list[SampleBatch]
    polls: list[dict[str, Any]]
    """Per machine: good, scrap (NaN = bad), order, lot arrays."""


def _config(characteristics: int, machines: int) -> GatewayConfig:
    chars = "\n".join(f"      - {{name: c{i}, address: {i * 4}}}" for i in range(characteristics))
    specs = ", ".join(
        f"{{name: c{i}, values: Q/c{i}, lsl: 9.9, usl: 10.1, baseline: {_BASELINE}, "
        f"subgroup: {1 if i % 2 == 0 else _K5}}}"
        for i in range(characteristics)
    )
    devices = [
        f"  - name: Q\n    protocol: modbus_tcp\n    host: 127.0.0.1\n    tags:\n{chars}",
    ]
    processors = [f"  - {{type: spc, machine: Q, characteristics: [{specs}]}}"]
    for m in range(machines):
        devices.append(
            f"  - name: M{m}\n    protocol: modbus_tcp\n    host: 127.0.0.1\n    tags:\n"
            "      - {name: Good, address: 0, type: uint16}\n"
            "      - {name: Scrap, address: 1, type: uint32}\n"
            "      - {name: Order, address: 10, type: string, length: 8}\n"
            "      - {name: Lot, address: 20, type: string, length: 8}"
        )
        processors.append(
            f"  - {{type: work_report, machine: M{m}, good: M{m}/Good, scrap: M{m}/Scrap, "
            f"order: M{m}/Order, lot: M{m}/Lot}}"
        )
    text = (
        "gateway: {id: bench, location: {enterprise: e, site: s, area: a, line: l}}\n"
        "devices:\n" + "\n".join(devices) + "\nprocessors:\n" + "\n".join(processors) + "\n"
    )
    return load_config_text(text)


def _make_data(options: dict[str, str]) -> _Data:
    measurements = int(options.get("measurements", 1_000_000))
    characteristics = int(options.get("characteristics", 10))
    batch = int(options.get("batch", 10_000))
    counter_samples = int(options.get("counter_samples", 1_000_000))
    machines = int(options.get("machines", 10))
    per_batch = int(options.get("polls_per_batch", 2_500))
    config = _config(characteristics, machines)
    table = TagTable((d.name, d.tags) for d in config.devices)
    rng = np.random.default_rng(11)
    # SPC: round-robin over the characteristics, 1 ms apart, a shift of 1.5 sigma now and then
    chars = np.arange(measurements) % characteristics
    values = rng.normal(10.0, 0.01, measurements)
    shifted = (np.arange(measurements) // 2000) % 100 == 37  # 1 % of the time off centre
    values[shifted] += 0.015
    tags = np.array([table.index(f"Q/c{c}") for c in range(characteristics)], np.int32)[chars]
    stamps = 1_700_000_000_000_000_000 + np.arange(measurements, dtype=np.int64) * 1_000_000
    spc_batches = []
    for start in range(0, measurements, batch):
        end = min(start + batch, measurements)
        spc_batches.append(
            SampleBatch(
                "Q",
                tags[start:end],
                values[start:end],
                np.zeros(end - start, np.uint16),
                stamps[start:end],
                received_ns=int(stamps[end - 1]),
                unique_tags=False,
            )
        )
    # work reports: polls of good, scrap, order, lot
    polls_per_machine = counter_samples // 2 // machines
    counter_batches: list[list[SampleBatch]] = []
    polls = []
    for m in range(machines):
        good_steps = rng.integers(0, 4, polls_per_machine)  # 0: a duplicate value
        scrap_steps = (rng.random(polls_per_machine) < 0.05).astype(np.int64)
        good = (65_000 + np.cumsum(good_steps)) % 65_536
        scrap = np.cumsum(scrap_steps) + 1_000
        restart = polls_per_machine * 3 // 5  # the PLC restarts: counters from 0
        good[restart:] = np.cumsum(good_steps[restart:]) % 65_536
        scrap[restart:] = np.cumsum(scrap_steps[restart:])
        good_f, scrap_f = good.astype(np.float64), scrap.astype(np.float64)
        bad = rng.random(polls_per_machine) < 0.005
        good_f[bad] = np.nan
        p = np.arange(polls_per_machine)
        order = np.array([f"{1000 + i}" for i in range(p[-1] // _ORDER_EVERY + 1)], object)[
            p // _ORDER_EVERY
        ]
        lot = np.array([f"L{i}" for i in range(p[-1] // _LOT_EVERY + 1)], object)[p // _LOT_EVERY]
        polls.append({"good": good_f, "scrap": scrap_f, "order": order, "lot": lot})
        poll_ns = 1_700_000_000_000_000_000 + p.astype(np.int64) * 100_000_000
        ids = [table.index(f"M{m}/{n}") for n in ("Good", "Scrap", "Order", "Lot")]
        machine_batches = []
        for start in range(0, polls_per_machine, per_batch):
            end = min(start + per_batch, polls_per_machine)
            count = end - start
            block = np.empty((count, 4), np.float64)
            block[:, 0], block[:, 1], block[:, 2:] = good_f[start:end], scrap_f[start:end], np.nan
            objects = np.empty((count, 4), object)
            objects[:, 2], objects[:, 3] = order[start:end], lot[start:end]
            codes = np.zeros((count, 4), np.uint16)
            codes[bad[start:end], 0] = _BAD
            machine_batches.append(
                SampleBatch(
                    f"M{m}",
                    np.tile(np.array(ids, np.int32), count),
                    block.ravel(),
                    codes.ravel(),
                    np.repeat(poll_ns[start:end], 4),
                    objects.ravel(),
                    received_ns=int(poll_ns[end - 1]),
                    unique_tags=False,
                )
            )
        counter_batches.append(machine_batches)
    interleaved = [b for group in zip(*counter_batches, strict=False) for b in group]
    subgroups = [1 if i % 2 == 0 else _K5 for i in range(characteristics)]
    return _Data(config, table, subgroups, spc_batches, interleaved, polls)


# --- the gateway's processors ---------------------------------------------------------------


def _gateway(data: _Data, spc_batches: int, counter_batches: int) -> dict[str, Any]:
    from gateway.metrics import Metrics

    ctx = BuildContext(data.config, data.table, Metrics())
    processors: list[Processor] = [PROCESSORS[p.type](p, ctx) for p in data.config.processors]
    gc.freeze()  # as the gateway does once it has started (see Gateway.start)
    found: dict[str, Any] = {"alarms": [], "completions": 0, "good": 0, "scrap": 0}
    for batch in data.spc_batches[:spc_batches] + data.counter_batches[:counter_batches]:
        for processor in processors:
            for document in processor.ingest(batch):
                if document.kind == "spc_alarm":
                    found["alarms"].append(document.key)
                else:
                    found["completions"] += 1
                    found["good"] += int(document.body["good"])
                    found["scrap"] += int(document.body["scrap"])
            processor.commit()
    return found


# --- pure Python, one sample at a time ------------------------------------------------------


def _python_rules(h: list[float], cl: float, s: float) -> list[bool]:
    n, p = len(h), h[-1]
    out = [abs(p - cl) > 3 * s] + [False] * 7
    if n >= 9:
        w = h[-9:]
        out[1] = all(x - cl > 0 for x in w) or all(x - cl < 0 for x in w)
    if n >= 6:
        w = h[-6:]
        out[2] = all(w[i + 1] - w[i] > 0 for i in range(5)) or all(
            w[i + 1] - w[i] < 0 for i in range(5)
        )
    if n >= 14:
        w = h[-14:]
        d = [w[i + 1] - w[i] for i in range(13)]
        out[3] = all((d[i] > 0 and d[i + 1] < 0) or (d[i] < 0 and d[i + 1] > 0) for i in range(12))
    if n >= 3:
        w = h[-3:]
        out[4] = sum(x - cl > 2 * s for x in w) >= 2 or sum(x - cl < -2 * s for x in w) >= 2
    if n >= 5:
        w = h[-5:]
        out[5] = sum(x - cl > s for x in w) >= 4 or sum(x - cl < -s for x in w) >= 4
    if n >= 15:
        out[6] = all(-s < x - cl < s for x in h[-15:])
    if n >= 8:
        w = h[-8:]
        above, below = sum(x - cl > s for x in w), sum(x - cl < -s for x in w)
        out[7] = above + below == 8 and above > 0 and below > 0
    return out


@cache
def _key_prefix(c: int) -> str:
    """The part of characteristic c's alarm keys hashed once, as the gateway does."""
    return spc_alarm_key_prefix("bench", "Q", f"c{c}")


def _alarm_record(
    c: int, rule: int, index: int, value: float, cl: float, s: float, stamp: int
) -> dict[str, Any]:
    """What the baselines produce per alarm: the fields and key of an spc_alarm document."""
    key = f"{_key_prefix(c)}{rule}{index:09x}"  # = spc_alarm_key("bench", "Q", f"c{c}", ...)
    return {
        "characteristic": f"c{c}",
        "rule": rule,
        "point": index,
        "value": value,
        "cl": cl,
        "ucl": cl + 3 * s,
        "lcl": cl - 3 * s,
        "sigma": s,
        "time": stamp,
        "idempotency_key": key,
    }


def _python_spc(
    batches: list[SampleBatch], chart_of: dict[int, int], subgroups: list[int]
) -> list[dict[str, Any]]:
    """One sample at a time: find its characteristic, subgroup, baseline, rules, alarms."""
    count = len(subgroups)
    index = [-1] * count
    last_ns = [0] * count
    pending: list[list[float]] = [[] for _ in range(count)]
    baseline: list[list[float]] = [[] for _ in range(count)]
    ranges: list[list[float]] = [[] for _ in range(count)]
    limits: list[tuple[float, float] | None] = [None] * count
    history: list[deque[float]] = [deque(maxlen=15) for _ in range(count)]
    firing = [[False] * 8 for _ in range(count)]
    alarms: list[dict[str, Any]] = []
    for batch in batches:
        rows = zip(
            batch.tags.tolist(),
            batch.values.tolist(),
            batch.quality.tolist(),
            batch.timestamps.tolist(),
            strict=True,
        )
        for tag, v, q, stamp in rows:
            c = chart_of.get(tag)
            if c is None or q >> 14 or v != v or stamp <= last_ns[c]:
                continue
            last_ns[c] = stamp
            k = subgroups[c]
            if k > 1:
                pending[c].append(v)
                if len(pending[c]) < k:
                    continue
                group, pending[c] = pending[c], []
                point, spread = sum(group) / k, max(group) - min(group)
            else:
                point, spread = v, 0.0
            index[c] += 1
            history[c].append(point)
            if limits[c] is None:
                baseline[c].append(point)
                ranges[c].append(spread)
                if len(baseline[c]) == _BASELINE:
                    base = baseline[c]
                    if k == 1:
                        moving = [abs(base[i + 1] - base[i]) for i in range(len(base) - 1)]
                        sigma = math.fsum(moving) / len(moving) / D2[2]
                    else:
                        sigma = math.fsum(ranges[c]) / len(ranges[c]) / D2[k]
                    limits[c] = (math.fsum(base) / len(base), sigma / math.sqrt(k))
                continue
            cl, s = limits[c]  # type: ignore[misc]
            flags = _python_rules(list(history[c]), cl, s)
            for r in range(8):
                if flags[r] and not firing[c][r]:
                    alarms.append(_alarm_record(c, r + 1, index[c], point, cl, s, stamp))
                firing[c][r] = flags[r]
    return alarms


def _python_counters(
    batches: list[SampleBatch], roles: dict[int, tuple[int, int]], machines: int
) -> dict[str, int]:
    """One sample at a time: counter deltas, order/lot changes, completions."""
    found = {"completions": 0, "good": 0, "scrap": 0}
    last: list[list[int | None]] = [[None, None] for _ in range(machines)]
    counts = [[0, 0] for _ in range(machines)]
    identity: list[list[str | None]] = [[None, None] for _ in range(machines)]
    rollovers = (65_536, 2**32)
    for batch in batches:
        objects = batch.objects.tolist() if batch.objects is not None else [None] * len(batch)
        rows = zip(
            batch.tags.tolist(),
            batch.values.tolist(),
            batch.quality.tolist(),
            objects,
            strict=True,
        )
        for tag, raw, q, text in rows:
            found_role = roles.get(tag)
            if found_role is None or q >> 14:
                continue  # not ours, or bad: bridged by the next good sample
            m, role = found_role
            if role < 2:
                if raw != raw:
                    continue
                value, previous = int(raw), last[m][role]
                if previous is not None:
                    if value >= previous:
                        counts[m][role] += value - previous
                    elif (
                        previous >= rollovers[role] - rollovers[role] // 16
                        and value < rollovers[role] // 16
                    ):
                        counts[m][role] += value + rollovers[role] - previous
                    else:
                        counts[m][role] += value
                last[m][role] = value
                continue
            field, current = role - 2, str(text).strip()
            if identity[m][field] is None:
                identity[m][field] = current
            elif current != identity[m][field]:
                good, scrap = counts[m]
                if good or scrap:
                    found["completions"] += 1
                    found["good"] += good
                    found["scrap"] += scrap
                counts[m] = [0, 0]
                identity[m][field] = current
    return found


# --- pandas ---------------------------------------------------------------------------------


def _frame(batches: list[SampleBatch]) -> Any:
    """The batches' columns as one DataFrame (what pandas starts from)."""
    import pandas as pd

    objects = [
        b.objects if b.objects is not None else np.full(len(b), None, object) for b in batches
    ]
    return pd.DataFrame(
        {
            "tag": np.concatenate([b.tags for b in batches]),
            "v": np.concatenate([b.values for b in batches]),
            "q": np.concatenate([b.quality for b in batches]),
            "t": np.concatenate([b.timestamps for b in batches]),
            "obj": np.concatenate(objects),
        }
    )


def _pandas_spc(
    batches: list[SampleBatch], chart_of: dict[int, int], subgroups: list[int]
) -> list[dict[str, Any]]:
    import pandas as pd

    frame = _frame(batches)
    frame["c"] = frame["tag"].map(chart_of)
    frame = frame[frame["c"].notna() & (frame["q"] < 1 << 14) & frame["v"].notna()]
    previous = frame.groupby("c")["t"].shift(1)  # a measurement needs a new timestamp
    frame = frame[frame["t"] > previous.groupby(frame["c"]).cummax().fillna(-1)]
    alarms: list[dict[str, Any]] = []
    for c, group in frame.groupby("c", sort=True):
        k = subgroups[int(c)]
        s = group["v"].reset_index(drop=True)
        t = group["t"].reset_index(drop=True)
        if k > 1:
            used = len(s) // k * k
            grouped = s.iloc[:used].groupby(np.arange(used) // k)
            points, spread = grouped.sum() / k, grouped.max() - grouped.min()
            point_stamps = t.iloc[k - 1 : used : k].reset_index(drop=True)
            base_sigma = math.fsum(spread.iloc[:_BASELINE].tolist()) / _BASELINE / D2[k]
        else:
            points, point_stamps = s, t
            moving = points.iloc[:_BASELINE].diff().abs().iloc[1:]
            base_sigma = math.fsum(moving.tolist()) / (_BASELINE - 1) / D2[2]
        cl = math.fsum(points.iloc[:_BASELINE].tolist()) / _BASELINE
        sd = base_sigma / math.sqrt(k)
        dev = points - cl
        step = points.diff()
        up, down = step > 0, step < 0
        a1, b1, a2, b2 = dev > sd, dev < -sd, dev > 2 * sd, dev < -2 * sd
        alt = (up & down.shift(1, fill_value=False)) | (down & up.shift(1, fill_value=False))
        rules = pd.DataFrame(
            {
                1: (dev > 3 * sd) | (dev < -3 * sd),
                2: ((dev > 0).rolling(9).sum() == 9) | ((dev < 0).rolling(9).sum() == 9),
                3: (up.rolling(5).sum() == 5) | (down.rolling(5).sum() == 5),
                4: alt.rolling(12).sum() == 12,
                5: (a2.rolling(3).sum() >= 2) | (b2.rolling(3).sum() >= 2),
                6: (a1.rolling(5).sum() >= 4) | (b1.rolling(5).sum() >= 4),
                7: ((dev < sd) & (dev > -sd)).rolling(15).sum() == 15,
                8: ((a1 | b1).rolling(8).sum() == 8)
                & (a1.rolling(8).sum() > 0)
                & (b1.rolling(8).sum() > 0),
            }
        ).iloc[_BASELINE:]
        starts = rules & ~rules.shift(1, fill_value=False)
        found = starts.stack()
        found = found[found]
        at = found.index.get_level_values(0)
        rows = pd.DataFrame(
            {
                "rule": found.index.get_level_values(1),
                "point": at,
                "value": points.loc[at].to_numpy(),
            }
        )
        stamp_of = point_stamps.loc[at].to_numpy()
        for row, stamp in zip(rows.itertuples(index=False), stamp_of.tolist(), strict=True):
            alarms.append(
                _alarm_record(int(c), int(row.rule), int(row.point), row.value, cl, sd, stamp)
            )
    return alarms


def _pandas_counters(
    batches: list[SampleBatch], roles: dict[int, tuple[int, int]]
) -> dict[str, int]:
    import pandas as pd

    found = {"completions": 0, "good": 0, "scrap": 0}
    samples = _frame(batches)
    samples["m"] = samples["tag"].map({tag: m for tag, (m, _) in roles.items()})
    samples["role"] = samples["tag"].map({tag: r for tag, (_, r) in roles.items()})
    samples = samples[samples["m"].notna()]
    names = {0: "good", 1: "scrap", 2: "order", 3: "lot"}
    for _, rows in samples.groupby("m", sort=True):
        counters = rows[rows["role"] < 2].pivot(index="t", columns="role", values="v")
        identity = rows[(rows["role"] >= 2) & (rows["q"] < 1 << 14)]
        identity = identity.pivot(index="t", columns="role", values="obj")
        frame = counters.join(identity, how="outer").rename(columns=names)
        frame[["order", "lot"]] = frame[["order", "lot"]].ffill()
        counted = {}
        for name, rollover in (("good", 65_536), ("scrap", 2**32)):
            raw = frame[name].ffill()
            previous = raw.shift(1)
            step = raw - previous
            wrapped = (step < 0) & (previous >= rollover - rollover // 16) & (raw < rollover // 16)
            parts = step.where(step >= 0, raw.where(~wrapped, raw + rollover - previous))
            # the first good sample only sets the baseline
            counted[name] = parts.where(previous.notna(), 0).fillna(0).astype("int64")
        identity = frame["order"] + "\x1f" + frame["lot"]
        changed = identity != identity.shift(1)
        # the counters of the poll that shows a new order or lot still belong to the old one
        segment = changed.cumsum() - changed.astype("int64")
        sums = pd.DataFrame({"segment": segment, **counted}).groupby("segment").sum()
        closed = sums.iloc[:-1]
        closed = closed[(closed["good"] > 0) | (closed["scrap"] > 0)]
        found["completions"] += len(closed)
        found["good"] += int(closed["good"].sum())
        found["scrap"] += int(closed["scrap"].sum())
    return found


# --- the run --------------------------------------------------------------------------------


def _agree(
    name: str, alarms: list[dict[str, Any]], counts: dict[str, int], ours: dict[str, Any]
) -> None:
    """The baseline found what the gateway found, or the benchmark is void."""
    theirs = sorted(a["idempotency_key"] for a in alarms)
    if theirs != sorted(ours["alarms"]) or any(counts[k] != ours[k] for k in counts):
        raise AssertionError(
            f"{name} and the gateway disagree: {len(theirs)} vs {len(ours['alarms'])} alarms "
            f"({len(set(theirs) ^ set(ours['alarms']))} differ), {counts} vs "
            f"{ {k: ours[k] for k in counts} }"
        )


class _Best:
    """The best (lowest) wall and CPU seconds of one implementation over the rounds."""

    def __init__(self) -> None:
        self.wall = self.cpu = math.inf
        self.result: Any = None

    def time(self, work: Callable[[], Any], for_seconds: float = 0.0) -> float:
        """Run `work` once, or again and again for `for_seconds`; keeps the mean per run if it
        is the best so far. Returns the wall seconds spent."""
        cpu_start, started = own_cpu_seconds(), time.perf_counter()
        runs = 0
        while True:
            self.result = work()
            runs += 1
            spent = time.perf_counter() - started
            if spent >= for_seconds:
                break
        self.wall = min(self.wall, spent / runs)
        self.cpu = min(self.cpu, (own_cpu_seconds() - cpu_start) / runs)
        return spent


def run(options: dict[str, str]) -> Result:
    repeats = int(options.get("repeats", 4))
    fraction = float(options.get("python_fraction", 0.1))
    data = _make_data(options)
    measurements = sum(len(b) for b in data.spc_batches)
    counter_samples = sum(2 * len(m["good"]) for m in data.polls)
    print(
        f"aggregation: {measurements:,} measurements of {len(data.subgroups)} characteristics "
        f"(SPC, 8 Nelson rules) + {counter_samples:,} counter samples of {len(data.polls)} "
        f"machines (work reports); {len(data.spc_batches)} + {len(data.counter_batches)} batches"
    )
    print(
        f"  {repeats} rounds, each running all three implementations one after another (so that "
        "a slow spell of a shared machine slows them alike; the gateway runs again and again "
        "for as long as pure Python ran, and counts its mean); times are the best of the "
        "rounds; CPU = user + system seconds of this process"
    )
    every = (len(data.spc_batches), len(data.counter_batches))
    # pure Python on the first fraction of each stream, scaled by its rate
    machines = len(data.polls)
    chart_of = {data.table.index(f"Q/c{i}"): i for i in range(len(data.subgroups))}
    roles = {
        data.table.index(f"M{m}/{name}"): (m, role)
        for m in range(machines)
        for role, name in enumerate(("Good", "Scrap", "Order", "Lot"))
    }
    spc_part = max(1, round(len(data.spc_batches) * fraction))
    counter_part = max(1, round(len(data.counter_batches) * fraction / machines)) * machines
    spc_subset, counter_subset = data.spc_batches[:spc_part], data.counter_batches[:counter_part]
    n_meas = sum(len(b) for b in spc_subset)
    n_counts = sum(len(b) for b in counter_subset) // 2  # half the rows are counter samples
    ours, py_spc, py_counters, pd = _Best(), _Best(), _Best(), _Best()
    for _ in range(repeats):
        python_seconds = py_spc.time(lambda: _python_spc(spc_subset, chart_of, data.subgroups))
        python_seconds += py_counters.time(
            lambda: _python_counters(counter_subset, roles, machines)
        )
        # the gateway again and again for as long as pure Python ran: both are means over
        # windows of the same length, side by side
        ours.time(lambda: _gateway(data, *every), for_seconds=python_seconds)
        pd.time(
            lambda: (
                _pandas_spc(data.spc_batches, chart_of, data.subgroups),
                _pandas_counters(data.counter_batches, roles),
            )
        )
    found = ours.result
    print(
        f"  gateway (numpy)     : {ours.wall:8.3f} s   CPU {ours.cpu:8.3f} s   "
        f"{len(found['alarms']):,} SPC alarms, {found['completions']:,} completions"
    )
    _agree("pure Python", py_spc.result, py_counters.result, _gateway(data, spc_part, counter_part))
    scale_spc, scale_cnt = measurements / n_meas, counter_samples / n_counts
    py_wall = py_spc.wall * scale_spc + py_counters.wall * scale_cnt
    py_cpu = py_spc.cpu * scale_spc + py_counters.cpu * scale_cnt
    print(
        f"  pure Python         : {py_wall:8.3f} s   CPU {py_cpu:8.3f} s   (scaled from its run "
        f"on the first {fraction:.0%}: {n_meas:,} measurements and {n_counts:,} counter "
        f"samples, where it found the same {len(py_spc.result):,} alarms and "
        f"{py_counters.result['completions']:,} completions)"
    )
    _agree("pandas", pd.result[0], pd.result[1], found)
    print(
        f"  pandas (all at once): {pd.wall:8.3f} s   CPU {pd.cpu:8.3f} s   (the same alarms "
        f"and completions)"
    )
    vs_python, vs_pandas = py_cpu / ours.cpu, pd.cpu / ours.cpu
    print(
        f"  speed-up (CPU)      : {vs_python:8.1f} × pure Python, {vs_pandas:.1f} × pandas   "
        f"(wall: {py_wall / ours.wall:.1f} ×, {pd.wall / ours.wall:.1f} ×)"
    )
    return {
        "measurements": measurements,
        "seconds": round(ours.wall, 4),
        "speedup_vs_python": round(vs_python, 1),
        "speedup_vs_pandas": round(vs_pandas, 2),
        "cpu_seconds": round(ours.cpu, 4),
        "counter_samples": counter_samples,
        "spc_alarms": len(found["alarms"]),
        "completions": found["completions"],
    }
