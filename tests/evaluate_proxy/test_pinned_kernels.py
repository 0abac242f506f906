"""galore_cli.pinned_kernels: the spawned process really runs torch and oneDNN capped at AVX2 and MKL on its
COMPATIBLE branch (as MKL itself reports it), this process's environment is left as it was, and errors come back
as raised."""
from __future__ import annotations

import os

import pytest

from galore.classifier_training import ClassifierTraining
from galore.errors import InvalidArgument

from galore_cli.pinned_kernels import (PINNED_ENV, cpu_flags, kernels_in_use, mkl_branch, pinned_env, run_pinned,
                                       run_with_env)

HAS_AVX2 = {"avx2", "fma"} <= cpu_flags()


def test_pinned_process_runs_the_pinned_kernels_and_leaves_this_environment_alone():
    before = {k: os.environ.get(k) for k in PINNED_ENV}
    in_use = run_pinned("pinned", kernels_in_use)
    assert {k: os.environ.get(k) for k in PINNED_ENV} == before
    if HAS_AVX2:  # every x86 CI machine: ATen and MKL report the pinned kernels, oneDNN's cap is in the child's env
        assert in_use == {"aten": "avx2", "onednn": "AVX2", "mkl": "COMPATIBLE"}
    else:  # no AVX2 (or not x86): this process, the CPU's own kernels
        assert in_use == kernels_in_use()


def test_native_runs_here_and_errors_come_back_as_raised():
    assert run_pinned("native", os.getpid) == os.getpid()
    if HAS_AVX2:
        assert run_pinned("pinned", os.getpid) != os.getpid()
    with pytest.raises(ValueError, match="invalid literal"):
        run_pinned("pinned", int, "not a number")
    with pytest.raises(InvalidArgument, match="epochs") as raised:  # the project's errors come back whole
        run_pinned("pinned", ClassifierTraining, "mobilenet_v3_small", None, 0)
    assert raised.value.field == "epochs"


def test_pinned_env_needs_avx2_and_fma_and_a_known_choice():
    assert pinned_env("pinned", flags={"avx2", "fma", "sse4_2"}) == PINNED_ENV
    assert pinned_env("pinned", flags={"avx2"}) == {}  # AVX2 without FMA: oneDNN's AVX2 kernels need both
    assert pinned_env("native", flags={"avx2", "fma"}) == {}
    with pytest.raises(ValueError, match="kernels"):
        pinned_env("avx512", flags={"avx2", "fma"})


def test_mkl_branch_is_what_mkl_runs_not_what_was_asked():
    """MKL reads MKL_CBWR once, at its first call: a child started with a branch reports that branch (or, for an
    instruction-set branch on a non-Intel CPU, AUTO: why the pinned environment asks for COMPATIBLE)."""
    import torch

    if not torch.backends.mkl.is_available():
        assert mkl_branch() == "none"
        return
    assert mkl_branch() in ({"OFF"} if "MKL_CBWR" not in os.environ else {os.environ["MKL_CBWR"], "AUTO"})
    strict = run_with_env({"MKL_CBWR": "COMPATIBLE,STRICT"}, mkl_branch)
    assert strict in ("COMPATIBLE,STRICT", "COMPATIBLE")  # STRICT applies to some branches only
    assert run_with_env({"MKL_CBWR": "AVX2"}, mkl_branch) in ("AVX2", "AUTO")  # AUTO: a non-Intel CPU

