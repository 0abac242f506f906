"""The backbone's number format: what the hardware supports, what ``auto`` resolves to, and the autocast context.

Only the backbone (image -> F, no autograd) runs in reduced precision. F is cast back to fp32 at the split, so the
head, every gradient and every map are fp32 computations on a (slightly different) F.

Example:
    >>> resolve(Precision.AUTO, torch.device("cpu"), bf16=lambda device: False)
    <Precision.FP32: 'fp32'>
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .errors import InvalidArgument
from .options import Precision

DTYPES = {Precision.BF16: torch.bfloat16, Precision.FP16: torch.float16}


def bf16_supported(device: torch.device) -> bool:
    """True where bf16 convolutions run natively: CUDA GPUs that report it, CPUs with AVX512_BF16 or AMX (oneDNN)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def resolve(precision: Precision, device: torch.device,
            bf16: Callable[[torch.device], bool] | None = None) -> Precision:
    """The precision to serve on ``device``: AUTO -> BF16 where ``bf16(device)`` (default: the hardware detection,
    ``bf16_supported``), else FP32. Refuses FP16 off CUDA and BF16 where unsupported (InvalidArgument naming
    ``precision``)."""
    bf16 = bf16 or bf16_supported
    if not isinstance(precision, Precision):
        raise InvalidArgument("precision", f"expected one of {[p.value for p in Precision]}, got {precision!r}")
    if precision is Precision.AUTO:
        return Precision.BF16 if bf16(device) else Precision.FP32
    if precision is Precision.FP16 and device.type != "cuda":
        raise InvalidArgument("precision", f"fp16 needs a CUDA device; this engine runs on {device.type}")
    if precision is Precision.BF16 and not bf16(device):
        raise InvalidArgument("precision", f"bf16 is not supported on this {device.type} (no AVX512_BF16/AMX "
                                           "or CUDA bf16); use fp32 or auto")
    return precision


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Context running the ops inside it in ``precision`` (a no-op for FP32)."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, DTYPES[precision])
