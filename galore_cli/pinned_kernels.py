"""Training on the same kernels on different x86 CPUs: torch and oneDNN capped at AVX2, MKL on its
vendor-neutral branch.

torch (ATen's vectorised loops), oneDNN (convolutions) and MKL (matrix products) each pick their kernels by the
CPU: AVX-512 on a Zen 4 EPYC or a Xeon, AVX2 on a Zen 3 EPYC. The kernels round differently, and twelve epochs
grow that into another classifier: the same `galore evaluate synthetic` command gave held-out top-1 0.628 on an
AVX-512 EPYC and 0.598 on an AVX2 one (EVALUATION.md §8). Each library reads an environment variable before its
first kernel runs, so pinned work runs in a fresh (spawned) process that starts with them:

    ATEN_CPU_CAPABILITY=avx2   ONEDNN_MAX_CPU_ISA=AVX2   MKL_CBWR=COMPATIBLE

MKL's conditional numerical reproducibility honours an instruction-set branch (``MKL_CBWR=AVX2``) on Intel CPUs
only: on an AMD one MKL reads it back as AUTO, its own choice for that CPU (``mkl_branch`` shows it). COMPATIBLE
is the branch MKL runs on every x86 CPU; MKL serves only the Linear layers here, so its cost is small.
``kernels_in_use`` reports the branch MKL really took, not the variable asked for.

A CPU without AVX2 and FMA (or not x86) runs its own kernels, and the training report says which ran. Checked
(EVALUATION.md §8): lower caps (SSE4.1) give other weights, which is the mechanism. Not checked: that two CPUs of
different vendors or cache sizes give the same weights (oneDNN may still block a product by cache size); the
report's weights fingerprint is what tells.

    >>> pinned_env("pinned", flags={"avx2", "fma"})["MKL_CBWR"]
    'COMPATIBLE'
    >>> pinned_env("pinned", flags={"neon"})   # no AVX2 here: native kernels
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

KERNELS = ("pinned", "native")  # --cpu-kernels choices; the first is the default
PINNED_ENV = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "COMPATIBLE"}
_NEEDS = frozenset({"avx2", "fma"})  # what PINNED_ENV's kernels execute
# mkl_cbwr.h: the branch codes MKL_CBWR_Get returns (MKL_CBWR_STRICT is a flag on top)
_MKL_BRANCHES = {1: "OFF", 2: "AUTO", 3: "COMPATIBLE", 4: "SSE2", 6: "SSSE3", 7: "SSE4_1", 8: "SSE4_2",
                 9: "AVX", 10: "AVX2", 11: "AVX512_MIC", 12: "AVX512", 13: "AVX512_MIC_E1", 14: "AVX512_E1"}
_MKL_STRICT = 0x10000

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
    """The environment that pins the kernels: PINNED_ENV for "pinned" on a CPU with AVX2 and FMA, else {}."""
    if kernels not in KERNELS:
        raise ValueError(f"kernels: one of {', '.join(KERNELS)}, got {kernels!r}")
    if kernels == "native" or not _NEEDS <= set(cpu_flags() if flags is None else flags):
        return {}
    return dict(PINNED_ENV)


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
    return run_with_env(env, fn, *args) if env else fn(*args)


def run_with_env(env: dict[str, str], fn: Callable[..., T], *args) -> T:
    """``fn(*args)`` in a spawned process whose environment is this one's updated with ``env``; this process's
    environment is left as it was."""
    with _environment(env), concurrent.futures.ProcessPoolExecutor(
            1, mp_context=multiprocessing.get_context("spawn")) as pool:
        return pool.submit(fn, *args).result()


def mkl_branch() -> str:
    """The code branch MKL runs in this process, as MKL itself reports it (``mkl_cbwr_get``, exported by torch's
    statically linked MKL as ``mkl_serv_cbwr_get``): "OFF" (no reproducibility mode), "AUTO", "COMPATIBLE",
    "AVX2", ..., with ",STRICT" when set; "none" where torch has no MKL, "unknown" where the call is not exported."""
    import ctypes

    import torch

    if not torch.backends.mkl.is_available():
        return "none"
    try:
        get = ctypes.CDLL(str(Path(torch.__file__).parent / "lib" / "libtorch_cpu.so")).mkl_serv_cbwr_get
    except (OSError, AttributeError):
        return "unknown"
    get.restype, get.argtypes = ctypes.c_int, [ctypes.c_int]
    code = get(-1)  # MKL_CBWR_ALL: the branch and the STRICT flag
    name = _MKL_BRANCHES.get(code & ~_MKL_STRICT, f"code {code & ~_MKL_STRICT}")
    return name + (",STRICT" if code & _MKL_STRICT else "")


def kernels_in_use() -> dict[str, str]:
    """What this process runs: ATen's CPU capability as torch reports it, oneDNN's cap ("native": none set) and
    MKL's branch as MKL reports it (``mkl_branch``)."""
    import torch

    return {"aten": torch.backends.cpu.get_cpu_capability().lower(),
            "onednn": os.environ.get("ONEDNN_MAX_CPU_ISA", "native"), "mkl": mkl_branch()}


def kernels_text(kernels: dict[str, str] | None) -> str:
    """A report's kernels dict in words: "aten avx2, onednn AVX2, mkl COMPATIBLE" ("unrecorded" when absent)."""
    return ", ".join(f"{k} {v}" for k, v in (kernels or {}).items()) or "unrecorded"
