"""Issue 11 semantics, by value through ``Engine.explain``: the explained class, counterfactual masks of equal
size where the model looks, m^beta for a counter class without evidence, the absolute threshold's shared scale,
the exemplar bank and its policies, and the paths that had no value test (certainty maps, signed maps,
normalisation, gradient-Hessian on a nonlinear head).

Closed forms use the 2 x 2 linear model of test_hand_computed (F = [[0.2, 0.4], [0.6, 0.8]], logits (6, 4, 0.9)).
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from galore import (Attribution, Engine, ExemplarPolicy, ExplainOptions, ImageRequest, Kind, Score, Threshold)
from galore.preprocess import Preprocess

from .conftest import IDENTITY_PREP, gray_pool_model, quadrant_image
from .test_hand_computed import F, LOGITS, P, Wn, a_logit, a_softmax_score, clipc, relu

LABELS = ["zero", "one", "two"]


def run(engine, image=None, exemplars=None, **opts):
    (res,) = engine.explain([ImageRequest(quadrant_image() if image is None else image, ExplainOptions(**opts),
                                          exemplars=exemplars or {})])
    assert res.error is None, res.error
    return res


def heat(region):
    return region.heatmap.double().numpy()


def minmax(x):
    return (x - x.min()) / (x.max() - x.min())


def tiny(weights=None):
    model = gray_pool_model() if weights is None else gray_pool_model(weights=weights)
    return Engine.from_module("tiny", model, LABELS, IDENTITY_PREP, layer="1", device="cpu")


# ---- item 1: explain any class ------------------------------------------------------------------------------------
def test_explained_class_replaces_the_prediction_in_attributive_and_self_aware(tiny_engine):
    res = run(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE, Kind.SELF_AWARE, Kind.COUNTERFACTUAL}),
              explained_class=2)
    assert res.top_classes[0].class_id == 0  # y* is still class 0
    assert (res.attributive.class_id, res.self_aware.class_id) == (2, 2)
    assert res.attributive.probability == pytest.approx(P[2], rel=1e-5)
    np.testing.assert_allclose(heat(res.attributive.region), clipc(a_logit(2)), rtol=1e-5, atol=1e-8)  # eq. (3)
    np.testing.assert_allclose(heat(res.self_aware.region), clipc(a_logit(2)) * relu(a_softmax_score()),
                               rtol=1e-4, atol=1e-9)  # eq. (4)
    assert res.counterfactual.predicted_id == 0  # the counterfactual still explains y*
    default = run(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}))
    assert default.attributive.class_id == 0 and default.attributive.probability == pytest.approx(P[0], rel=1e-5)


def test_unknown_explained_class_is_invalid_argument_naming_the_field(tiny_engine):
    (res,) = tiny_engine.explain([ImageRequest(quadrant_image(), ExplainOptions(explained_class=3, top_e=3))])
    assert res.error.code == "INVALID_ARGUMENT" and res.error.field == "options.explained_class"


# ---- item 2: equal size where the model looks ---------------------------------------------------------------------
def test_counterfactual_sides_equal_in_the_space_the_model_sees():
    """Query 4 x 4 (scale 1) and an exemplar of 16 x 24 (scale 4, aspect 2:3): both keep the same number of
    working-grid cells, i.e. the same fraction of their own crop; in original pixels the exemplar's region is
    4 x 4 = 16 times larger, as its scale says."""
    engine = tiny()
    small = quadrant_image(((0.8, 0.2), (0.2, 0.2)))
    exemplar = small.repeat_interleave(4, 1).repeat_interleave(4, 2)  # 16 x 16
    exemplar = torch.nn.functional.pad(exemplar, (4, 4), value=51)  # 16 x 24: the crop is its centre 16 x 16
    res = run(engine, kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(1,), exemplars={1: exemplar},
              threshold=Threshold(coverage=4 / 16))
    cf = res.counterfactual
    side = cf.exemplars[0].region
    assert side.mask.shape == (16, 24)
    assert int(cf.query.cells.sum()) == int(side.cells.sum()) == 4  # 25 % of each crop
    assert cf.query.pixel_count == 4 and side.pixel_count == 16 * 4
    x0, y0, x1, y1 = side.bbox
    assert 4 <= x0 and x1 <= 20  # inside the exemplar's centre crop


# ---- item 3: m^beta for a counter class without evidence ----------------------------------------------------------
def test_complement_is_eq10_per_map_and_one_without_evidence():
    """m^beta of eq. (10) on hand-built maps (2 counter classes, 2 x 2): with the per-map rule a class with evidence
    is taken against its OWN max, whatever y*'s peak; a class whose max is at the clip floor gets 1 everywhere."""
    from galore.combiner import Complement, complement
    from galore.rows import CLIP_FLOOR
    a = torch.tensor([[[1.0, 3.0], [0.5, 2.0]],  # evidence, max 3 -> [[2, 0], [2.5, 1]]
                      [[CLIP_FLOOR, CLIP_FLOOR], [CLIP_FLOOR, CLIP_FLOOR]]])  # no evidence -> 1
    pred = torch.tensor([[10.0, 0.0], [0.0, 0.0]])  # y* peaks far higher: irrelevant to eq. (10)
    out = complement(a, pred, Complement.PER_MAP)
    torch.testing.assert_close(out, torch.tensor([[[2.0, 0.0], [2.5, 1.0]], [[1.0, 1.0], [1.0, 1.0]]]))
    minmax_map = torch.tensor([[[0.0, 1.0], [0.25, 0.5]]])  # min-max normalised: max 1, eq. (10) is 1 - a
    torch.testing.assert_close(complement(minmax_map, pred, Complement.PER_MAP), 1 - minmax_map)
    negative = torch.tensor([[[-2.0, -1.0], [-3.0, -0.5]]])  # signed (no clipping), all negative: no evidence
    torch.testing.assert_close(complement(negative, pred, Complement.PER_MAP), torch.ones_like(negative))
    batched = torch.stack([a, a.flip(0)])  # leading dims batch class sets: each map still its own max
    torch.testing.assert_close(complement(batched, torch.stack([pred, pred]), Complement.PER_MAP),
                               torch.stack([out, out.flip(0)]))


