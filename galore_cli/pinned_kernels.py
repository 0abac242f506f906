"""Training on the same kernels on different x86 CPUs: every CPU kernel library pinned to AVX2.

torch (ATen's vectorised loops), oneDNN (convolutions) and MKL (matrix products) each pick their kernels by the
CPU's instruction set: AVX-512 on a Zen 4 EPYC or a Xeon, AVX2 on a Zen 3 EPYC. The kernels round differently,
and twelve epochs grow that into another classifier: the same `galore evaluate synthetic` command gave held-out
top-1 0.628 on an AVX-512 EPYC and 0.598 on an AVX2 one (EVALUATION.md §8). Each library reads an environment
variable before its first kernel runs, so pinned work runs in a fresh (spawned) process that starts with them:

    ATEN_CPU_CAPABILITY=avx2   ONEDNN_MAX_CPU_ISA=AVX2   MKL_CBWR=AVX2

A CPU without AVX2 and FMA (or not x86) runs its own kernels, and the training report says which ran. Checked
(EVALUATION.md §8): lower caps (SSE4.1) give other weights, which is the mechanism; on an AVX2 CPU the pinned
process gave the native process's weights bit for bit on the quick set but not on the full benchmark (the caps
change some kernels there too); an AVX-512 CPU's pinned run has not been compared (none was at hand), which is
what the report's weights fingerprint is for.

    >>> pinned_env("avx2", flags={"avx2", "fma"})["ONEDNN_MAX_CPU_ISA"]
    'AVX2'
    >>> pinned_env("avx2", flags={"neon"})   # no AVX2 here: native kernels
    {}
    >>> run_pinned("native", sum, [1, 2])    # native: in this process
    3
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

KERNELS = ("avx2", "native")  # --cpu-kernels choices; the first is the default
AVX2_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}
_NEEDS = frozenset({"avx2", "fma"})  # what AVX2_ENV's kernels execute

T = TypeVar("T")


def cpu_flags() -> frozenset[str]:
    """The "flags" of /proc/cpuinfo's first processor (empty where there is no such file)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def pinned_env(kernels: str, flags: frozenset[str] | set[str] | None = None) -> dict[str, str]:
    """The environment that pins the kernels: AVX2_ENV for "avx2" on a CPU with AVX2 and FMA, else {}."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels: one of {', '.join(KERNELS)}, got {kernels!r}")
    if kernels == "native" or not _NEEDS <= set(cpu_flags() if flags is None else flags):
        return {}
    return dict(AVX2_ENV)


@contextmanager
def _environment(env: dict[str, str]) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_pinned(kernels: str, fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` with the kernels of ``kernels``: in a spawned process that starts with ``pinned_env``
    (``fn`` and its arguments must pickle), or in this process when that is empty. Exceptions come back as
    ``fn`` raised them."""
    env = pinned_env(kernels)
    if not env:
        return fn(*args)
    with _environment(env), concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def kernels_in_use() -> dict[str, str]:
    """What this process runs: ATen's CPU capability as torch reports it, and the oneDNN and MKL caps
    ("native": none set)."""
    import torch

    return {"aten": torch.backends.cpu.get_cpu_capability().lower(),
            "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"), "mkl": os.environ.get("MKL_CBWR", "native")}
