"""Measuring another process from a benchmark: CPU seconds and peak memory from /proc (Linux).

CPU is user + system time of the process over a window divided by the wall time of the window:
the cores it used, which other load on the machine barely changes. Memory figures are in MB as
`top`, `ps` and the peers' measurements count them: mebibytes (1,048,576 bytes).
"""

from __future__ import annotations

__all__ = [
    "cpu_seconds",
    "own_cpu_seconds",
    "own_peak_rss_mb",
    "peak_rss_mb",
    "percentile",
    "start_child",
    "stop_child",
]

import os
import resource
import subprocess
import sys

import numpy as np


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid`."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """User + system CPU seconds used so far by this process."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def own_peak_rss_mb() -> float:
    """This process's peak resident set size so far, in MB (MiB; ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set size so far (VmHWM), in MB (MiB)."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
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
