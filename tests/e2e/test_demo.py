"""The demo scenario end to end: simulators, broker, gateway, ERP outage, verification."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_books_everything_exactly_once() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli.main", "demo", "--quiet"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    lines = result.stdout.strip().splitlines()
    assert lines, result.stderr[-3000:]
    summary = json.loads(lines[-1])
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert summary["lost"] == 0
    assert summary["duplicated"] == 0
    for key in (
        "orders_completed",
        "erp_confirmations",
        "wms_receipts",
        "qms_results",
        "mqtt_messages",
    ):
        assert summary[key] > 0, key
    assert summary["orders_completed"] == 9
    assert "ERP is down" in result.stdout
