"""Every formula of Table I / eq. (2) on a 2 x 2 feature map with a linear head, against closed forms.

F = [[0.2, 0.4], [0.6, 0.8]], logits = W F_flat = (6.0, 4.0, 0.9): y* = 0, runner-up 1. With a linear head the
gradient x activation of logit c is W_c * F (eq. 18), and of the softmax score s = p_0 (eq. 21) it is
p_0 (W_0 - sum_c p_c W_c) * F.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galore import Attribution, ExplainOptions, ImageRequest, Kind, Target, Threshold
from galore.kinds import UNITS, KindMaps, Plan, Prediction, measure_batch
from galore.exemplars import Features
from galore.preprocess import Preprocess, upsample_to_original
from galore.regions import WorkingGrid
from galore.results import ImageResult

from .conftest import IDENTITY_PREP, W, quadrant_image
from .reference_regions import regions

F = np.array([0.2, 0.4, 0.6, 0.8])
Wn = W.double().numpy()
LOGITS = Wn @ F
P = np.exp(LOGITS) / np.exp(LOGITS).sum()


def a_logit(c, f=F):
    return (Wn[c] * f).reshape(2, 2)


def a_softmax_score(f=F):
    logits = Wn @ f
    p = np.exp(logits) / np.exp(logits).sum()
    y = int(p.argmax())
    return (p[y] * (Wn[y] - p @ Wn) * f).reshape(2, 2)


def relu(x):  # confidence maps: positive channel contributions only (one channel here)
    return np.maximum(x, 0)


def clipc(x):  # class maps: negative attributions become 1e-7, as in the authors' code
    return np.where(x < 0, 1e-7, x)


def comp(x, *shared):  # eq. (10), the engine's rule (combiner.COMPLEMENT, SHARED): against M, the largest value
    return max([x.max()] + [m.max() for m in shared]) - x  # of the maps of y* and C together


def explain(engine, image=None, **opts):
    (res,) = engine.explain([ImageRequest(quadrant_image() if image is None else image, ExplainOptions(**opts))])
    assert res.error is None, res.error
    return res


def grid(region):
    return region.heatmap.double().numpy()


def test_logits_and_prediction(tiny_engine):
    assert LOGITS.tolist() == pytest.approx([6.0, 4.0, 0.9])
    res = explain(tiny_engine, kinds=frozenset())
    assert [c.class_id for c in res.top_classes] == [0, 1, 2]
    assert [c.probability for c in res.top_classes] == pytest.approx(P.tolist(), rel=1e-5)
    assert res.score == pytest.approx(P.max(), rel=1e-6)  # eq. (21)


def test_attributive_eq3(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}))
    np.testing.assert_allclose(grid(res.attributive.region), [[0.2, 0.8], [1.8, 3.2]], rtol=1e-5)


def test_self_aware_eq4(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.SELF_AWARE}))
    np.testing.assert_allclose(grid(res.self_aware.region), clipc(a_logit(0)) * relu(a_softmax_score()),
                               rtol=1e-4, atol=1e-7)


def test_deliberative_eq5_eq12_use_one_minus_s(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.DELIBERATIVE}), top_e=3, dims=(2, 3), max_insecurities=3)
    inverse = relu(-a_softmax_score())  # a(1 - s) = -a(s) before clipping: Table I's s <- 1 - s
    assert inverse.max() > 0 and relu(a_softmax_score()).max() > 0
    pairs = {ins.class_ids: grid(ins.region) for ins in res.deliberative[2]}
    assert set(pairs) == {(0, 1), (0, 2), (1, 2)}  # all V-subsets of the top-E classes
    np.testing.assert_allclose(pairs[(0, 1)], clipc(a_logit(0)) * clipc(a_logit(1)) * inverse, rtol=1e-4, atol=1e-8)
    (triple,) = res.deliberative[3]
    assert triple.class_ids == (0, 1, 2)
    expected = clipc(a_logit(0)) * clipc(a_logit(1)) * clipc(a_logit(2)) * inverse  # eq. (12)
    assert a_logit(2)[0, 1] < 0 < expected[0, 1]  # a negative class attribution damps the product, never zeroes it
    np.testing.assert_allclose(grid(triple.region), expected, rtol=1e-4, atol=1e-8)
    strengths = [ins.region.strength for ins in res.deliberative[2]]
    assert strengths == sorted(strengths, reverse=True)


def test_counterfactual_eq10_eq11_runner_up(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.COUNTERFACTUAL}))
    cf = res.counterfactual
    assert (cf.predicted_id, cf.counter_ids, cf.complete) == (0, (1,), False)
    expected = clipc(a_logit(0)) * comp(clipc(a_logit(1)), clipc(a_logit(0))) * relu(a_softmax_score())  # eq. (11)
    np.testing.assert_allclose(grid(cf.query), expected, rtol=1e-4, atol=1e-8)
    assert cf.exemplars[0].region is None and "no exemplar" in cf.exemplars[0].missing_reason
    assert cf.strength == pytest.approx(cf.query.strength)


def test_multiclass_counterfactual_eq14_eq17_equal_masks(tiny_engine):
    ex1 = quadrant_image(((0.8, 0.2), (0.2, 0.2)))  # multiples of 51 / 255: exact in uint8
    ex2 = torch.nn.functional.pad(quadrant_image(((0.2, 0.8), (0.6, 0.2))), (1, 1))  # 4 x 6, non-square
    req = ImageRequest(quadrant_image(), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(1, 2),
                                                        threshold=Threshold(coverage=3 / 16)),  # 3 cells, no ties
                       exemplars={1: ex1, 2: ex2})
    (res,) = tiny_engine.explain([req])
    cf = res.counterfactual
    a0, a1, a2 = (clipc(a_logit(c)) for c in range(3))
    expected = a0 * comp(a1, a0, a2) * comp(a2, a0, a1) * relu(a_softmax_score())
    np.testing.assert_allclose(grid(cf.query), expected, rtol=1e-4, atol=1e-8)
    # exemplar side v: D(x^v, y^v, C'_v), C'_v = C \ {y^v} + {y*}, with x^v's own s(x^v) (eq. 13)
    f1 = np.array([0.8, 0.2, 0.2, 0.2])
    b0, b1, b2 = (clipc(a_logit(c, f1)) for c in range(3))
    side1 = b1 * comp(b2, b0, b1) * comp(b0, b1, b2) * relu(a_softmax_score(f1))
    np.testing.assert_allclose(grid(cf.exemplars[0].region), side1, rtol=1e-4, atol=1e-8)
    counts = {cf.query.pixel_count} | {e.region.pixel_count for e in cf.exemplars}
    assert len(counts) == 1 and counts.pop() > 0  # equal-size masks, note under eq. (16)
    sides = [cf.query] + [e.region for e in cf.exemplars]
    assert cf.complete and cf.strength == pytest.approx(sum(r.strength for r in sides) / 3)  # eq. (17), V = 2
    assert cf.exemplars[1].region.mask.shape == (4, 6)


def test_counterfactual_eq16_two_sides(tiny_engine):
    ex = quadrant_image(((0.8, 0.2), (0.2, 0.2)))
    (res,) = tiny_engine.explain([ImageRequest(quadrant_image(), ExplainOptions(
        kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(1,), threshold=Threshold(coverage=0.2)),
        exemplars={1: ex})])
    cf = res.counterfactual
    assert cf.query.pixel_count == cf.exemplars[0].region.pixel_count == round(0.2 * 4 * 4)
    assert cf.strength == pytest.approx((cf.query.strength + cf.exemplars[0].region.strength) / 2)


def test_probability_target_and_gradcam_and_ig(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}), target=Target.PROBABILITY)
    expected = P[0] * (Wn[0] - P @ Wn) * F  # d h_0 / dF times F
    np.testing.assert_allclose(grid(res.attributive.region), clipc(expected.reshape(2, 2)), rtol=1e-4, atol=1e-8)
    res = explain(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}), attribution=Attribution.GRAD_CAM)
    np.testing.assert_allclose(grid(res.attributive.region), Wn[0].mean() * F.reshape(2, 2), rtol=1e-5)  # eq. (20)
    res = explain(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}), attribution=Attribution.INTEGRATED_GRADIENTS)
    np.testing.assert_allclose(grid(res.attributive.region), a_logit(0), rtol=1e-5)  # linear: IG = grad x act


def test_minmax_normalisation_option(tiny_engine):
    res = explain(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}), normalize=True)
    a = a_logit(0)
    np.testing.assert_allclose(grid(res.attributive.region), (a - a.min()) / (a.max() - a.min()), rtol=1e-5)


def test_strength_eq15_is_mean_inside_mask():
    _, geo = Preprocess(resize=224, crop=224)(torch.zeros(3, 224, 224, dtype=torch.uint8))
    heat = torch.tensor([[4.0, 0.0], [0.0, 0.0]])
    (region,) = regions(heat[None], geo, Threshold(coverage=56 * 56 / 224 ** 2))
    # pixel centres left of / above the top-left cell centre are clamped to its value: exactly 4 there
    assert region.pixel_count == 56 * 56 and region.bbox == (0, 0, 56, 56)
    assert region.strength == pytest.approx(4.0)
    values, _ = upsample_to_original(heat, geo)
    (region,) = regions(heat[None], geo, Threshold(absolute=0.5))
    assert region.strength == pytest.approx(float(values[region.mask].mean()))
    assert bool((values[region.mask] / 4 > 0.5).all()) and int((values / 4 > 0.5).sum()) == region.pixel_count


def test_equal_size_side_without_evidence_is_empty():
    """Counterfactual sides keep the query's cell count; a side without any positive cell keeps none."""
    geo = Preprocess(resize=4, crop=4)(quadrant_image())[1]
    query, side = torch.tensor([[1.0, 2.0], [0.0, 3.0]]), torch.zeros(2, 2)
    opts = ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(1, 2),
                          threshold=Threshold(coverage=0.5))
    feats = Features(torch.zeros(1, 2, 2), None, geo)
    pred = Prediction(0, torch.tensor([0.5, 0.3, 0.2]), (0, 1, 2), (1, 2), {1: "a", 2: "b"}, 0)
    maps = KindMaps(query[None], [Kind.COUNTERFACTUAL], torch.ones(1, dtype=torch.bool), ["query and sides"],
                    sides=torch.stack([side, query / 2]), paired=0, side_keys=[1, 2], side_feats=[feats, feats])
    plan = Plan([(UNITS[Kind.COUNTERFACTUAL], maps)])
    result = ImageResult()
    measure_batch(WorkingGrid(4, 4), [(opts, pred, plan, feats)], ("zero", "one", "two"), [result])
    cf = result.counterfactual
    assert (cf.query.pixel_count, cf.exemplars[0].region.pixel_count, cf.exemplars[0].region.strength) == (8, 0, 0.0)
    assert cf.exemplars[1].region.pixel_count == 8 and bool((cf.exemplars[1].region.cells == cf.query.cells).all())


def test_confidence_maps_keep_positive_channel_contributions():
    """Authors' hardness attribution: gradients are clipped per channel before summing. Channel contributions
    (+3, -1) at one location give a(s) = 3 and a(1 - s) = 1, where the summed map would give 2 and 0."""
    from galore.rows import class_maps as _class_maps, score_maps as _score_maps

    raw = torch.tensor([3.0, -1.0]).reshape(1, 2, 1, 1)  # (R, D, h, w)
    pos, neg = _score_maps(raw, clip=True, normalize=False, size=torch.Size([1, 1]))
    assert (float(pos), float(neg)) == (3.0, 1.0)
    pos, neg = _score_maps(raw.sum(1), clip=False, normalize=False, size=torch.Size([1, 1]))  # paper: signed sum
    assert (float(pos), float(neg)) == (2.0, -2.0)
    classes = _class_maps(torch.tensor([-2.0]).reshape(1, 1, 1, 1), clip=True, normalize=False)
    assert float(classes) == pytest.approx(1e-7)  # summed -2 -> the ~0 floor
