"""The machine a figure was measured on: one home for the CPU model, the cores, the load and the process CPU time
that every benchmark and evaluation report records beside its figures.

    >>> from galore_cli.machine import cpu_model, describe
    >>> model = cpu_model()             # e.g. 'AMD EPYC 9R14' (lscpu's "Model name", read from /proc/cpuinfo)
    >>> describe().startswith(model)    # e.g. 'AMD EPYC 9R14, 2 cores, load average 0.3 / 0.5, torch 2.14.1 ...'
    True
"""
from __future__ import annotations

import os
import platform
from collections.abc import Iterable
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, as lscpu's "Model name" prints it (first "model name" of /proc/cpuinfo), else
    what the platform module knows, else "unknown CPU"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def load_average() -> tuple[float, float]:
    """The 1- and 5-minute load averages."""
    load1, load5, _ = os.getloadavg()
    return load1, load5


def describe(device: str = "cpu") -> str:
    """One line for a report: the CPU model (or the CUDA device's name), cores, load, and torch's version and
    threads when torch is loaded."""
    import sys

    torch = sys.modules.get("torch")
    if device.startswith("cuda") and torch is not None:
        name = torch.cuda.get_device_name(torch.device(device))
    else:
        name = cpu_model()
    load1, load5 = load_average()
    line = f"{name}, {os.cpu_count()} cores, load average {load1:.1f} / {load5:.1f}"
    if torch is not None:
        gpu = "CUDA present" if torch.cuda.is_available() else "no GPU"
        line += f", torch {torch.__version__} with {torch.get_num_threads()} threads, {gpu}"
    return line


def cpu_seconds(processes: Iterable) -> float:
    """User + system CPU seconds used so far by ``processes`` (psutil.Process objects); ones that have exited
    count zero."""
    import psutil

    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total
