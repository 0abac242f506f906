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
    """True where bf16 convolutions run natively: the engine's CUDA GPU when it has bf16 units (emulation, as on
    pre-Ampere GPUs, does not count), CPUs with AVX512_BF16 or AMX (oneDNN)."""
    if device.type == "cuda":
        with torch.cuda.device(device):
            return torch.cuda.is_bf16_supported(including_emulation=False)
    if device.type == "cpu":
        return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return False


def tf32_supported(device: torch.device) -> bool:
    """True on CUDA GPUs of compute capability 8.0 (Ampere) or newer, which have TensorFloat-32 units."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device) >= (8, 0)


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
    if precision is Precision.TF32 and not tf32_supported(device):
        raise InvalidArgument("precision", f"tf32 needs a CUDA GPU of compute capability 8.0 or newer; this engine "
                                           f"runs on {device}")
    if precision is Precision.BF16 and not bf16(device):
        raise InvalidArgument("precision", f"bf16 is not supported on this {device.type} (no AVX512_BF16/AMX "
                                           "or CUDA bf16); use fp32 or auto")
    return precision


def autocast(precision: Precision, device: torch.device) -> contextlib.AbstractContextManager:
    """Context running the ops inside it in ``precision`` (a no-op for FP32 and TF32: fp32 tensors)."""
    if precision not in DTYPES:
        return contextlib.nullcontext()
    return torch.autocast(device.type, DTYPES[precision])


@contextlib.contextmanager
def fp32_math(device: torch.device, tf32: bool = False):
    """Context in which fp32 convolutions and matmuls on ``device`` run as IEEE fp32 (default) or, with ``tf32``,
    in TensorFloat-32: an explicit choice, never cuDNN's default (TF32 convolutions). The flags are the process's
    (``torch.backends.cudnn.conv`` / ``cuda.matmul.fp32_precision``), restored on exit; nothing happens off CUDA."""
    if device.type != "cuda":
        yield
        return
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    conv.fp32_precision = matmul.fp32_precision = "tf32" if tf32 else "ieee"
    try:
        yield
    finally:
        conv.fp32_precision, matmul.fp32_precision = before
