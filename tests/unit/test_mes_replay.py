"""``edge-gateway replay``: a recorded tag history through a config's processors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gateway.cli.main import main
from gateway.processors.replay import parse_timestamp

CONFIG = """
gateway: {id: gw-replay, location: {enterprise: acme, site: s, area: a, line: l},
          data_dir: DATA}
devices:
  - name: M1
    protocol: modbus_tcp
    host: 127.0.0.1
    tags:
      - {name: State, address: 0, type: uint16}
      - {name: Good, address: 2, type: uint16}
      - {name: Scrap, address: 3, type: uint32}
      - {name: Order, address: 10, type: string, length: 16}
      - {name: Lot, address: 28, type: string, length: 16}
      - {name: Diameter, address: 40, type: float32}
shifts:
  shifts: [{name: day, start: "06:00", end: "18:00"}]
processors:
  - {type: work_report, machine: M1, good: M1/Good, scrap: M1/Scrap, order: M1/Order,
     lot: M1/Lot, triggers: [order_change, lot_change, shift_end]}
  - {type: oee, machine: M1, state: M1/State, good: M1/Good, scrap: M1/Scrap, order: M1/Order,
     ideal_cycle_time: 30}
  - type: lot_quality
    machine: M1
    lot: M1/Lot
    characteristics:
      - {name: diameter, values: M1/Diameter, lsl: 9.9, usl: 10.1,
         control_limits: {center: 10.0, sigma: 0.01}}
  - {type: genealogy, machine: M1, lot: M1/Lot, order: M1/Order, process: [M1/Diameter]}
"""

HISTORY = """timestamp,tag,value,quality
2025-05-05T06:00:00Z,M1/State,6,good
2025-05-05T06:00:00Z,M1/Good,100,
2025-05-05T06:00:00Z,M1/Scrap,0
2025-05-05T06:00:00Z,M1/Order,1000
2025-05-05T06:00:00Z,M1/Lot,L1
2025-05-05T06:00:00Z,M1/Diameter,10.001
2025-05-05T07:00:00Z,M1/Good,200
2025-05-05T07:00:00Z,M1/Diameter,10.05
2025-05-05T07:30:00Z,M1/Good,,bad: timeout
2025-05-05T08:00:00Z,M1/Good,260
2025-05-05T08:00:00Z,M1/Scrap,4
2025-05-05T08:00:00Z,M1/Lot,L2
2025-05-05T08:00:00Z,M1/Diameter,10.0
1746435600,M1/Good,300
1746435600,M1/Order,2000
"""


def run(
    tmp_path: Path, history: str, capsys: pytest.CaptureFixture[str]
) -> tuple[int, list[dict[str, Any]], str]:
    config = tmp_path / "gateway.yaml"
    config.write_text(CONFIG.replace("DATA", str(tmp_path / "data")))
    data = tmp_path / "tags.csv"
    data.write_text(history)
    code = main(["replay", "--config", str(config), "--input", str(data)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_replay_prints_every_document_and_touches_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, docs, err = run(tmp_path, HISTORY, capsys)
    assert code == 0, err
    kinds = [d["kind"] for d in docs]
    completions = [d["body"] for d in docs if d["kind"] == "completion"]
    assert [(c["order"], c["lot"], c["good"], c["scrap"], c["trigger"]) for c in completions] == [
        ("1000", "L1", 160, 4, "lot_change"),
        ("1000", "L2", 40, 0, "order_change"),
    ]
    alarms = [d["body"] for d in docs if d["kind"] == "spc_alarm"]
    assert [(a["rule"], a["value"], a["time"]) for a in alarms] == [
        (1, 10.05, "2025-05-05T07:00:00.000Z")
    ]
    (lot,) = [d["body"] for d in docs if d["kind"] == "lot_result"]
    assert lot["lot"] == "L1" and lot["characteristics"][0]["n"] == 2
    assert lot["decision"] == "hold"  # a point beyond 3 sigma (hold_on_rules: [1])
    (order,) = [d["body"] for d in docs if d["kind"] == "oee" and d["body"]["scope"] == "order"]
    assert order["run_time"] == 10800 and order["good"] == 200
    assert "lot_genealogy" in kinds
    assert "documents:" in err and "1 lot_result" in err
    assert not (tmp_path / "data").exists()  # no outbox, no genealogy database


def test_replay_is_deterministic(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _, first, _ = run(tmp_path, HISTORY, capsys)
    _, second, _ = run(tmp_path, HISTORY, capsys)
    assert [(d["key"], d["body"]) for d in first] == [(d["key"], d["body"]) for d in second]


def test_positional_columns_without_a_header(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = HISTORY.splitlines()[1:]
    code, docs, _ = run(tmp_path, "\n".join(lines) + "\n", capsys)
    assert code == 0 and any(d["kind"] == "completion" for d in docs)


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("2025-05-05T09:00:00Z,M1/Nope,1", "line 17: unknown tag 'M1/Nope'"),
        ("2025-05-05T09:00:00Z,M1/Good,lots", "line 17: M1/Good is uint16, 'lots' is not a number"),
        ("yesterday,M1/Good,1", "line 17: timestamp 'yesterday' is neither ISO 8601"),
        ("2025-05-05T09:00:00Z,M1/Good,1,so-so", "line 17: quality 'so-so' is not good"),
        ("2025-05-05T09:00:00Z,M1/Good,", "line 17: M1/Good has an empty value with good quality"),
    ],
)
def test_bad_rows_name_their_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], row: str, message: str
) -> None:
    code, _, err = run(tmp_path, HISTORY + row + "\n", capsys)
    assert code == 2
    assert message in err and "Traceback" not in err


def test_timestamps() -> None:
    assert parse_timestamp("1746432000") == 1746432000 * 10**9
    assert parse_timestamp("1746432000123") == 1746432000123 * 10**6
    assert parse_timestamp("2025-05-05T08:00:00.5+02:00") == (1746424800 * 10**9 + 5 * 10**8)
    assert parse_timestamp("2025-05-05 06:00:00") == 1746424800 * 10**9  # naive = UTC
