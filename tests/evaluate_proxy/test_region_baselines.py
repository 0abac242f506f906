"""Baseline regions of the proxy protocol (galore.evaluate.region_baselines) on a hand-built 4 x 4 working grid."""
from __future__ import annotations

import numpy as np
import pytest

from galore.evaluate import proxy
from galore.evaluate.region_baselines import baseline_curves, object_prior_values, segment_truth
from galore.options import ExplainOptions, Threshold


def ground_truth() -> proxy.GroundTruth:
    """3 parts x 3 classes. Pair similarities: part 0: (0,1) 1.0, (0,2) 0.3, (1,2) 0.3; part 1: 0.1 everywhere;
    part 2: (0,1) 0.9, else 0.2. Of the 9 (part, pair) triplets the 20 % cut keeps ceil(1.8) = 2: cut 0.9, so
    (0, 1) are ambiguous on parts 0 and 2, part 1 alone tells 0 from 1, and every part tells 0 from 2."""
    alpha = np.zeros((3, 3, 3))
    for k, (ab, ac, bc) in enumerate(((1.0, 0.3, 0.3), (0.1, 0.1, 0.1), (0.9, 0.2, 0.2))):
        alpha[k, 0, 1] = alpha[k, 1, 0] = ab
        alpha[k, 0, 2] = alpha[k, 2, 0] = ac
        alpha[k, 1, 2] = alpha[k, 2, 1] = bc
    return proxy.GroundTruth(alpha, np.ones(3, bool))


def test_object_prior_keeps_random_cells_of_the_object_first():
    """Points at cells (0, 0), (1, 1), (3, 3) of a 4 x 4 grid: nearest-other distances sqrt 2, sqrt 2, 2 sqrt 2,
    median r = sqrt 2. The object: cells within sqrt 2 of a point: rows 0-2 x cols 0-2 (9) and (2, 3), (3, 2),
    (3, 3) = 12 cells; (0, 3), (1, 3), (3, 0), (3, 1) are outside."""
    values = object_prior_values(np.array([0, 5, 15, -1]), 4, np.random.default_rng(0))
    outside = {3, 7, 12, 13}
    assert set(np.argsort(values)[::-1][:12]) == set(range(16)) - outside
    assert values[sorted(outside)].max() < 1.0 <= values[[0, 5, 15]].min()


def test_baselines_by_hand():
    gt = ground_truth()
    settings = proxy.ProxySettings(options=ExplainOptions(threshold=Threshold(coverage=0.75)),
                                   coverages=(0.75, 1.0))  # 12 and 16 of the 16 cells
    cells = np.array([0, 5, 15])  # the three parts, each seen, in three cells
    seen = np.ones(3, bool)
    deliberative = proxy.Segment("deliberative", 2, 1, "query", (0, 1), np.zeros(2), np.zeros(2), np.zeros(2),
                                 np.zeros((2, 3), bool), seen=seen, cells=cells)
    attributive = proxy.Segment("attributive", 1, 1, "query", (0, 2), np.zeros(2), np.zeros(2), np.zeros(2),
                                np.array([[True, False, False], [True, True, True]]), seen=seen, cells=cells)
    assert segment_truth(gt, deliberative).tolist() == [True, False, True]
    assert segment_truth(gt, attributive).tolist() == [True, True, True]  # 0 vs 2: every alpha < 0.9
    report = proxy.ProxyReport(settings, [1], [deliberative, attributive], {}, {})
    curves = baseline_curves(report, gt, side=4)
    # object prior: the 12 object cells hold all three parts: P = 2/3, R = 1; at 16 cells the same
    prior = curves["object_prior"]["deliberative/2"]
    assert prior["precision"] == [[pytest.approx(2 / 3)] * 2] * 3 and prior["recall"] == [[1.0, 1.0]] * 3
    # y*'s attributive region holds part 0 at the first level: P = 1, R = 1/2 against (0, 1)'s truth {0, 2}
    attr = curves["attributive"]["deliberative/2"]
    assert attr["precision"] == [[1.0, pytest.approx(2 / 3)]] and attr["recall"] == [[0.5, 1.0]]
    # random cells: 3 seeds; every cell at 16 of 16
    rnd = curves["random"]["deliberative/2"]
    assert len(rnd["precision"]) == 3 and all(p[1] == pytest.approx(2 / 3) for p in rnd["precision"])
    # the attributive segment is scored against its own truth {0, 1, 2}: every part the prior keeps is right
    assert curves["object_prior"]["attributive/1"]["precision"][0] == [1.0, 1.0]



def test_a_given_map_is_cut_and_scored_like_the_other_baselines():
    """A map (e.g. FinerCAM's) for the deliberative segment whose 12 largest cells hold part 0 (cell 0) only, and
    none for the attributive segment: P 1/1, R 1/2 against (0, 1)'s truth {0, 2} at 12 cells, 2/3 and 1 at 16."""
    gt = ground_truth()
    settings = proxy.ProxySettings(options=ExplainOptions(threshold=Threshold(coverage=0.75)),
                                   coverages=(0.75, 1.0))
    cells, seen = np.array([0, 5, 15]), np.ones(3, bool)
    segments = [proxy.Segment(kind, dim, 1, "query", classes, np.zeros(2), np.zeros(2), np.zeros(2),
                              np.zeros((2, 3), bool), seen=seen, cells=cells)
                for kind, dim, classes in (("deliberative", 2, (0, 1)), ("attributive", 1, (0, 2)))]
    values = np.arange(16, 0, -1, dtype=float)  # cell 0 largest ... cell 15 smallest
    values[5] = 0.5  # part 1's cell below the cut of 12
    report = proxy.ProxyReport(settings, [1], segments, {}, {})
    curves = baseline_curves(report, gt, side=4, maps={"finer_cam": {(1, "deliberative", (0, 1)): values}})
    cam = curves["finer_cam"]
    assert set(cam) == {"deliberative/2"}  # no map for the attributive segment: not scored
    assert cam["deliberative/2"]["precision"] == [[1.0, pytest.approx(2 / 3)]]  # one curve, not one per seed
    assert cam["deliberative/2"]["recall"] == [[0.5, 1.0]]