def test_complement_shared_scale_by_hand():
    """The shared rule: one M per discriminant map, the largest value of y*'s map and every counter map
    (here y*'s 10): M - a for both classes, so the class without evidence gets ~M, not 1."""
    from galore.combiner import Complement, complement
    a = torch.tensor([[[1.0, 3.0], [0.5, 2.0]], [[0.0, 0.0], [0.0, 0.0]]])
    pred = torch.tensor([[10.0, 0.0], [0.0, 0.0]])
    torch.testing.assert_close(complement(a, pred, Complement.SHARED), 10.0 - a)
    torch.testing.assert_close(complement(a, torch.zeros(2, 2), Complement.SHARED), 3.0 - a)  # y* lower: max of C


def test_counterfactual_against_a_class_without_evidence_keeps_y_star_evidence(monkeypatch):
    """Class 2 has only negative weights: with F > 0 its map is all negative, clipped to 1e-7 (no evidence).
    Shared rule (the default): m^beta against the scale M shared by y* and C is ~M everywhere, so
    D(x, y*, 2) = M a(h_y*) a(s). Per-map rule: eq. (10)'s fallback gives m^beta = 1, D = a(h_y*) a(s). Either way
    the self-aware map of y* (eq. 4) up to a constant, with the same region, instead of a map of zeros."""
    from galore import combiner
    weights = torch.tensor([[1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0], [-1.0, -0.5, -2.0, -1.0]])
    engine = tiny(weights)
    w = weights.double().numpy()
    a0 = w[0] * F
    logits = w @ F
    p = np.exp(logits) / np.exp(logits).sum()
    a_s = relu(p[0] * (w[0] - p @ w) * F).reshape(2, 2)
    for rule, scale in ((combiner.Complement.SHARED, a0.max() - 1e-7), (combiner.Complement.PER_MAP, 1.0)):
        monkeypatch.setattr(combiner, "COMPLEMENT", rule)
        res = run(engine, kinds=frozenset({Kind.COUNTERFACTUAL, Kind.SELF_AWARE}), counter_classes=(2,))
        cf, aware = res.counterfactual, res.self_aware
        np.testing.assert_allclose(heat(cf.query), a0.reshape(2, 2) * scale * a_s, rtol=1e-4)
        assert cf.query.strength > 0 and cf.query.pixel_count > 0
        assert np.array_equal(cf.query.cells, aware.region.cells)  # the same region as y*'s self-aware one


