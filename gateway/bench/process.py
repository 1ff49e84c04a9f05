"""Measuring another process from a benchmark: CPU seconds and peak memory from /proc (Linux).

CPU is user + system time of the process over a window divided by the wall time of the window:
the cores it used, which other load on the machine barely changes.
"""

from __future__ import annotations

__all__ = ["cpu_seconds", "peak_rss_mb", "percentile", "start_child", "stop_child"]

import os
import subprocess
import sys

import numpy as np


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid`."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB (10^6 bytes)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024 / 1e6
    raise RuntimeError(f"no VmHWM for process {pid}")


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0..100) of `values`; NaN when empty."""
    return float(np.percentile(values, q)) if values else float("nan")


def start_child(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    """``python -m ...`` in a child process with its stdout piped (text)."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def stop_child(process: subprocess.Popen[str], timeout: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `timeout` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
