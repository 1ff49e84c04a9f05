"""``edge-gateway bench modbus`` runs end to end (a short, small run; the figures are the
benchmark's business, not this test's)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_bench_modbus_reports_every_figure() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "bench", "modbus", "devices=2", "tags=200",
         "duration=2", "warmup=1", "baseline=1", "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures["bench"] == "modbus" and figures["tags"] == 400
    # every cycle of 2 devices × 200 tags every 100 ms came in, all good
    assert figures["values_per_s"] == 4000
    assert figures["requests_per_cycle"] == figures["optimal_requests_per_cycle"] > 0
    for key in ("cpu_cores", "rss_mb", "jitter_p99_ms", "pymodbus_client_cpu_cores"):
        assert figures[key] > 0, key