def test_counterfactual_against_a_weaker_counter_class_by_rule(monkeypatch):
    """y*'s peak (a(h_0) = [0.2, 0.8, 1.8, 3.2]) is above the counter class's (W_2 F = [0.1, -0.4, 1.2, 0], clipped:
    peak 1.2). Per map (eq. 10 as written) class 2 is taken against its own peak 1.2; the shared scale (3.2) adds
    (3.2 - 1.2) a(h_y*) a(s), a multiple of the self-aware map."""
    from galore import combiner
    a0, a2 = clipc(a_logit(0)), clipc(a_logit(2))
    assert a0.max() > a2.max()
    expected = {combiner.Complement.PER_MAP: a0 * (a2.max() - a2) * relu(a_softmax_score()),
                combiner.Complement.SHARED: a0 * (a0.max() - a2) * relu(a_softmax_score())}
    np.testing.assert_allclose(expected[combiner.Complement.SHARED] - expected[combiner.Complement.PER_MAP],
                               (a0.max() - a2.max()) * a0 * relu(a_softmax_score()), atol=1e-12)
    for rule, want in expected.items():
        monkeypatch.setattr(combiner, "COMPLEMENT", rule)
        res = run(tiny(), kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(2,))
        np.testing.assert_allclose(heat(res.counterfactual.query), want, rtol=1e-4, atol=1e-9)


# ---- item 4: the absolute threshold's shared scale ----------------------------------------------------------------
def test_absolute_threshold_drops_a_weak_insecurity():
    """T is applied against the largest value of ALL insecurities of the image: a pair whose own peak is below
    T x that value keeps no cell and is not returned, while each map divided by its own max would keep cells."""
    engine = tiny()
    inverse = relu(-a_softmax_score())
    maps = {pair: clipc(a_logit(pair[0])) * clipc(a_logit(pair[1])) * inverse for pair in [(0, 1), (0, 2), (1, 2)]}
    peak = max(m.max() for m in maps.values())
    ratios = {pair: m.max() / peak for pair, m in maps.items()}
    weak = min(ratios, key=ratios.get)
    T = (ratios[weak] + sorted(ratios.values())[1]) / 2  # between the weakest and the next
    assert 0 < T < 1
    res = run(engine, kinds=frozenset({Kind.DELIBERATIVE}), top_e=3, dims=(2, 3), threshold=Threshold(absolute=T))
    kept = {ins.class_ids: ins for ins in res.deliberative[2]}
    assert weak not in kept and len(kept) == 2
    assert len(res.deliberative[3]) == 1  # triples have their own scale: the only triple is its own M
    # on the 4 x 4 working grid the corner cells carry the feature-grid values exactly (border clamp)
    for pair, ins in kept.items():
        up = engine.grid.upsample(torch.tensor(maps[pair], dtype=torch.float32)[None])[0].double().numpy()
        assert np.array_equal(ins.region.cells, up > T * peak)
    # the old rule (each map against its own max) would have kept the weak pair
    up = engine.grid.upsample(torch.tensor(maps[weak], dtype=torch.float32)[None])[0]
    assert int((up > T * up.max()).sum()) > 0


def test_absolute_threshold_single_map_is_its_own_scale(tiny_engine):
    res = run(tiny_engine, kinds=frozenset({Kind.ATTRIBUTIVE}), threshold=Threshold(absolute=0.5))
    a = torch.tensor(clipc(a_logit(0)), dtype=torch.float32)[None]
    up = tiny_engine.grid.upsample(a)[0]
    assert np.array_equal(res.attributive.region.cells, (up > 0.5 * up.max()).numpy())


# ---- issue 21: an insecurity needs shared evidence ----------------------------------------------------------------
DISJOINT = torch.tensor([[4.0, 4.0, -1.0, -1.0],  # class 0: evidence in cells 0, 1 (logit 1.0)
                         [-1.0, -1.0, 2.0, 2.0],  # class 1: evidence in cells 2, 3 only (logit 2.2, y*)
                         [3.0, 3.0, -1.0, -1.0]])  # class 2: evidence in cells 0, 1, shared with class 0 (logit 0.4)


