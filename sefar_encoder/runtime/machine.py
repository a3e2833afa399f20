"""The description of the machine a run or a benchmark figure was measured on (the one place that computes
it): :func:`machine_info` for a benchmark's JSON, :func:`machine_summary` (one line of it) for a run's
``metrics.json``."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path
from typing import Any

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what ``platform`` knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def memory_gb() -> float | None:
    """Total RAM in GB (10^9 bytes) from /proc/meminfo; None where that file does not exist."""
    try:
        first = Path("/proc/meminfo").read_text().split("\n", 1)[0]  # "MemTotal:  24576000 kB"
        return round(int(first.split()[1]) * 1024 / 1e9, 1)
    except (OSError, IndexError, ValueError):
        return None


def machine_info(**extra: Any) -> dict[str, Any]:
    """CPU, core counts, RAM, load now, OS, Python, torch and its intra-op threads, the date (UTC), plus
    ``extra``."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gb": memory_gb(),
        "load_avg_1m_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def machine_summary() -> str:
    """One line of :func:`machine_info` for a run's ``metrics.json``: CPU, torch's intra-op threads, torch."""
    info = machine_info()
    return f"{info['cpu']}, {info['threads']} threads, torch {info['torch']}"
