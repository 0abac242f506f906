"""The generator's ground truth in the protocol's form (synthetic_truth.ConstructionTruth), and regions re-scored
against it (region_baselines.segment_curves)."""
from __future__ import annotations

from itertools import combinations

import numpy as np
import pytest

from galore.evaluate import proxy
from galore.evaluate.region_baselines import segment_curves
from galore.evaluate.synthetic import SyntheticConfig, design
from galore.evaluate.synthetic_truth import ConstructionTruth


def test_construction_truth_is_the_designs():
    d = design(SyntheticConfig(num_classes=6, family_size=3, seed=0))
    truth = ConstructionTruth(d)
    for t in combinations(range(6), 2):
        assert truth.insecure_parts(t).tolist() == d.shared_parts(t).tolist()
        assert truth.discriminant_parts(t[0], [t[1]]).tolist() == (~d.shared_parts(t)).tolist()
    for t in combinations(range(6), 3):  # shared by all three = shared by every pair of them
        assert truth.insecure_parts(t).tolist() == d.shared_parts(t).tolist()
    a, b, c = 0, 1, 2  # a against two others: the parts a has apart from both
    want = ~d.shared_parts((a, b)) & ~d.shared_parts((a, c))
    assert truth.discriminant_parts(a, [b, c]).tolist() == want.tolist()


def test_segment_curves_rescore_by_hand():
    """Two parts; the truth says classes 0 and 1 share part 0 only. An insecurity (0, 1) whose region holds part 0
    at the first level and both at the second: P 1, 1/2; R 1, 1. A counterfactual (0 vs 1) holding part 0: its
    truth is part 1, P 0, R 0."""
    alpha = np.zeros((2, 2, 2))
    alpha[0, 0, 1] = alpha[0, 1, 0] = 1.0

    class Truth(proxy.GroundTruth):
        def cut(self, v):
            return 1.0

    gt = Truth(alpha, np.ones(2, bool))
    seen = np.ones(2, bool)
    ins = proxy.Segment("deliberative", 2, 1, "query", (0, 1), np.zeros(2), np.zeros(2), np.zeros(2),
                        np.array([[True, False], [True, True]]), seen=seen, cells=np.array([0, 1]))
    cf = proxy.Segment("counterfactual", 1, 1, "query", (0, 1), np.zeros(2), np.zeros(2), np.zeros(2),
                       np.array([[True, False], [True, False]]), seen=seen, cells=np.array([0, 1]))
    settings = proxy.ProxySettings(coverages=(0.1, 0.5))
    out = segment_curves(proxy.ProxyReport(settings, [1], [ins, cf], {}, {}), gt)
    assert out["deliberative/2"] == {"precision": [1.0, pytest.approx(0.5)], "recall": [1.0, 1.0]}
    assert out["counterfactual/1"] == {"precision": [0.0, 0.0], "recall": [0.0, 0.0]}