def test_insecurities_need_shared_evidence_disjoint_classes():
    """Class 1 (y*) has evidence where classes 0 and 2 have none: the pairs (1, 0) and (1, 2) and the triple are
    products with a clip-floor factor in every cell (eq. 5 claims evidence for both classes: they have none in
    common) and are not returned; only (0, 2), which share cells 0 and 1, is."""
    engine = Engine.from_module("tiny", gray_pool_model(weights=DISJOINT), LABELS, IDENTITY_PREP, layer="1",
                                device="cpu")
    w = DISJOINT.double().numpy()
    assert (w @ F).tolist() == pytest.approx([1.0, 2.2, 0.4])
    res = run(engine, kinds=frozenset({Kind.DELIBERATIVE}), top_e=3, dims=(2, 3))
    assert [ins.class_ids for ins in res.deliberative[2]] == [(0, 2)]
    assert res.deliberative.get(3, []) == []  # no cell where all three have evidence
    p = np.exp(w @ F) / np.exp(w @ F).sum()
    inverse = relu(-(p[1] * (w[1] - p @ w) * F)).reshape(2, 2)  # a(1 - s), eq. (12), y* = 1
    expected = clipc((w[0] * F).reshape(2, 2)) * clipc((w[2] * F).reshape(2, 2)) * inverse
    np.testing.assert_allclose(heat(res.deliberative[2][0].region), expected, rtol=1e-4, atol=1e-12)


def test_insecurity_at_the_clip_floor_scale_of_the_strongest_is_dropped(monkeypatch):
    """Class 3 shares cell 0 with class 0, with evidence 2e-4 there: the pair (0, 3) does share evidence, but its
    strength is ~1e-5 of the strongest pair's, below SHARED_EVIDENCE_RATIO (1e-3), and it is not returned; with
    the ratio rule off it comes back with exactly that small strength."""
    import galore.kinds.measure
    weights = torch.cat([DISJOINT, torch.tensor([[1e-3, -1.0, -1.0, -1.0]])])
    engine = Engine.from_module("tiny", gray_pool_model(weights=weights), LABELS + ["three"], IDENTITY_PREP,
                                layer="1", device="cpu")
    opts = dict(kinds=frozenset({Kind.DELIBERATIVE}), top_e=4, dims=(2,), max_insecurities=6)
    returned = [ins.class_ids for ins in run(engine, **opts).deliberative[2]]
    assert returned == [(0, 2)]  # (1, x): disjoint; (0, 3) and (2, 3): too weak
    monkeypatch.setattr(galore.kinds.measure, "SHARED_EVIDENCE_RATIO", 0.0)
    every = {ins.class_ids: ins.region.strength for ins in run(engine, **opts).deliberative[2]}
    assert set(every) == {(0, 2), (0, 3), (2, 3)}  # the shared-evidence rule alone still drops the (1, x) pairs
    assert 0 < every[(0, 3)] < 1e-3 * every[(0, 2)] and 0 < every[(2, 3)] < 1e-3 * every[(0, 2)]


# ---- item 6: a bank of many exemplars per class -------------------------------------------------------------------
def test_bank_keeps_every_exemplar_and_picks_by_policy():
    engine = tiny()
    images = {f"bank/one/{i}.png": quadrant_image(v) for i, v in enumerate(
        [((0.8, 0.2), (0.2, 0.2)), ((0.8, 0.6), (0.2, 0.2)), ((0.2, 0.2), (0.2, 0.8))])}
    for key, image in images.items():
        engine.add_exemplar(1, image, key=key)
    assert engine.info.exemplars_per_class == {1: 3} and engine.info.exemplar_classes == (1,)
    # most confident: the image with the highest h_1 (by hand from the linear head)
    w = Wn

    def p1(image):
        f = image[0].double().numpy().reshape(2, 2, 2, 2).mean(axis=(1, 3)).ravel() / 255
        z = w @ f
        return np.exp(z[1]) / np.exp(z).sum()

    best = max(images, key=lambda k: p1(images[k]))
    res = run(engine, kinds=frozenset({Kind.COUNTERFACTUAL}), exemplar_policy=ExemplarPolicy.MOST_CONFIDENT)
    assert res.counterfactual.exemplars[0].exemplar_key == best  # the response names the exemplar used
    # random: seeded by the image, so a request gets the same exemplar every time, and images spread over the bank
    drawn = []
    for i in range(8):
        image = quadrant_image(((0.2, 0.4), (0.6, 0.2 + 0.2 * (i % 4))))
        image[0, 0, 0] = i  # distinct pixels, distinct seeds
        first, again = (run(engine, image, kinds=frozenset({Kind.COUNTERFACTUAL})) for _ in range(2))
        key = first.counterfactual.exemplars[0].exemplar_key
        assert key == again.counterfactual.exemplars[0].exemplar_key and key in images
        drawn.append(key)
    assert len(set(drawn)) >= 2


