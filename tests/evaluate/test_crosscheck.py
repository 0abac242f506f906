"""The deletion curve cross-checked against an existing implementation: pytorch-grad-cam's perturbation metric
(``PerturbationConfidenceMetric`` + ``RemoveMostRelevantFirst``, the machinery of its ROAD metric) given the same
map, the same blurred baseline as imputer and the softmax probability of the same class.

Tolerance: 1e-4 in probability. Both remove the same pixels here (a tie-free map; grad-cam keeps pixels below
np.percentile(map, p), which at these percentiles of 224 x 224 pixels removes round((1 - p / 100) * 50176), our
count), so the difference is float32 arithmetic: batched versus single forwards and the imputer's blend.
"""
from __future__ import annotations

import numpy as np
import torch
from pytorch_grad_cam.metrics.perturbation_confidence import PerturbationConfidenceMetric, RemoveMostRelevantFirst
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget

from galore.evaluate import Baseline, Scorer
from galore.evaluate.common import baseline, pixel_order, sample_photos, seeded
from galore.evaluate.deletion import probabilities

PERCENTILES = (90, 70, 50, 30, 10)
TOLERANCE = 1e-4


def test_deletion_points_match_pytorch_grad_cam(lite_engine):
    scorer = Scorer.of(lite_engine)
    x = scorer.input(sample_photos(["chelsea"])[0].image)
    base = baseline(x, Baseline.BLUR)
    y = int(scorer.logits(x[None])[0].argmax())
    n = x.shape[-1] * x.shape[-2]
    saliency = (torch.randperm(n, generator=seeded("cross-check")).float() / n).view(x.shape[-2:])  # no ties

    counts = [int(round((1 - p / 100) * n)) for p in PERCENTILES]
    ours = probabilities(scorer, x, pixel_order(saliency, seeded("order")), base, y, counts)

    model = torch.nn.Sequential(scorer.split.backbone, scorer.split.head).eval()
    theirs = []
    for p in PERCENTILES:
        keep_below = float(np.percentile(saliency.numpy(), p))
        assert int((saliency >= keep_below).sum()) == counts[PERCENTILES.index(p)]
        remove = RemoveMostRelevantFirst(p, lambda img, keep: img * keep + base * (1 - keep))
        metric = PerturbationConfidenceMetric(remove)
        theirs.append(float(metric(x[None], saliency[None].numpy(), [ClassifierOutputSoftmaxTarget(y)], model,
                                   return_diff=False)[0]))
    np.testing.assert_allclose(ours, theirs, atol=TOLERANCE, rtol=0)
    assert ours[0] > ours[-1] - 1.0  # a real curve: probabilities in [0, 1]
    assert all(0.0 <= v <= 1.0 for v in ours)
