"""The backbone's precision: bf16 against fp32 on a real photo, fp32 heads and gradients, ``auto``'s fallback."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galore import Engine, ExplainOptions, ImageRequest, InvalidArgument, Precision
from galore import precision as precision_module
from galore.rows import HeadPass

from .conftest import IDENTITY_PREP, gray_pool_model, photo, quadrant_image

OPTIONS = ExplainOptions(dims=(2,), top_e=4)


def _corr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(np.corrcoef(a.flatten().numpy(), b.flatten().numpy())[0, 1])


@pytest.mark.parametrize("name", ["coffee", "rocket"])
def test_bf16_backbone_keeps_prediction_maps_and_top_insecurity_on_a_real_photo(lite_engine, monkeypatch, name):
    """On photos the model is decisive about (top-1 0.96 and 0.36 against 0.01 and 0.25). bf16 reorders near ties,
    such as chelsea's tiger cat 0.379 against Egyptian cat 0.376: that is why fp32 stays the default (BENCHMARKS.md,
    "Reduced precision")."""
    # bf16 autocast runs on every x86 CPU (emulated where AVX512_BF16/AMX are absent), so this never skips.
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: True)
    bf16 = Engine("lite0-bf16", lite_engine.split, lite_engine.labels, lite_engine.preprocess, device="cpu",
                  precision=Precision.BF16)
    request = [ImageRequest(photo(name), OPTIONS)]
    (ref,), (low,) = lite_engine.explain(request), bf16.explain(request)
    assert ref.ok and low.ok and bf16.info.precision is Precision.BF16
    assert ref.top_classes[0].class_id == low.top_classes[0].class_id
    assert abs(ref.top_classes[0].probability - low.top_classes[0].probability) < 0.05
    assert _corr(ref.attributive.region.heatmap, low.attributive.region.heatmap) >= 0.99
    assert _corr(ref.self_aware.region.heatmap, low.self_aware.region.heatmap) >= 0.99
    assert ref.deliberative[2][0].class_ids == low.deliberative[2][0].class_ids
    assert _corr(ref.deliberative[2][0].region.heatmap, low.deliberative[2][0].region.heatmap) >= 0.99


def test_head_and_gradients_are_fp32_whatever_the_backbone_precision(monkeypatch):
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: True)  # autocast bf16 runs on any CPU
    engine = Engine.from_module("tiny-bf16", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                device="cpu", precision=Precision.BF16)
    fp32 = Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                              device="cpu")
    x, _ = engine.preprocess(quadrant_image(((0.1, 0.3), (0.7, 0.9))))
    F, _ = engine._backbone(x[None])
    F32, _ = fp32._backbone(x[None])
    assert F.dtype == torch.float32 and F.is_contiguous()
    assert not torch.equal(F, F32) and torch.allclose(F, F32, atol=1e-2)  # the backbone did run in bf16
    head = HeadPass(engine.split.head, F)
    assert head.logits.dtype == torch.float32
    (grad,) = torch.autograd.grad(head.logits[:, 0].sum(), head.leaf)
    assert grad.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in engine.split.head.parameters())
    (res,) = engine.explain([ImageRequest(quadrant_image(), ExplainOptions(dims=(2,), top_e=3))])
    assert res.ok and res.attributive.region.heatmap.dtype == torch.float32
    assert res.deliberative[2][0].region.heatmap.dtype == torch.float32


def test_auto_falls_back_to_fp32_without_bf16_and_unsupported_precisions_are_refused(monkeypatch):
    cpu = torch.device("cpu")
    assert precision_module.resolve(Precision.AUTO, cpu, bf16=lambda device: False) is Precision.FP32
    assert precision_module.resolve(Precision.AUTO, cpu, bf16=lambda device: True) is Precision.BF16
    monkeypatch.setattr(precision_module, "bf16_supported", lambda device: False)
    engine = Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                device="cpu", precision=Precision.AUTO)
    assert engine.precision is Precision.FP32 and engine.info.precision is Precision.FP32
    for refused in (Precision.BF16, Precision.FP16, Precision.TF32):
        with pytest.raises(InvalidArgument) as caught:
            Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                               device="cpu", precision=refused)
        assert caught.value.field == "precision" and refused.value in caught.value.message


def test_tf32_is_an_explicit_choice_set_around_the_backbone_and_off_elsewhere():
    """cuDNN's default makes CUDA fp32 convolutions TF32; the engine sets the process's flags itself: IEEE fp32
    (FP32, the head, every gradient) or TF32 (Precision.TF32, backbone only), restored afterwards. The flags are
    plain process settings, so this runs without a GPU; off CUDA the context changes nothing."""
    conv, matmul = torch.backends.cudnn.conv, torch.backends.cuda.matmul
    before = conv.fp32_precision, matmul.fp32_precision
    cuda = torch.device("cuda")
    with precision_module.fp32_math(cuda):
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
        with precision_module.fp32_math(cuda, tf32=True):
            assert (conv.fp32_precision, matmul.fp32_precision) == ("tf32", "tf32")
        assert (conv.fp32_precision, matmul.fp32_precision) == ("ieee", "ieee")
    assert (conv.fp32_precision, matmul.fp32_precision) == before
    with precision_module.fp32_math(torch.device("cpu"), tf32=True):
        assert (conv.fp32_precision, matmul.fp32_precision) == before
    assert not precision_module.tf32_supported(torch.device("cpu"))