# ---- item 7: value tests of paths without one ---------------------------------------------------------------------
def a_certainty(f=F):
    """Eq. (22) s = 1 + sum p log p / log C; d s / d z_j = p_j (log p_j - sum_k p_k log p_k) / log C."""
    z = Wn @ f
    p = np.exp(z) / np.exp(z).sum()
    g = p * (np.log(p) - (p * np.log(p)).sum()) / math.log(len(p))
    return ((Wn.T @ g) * f).reshape(2, 2)


def test_certainty_score_maps(tiny_engine):
    res = run(tiny_engine, kinds=frozenset({Kind.SELF_AWARE, Kind.DELIBERATIVE}), score=Score.CERTAINTY, top_e=2)
    p = P
    assert res.score == pytest.approx(1 + (p * np.log(p)).sum() / math.log(3), rel=1e-5)
    np.testing.assert_allclose(heat(res.self_aware.region), clipc(a_logit(0)) * relu(a_certainty()), rtol=1e-4,
                               atol=1e-9)
    (pair,) = res.deliberative[2]
    np.testing.assert_allclose(heat(pair.region), clipc(a_logit(0)) * clipc(a_logit(1)) * relu(-a_certainty()),
                               rtol=1e-4, atol=1e-9)


def test_signed_maps_without_clipping(tiny_engine):
    res = run(tiny_engine, kinds=frozenset({Kind.COUNTERFACTUAL, Kind.DELIBERATIVE}), clip_negative=False, top_e=3,
              dims=(3,))
    a0, a1, a2, s = a_logit(0), a_logit(1), a_logit(2), a_softmax_score()
    assert a2.min() < 0 and s.min() < 0 < s.max()  # signed inputs
    np.testing.assert_allclose(heat(res.counterfactual.query), a0 * (max(a0.max(), a1.max()) - a1) * s,
                               rtol=1e-4, atol=1e-9)  # eq. (11), signed a(s)
    (triple,) = res.deliberative[3]
    np.testing.assert_allclose(heat(triple.region), a0 * a1 * a2 * -s, rtol=1e-4, atol=1e-9)  # eq. (12), a(1 - s)


def test_normalized_maps(tiny_engine):
    res = run(tiny_engine, kinds=frozenset({Kind.SELF_AWARE, Kind.DELIBERATIVE}), normalize=True, top_e=2)
    np.testing.assert_allclose(heat(res.self_aware.region), minmax(clipc(a_logit(0))) * minmax(relu(a_softmax_score())),
                               rtol=1e-4, atol=1e-7)
    (pair,) = res.deliberative[2]
    expected = minmax(clipc(a_logit(0))) * minmax(clipc(a_logit(1))) * minmax(relu(-a_softmax_score()))
    np.testing.assert_allclose(heat(pair.region), expected, rtol=1e-4, atol=1e-7)


def test_gradient_hessian_on_a_nonlinear_head_through_explain():
    """NeurIPS 2019 eq. (2) per location, g . a + a H a / 2, against a brute-force Hessian of the head."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 5), nn.Tanh(),
                          nn.Linear(5, 3)).eval()
    engine = Engine.from_module("nonlinear", model, LABELS, IDENTITY_PREP, layer="1", device="cpu")
    image = quadrant_image()
    res = run(engine, image, kinds=frozenset({Kind.ATTRIBUTIVE}), attribution=Attribution.GRADIENT_HESSIAN,
              clip_negative=False, explained_class=1)
    x, _ = engine.preprocess(image)
    with torch.no_grad():
        Fx = engine.split.backbone(x[None])[0].double()  # (2, 2, 2)
    head = engine.split.head.double()
    target = lambda f: head(f[None].float().double())[0, 1]  # noqa: E731
    g = torch.autograd.functional.jacobian(target, Fx)
    H = torch.autograd.functional.hessian(target, Fx)
    expected = np.zeros((2, 2))
    for i in range(2):
        for j in range(2):
            a = Fx[:, i, j]
            expected[i, j] = float(g[:, i, j] @ a + 0.5 * a @ H[:, i, j, :, i, j] @ a)
    engine.split.head.float()
    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(heat(res.attributive.region), expected, rtol=1e-4, atol=1e-6)
