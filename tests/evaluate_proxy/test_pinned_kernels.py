"""galore_cli.pinned_kernels: the spawned process really runs with torch, oneDNN and MKL pinned to AVX2, this
process's environment is left as it was, and errors come back as raised."""
from __future__ import annotations

import os

import pytest

from galore_cli.pinned_kernels import AVX2_ENV, cpu_flags, kernels_in_use, pinned_env, run_pinned

HAS_AVX2 = {"avx2", "fma"} <= cpu_flags()


def test_pinned_process_runs_avx2_kernels_and_leaves_this_environment_alone():
    before = {k: os.environ.get(k) for k in AVX2_ENV}
    in_use = run_pinned("avx2", kernels_in_use)
    assert {k: os.environ.get(k) for k in AVX2_ENV} == before
    if HAS_AVX2:  # every x86 CI machine: ATen reports the pinned capability, the caps are in the child's env
        assert in_use == {"aten": "avx2", "onednn": "AVX2", "mkl": "AVX2"}
    else:  # no AVX2 (or not x86): this process, the CPU's own kernels
        assert in_use == kernels_in_use()


def test_native_runs_here_and_errors_come_back_as_raised():
    assert run_pinned("native", os.getpid) == os.getpid()
    if HAS_AVX2:
        assert run_pinned("avx2", os.getpid) != os.getpid()
    with pytest.raises(ValueError, match="invalid literal"):
        run_pinned("avx2", int, "not a number")


def test_pinned_env_needs_avx2_and_fma_and_a_known_choice():
    assert pinned_env("avx2", flags={"avx2", "fma", "sse4_2"}) == AVX2_ENV
    assert pinned_env("avx2", flags={"avx2"}) == {}  # AVX2 without FMA: oneDNN's AVX2 kernels need both
    assert pinned_env("native", flags={"avx2", "fma"}) == {}
    with pytest.raises(ValueError, match="kernels"):
        pinned_env("avx512", flags={"avx2", "fma"})
