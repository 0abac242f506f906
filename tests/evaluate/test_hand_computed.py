"""Each metric's arithmetic against numbers computed by hand on the tiny gray-pool model of tests/engine.

The model: gray = mean of RGB; F = the four 2 x 2 quadrant means of a 4 x 4 image (row by row); logits = W F."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from galore import ImageRequest
from galore.errors import InvalidArgument
from galore.evaluate import DEFAULT_SETTING, Baseline, Photo, Setting, evaluate_sanity, evaluate_types, spearman
from galore.evaluate.common import baseline, kind_map, pixel_order, ranks, seeded
from galore.evaluate.deletion import auc, counts_for, probabilities
from galore.evaluate.pointing import cell_masks, mosaic, mosaics_of, score_map
from galore.evaluate.sanity import cascade_groups, map_spearman
from galore.evaluate.type_deletion import ambiguity, shared_evidence
from galore.options import Kind
from tests.engine.conftest import W, quadrant_image

V = np.array([0.2, 0.4, 0.6, 0.8])  # quadrant grays of quadrant_image()
QUADRANT_PIXELS = [[0, 1, 4, 5], [2, 3, 6, 7], [8, 9, 12, 13], [10, 11, 14, 15]]  # flat indices, 4 x 4


def softmax(z):
    e = np.exp(z - z.max())
    return e / e.sum()


def grays(image: torch.Tensor) -> np.ndarray:
    return image.numpy()[0].astype(np.float64) / 255.0  # every channel equal


def test_auc_and_counts():
    assert auc(np.array([0, 0.5, 1]), np.array([1.0, 0.5, 0.0])) == pytest.approx(0.5)
    assert auc(np.array([0, 0.25, 1]), np.array([1.0, 1.0, 0.0])) == pytest.approx(0.25 + 0.375)
    assert counts_for(16, 4).tolist() == [0, 4, 8, 12, 16]
    assert counts_for(10, 4).tolist() == [0, 2, 5, 8, 10]  # round half to even at 2.5 and 7.5


def test_deletion_and_insertion_probabilities_by_quadrant(tiny_scorer):
    """Removing quadrants 3, 2, 1, 0 in turn against the mean baseline: each removed quadrant's gray becomes 0.5
    (the image's mean); the probability of class 0 follows softmax(W F) at each step."""
    image = quadrant_image()
    x = tiny_scorer.input(image)
    base = baseline(x, Baseline.MEAN)
    order = torch.tensor(sum(reversed(QUADRANT_PIXELS), []))
    counts = [0, 4, 8, 12, 16]
    got = probabilities(tiny_scorer, x, order, base, 0, counts)
    v = grays(image).reshape(2, 2, 2, 2).mean(axis=(1, 3)).ravel()  # exact quadrant means of the uint8 image
    expected = []
    for removed in range(5):
        f = v.copy()
        f[[3, 2, 1, 0][:removed]] = v.mean()
        expected.append(softmax(W.numpy().astype(np.float64) @ f)[0])
    np.testing.assert_allclose(got, expected, atol=1e-6)
    inserted = []
    for restored in range(5):  # insertion: the baseline everywhere, then quadrants 3, 2, 1, 0 put back
        f = np.full(4, v.mean())
        f[[3, 2, 1, 0][:restored]] = v[[3, 2, 1, 0][:restored]]
        inserted.append(softmax(W.numpy().astype(np.float64) @ f)[0])
    got = probabilities(tiny_scorer, x, order, base, 0, counts, insert=True)
    np.testing.assert_allclose(got, inserted, atol=1e-6)
    assert np.allclose(v, V, atol=0.002)


def test_pixel_order_ties_and_ranks():
    values = torch.tensor([[0.0, 2.0], [2.0, 1.0]])
    order = pixel_order(values, seeded("ties")).tolist()
    assert set(order[:2]) == {1, 2} and order[2:] == [3, 0]
    assert ranks(np.array([3.0, 1.0, 2.0, 2.0])).tolist() == [4.0, 1.0, 2.5, 2.5]
    # d = rank differences (0, 0, 1, -1): rho = 1 - 6 * 2 / (4 * 15) = 0.8 (no ties)
    assert spearman(np.array([1, 2, 3, 4]), np.array([1, 2, 4, 3])) == pytest.approx(0.8)
    assert np.isnan(spearman(np.array([1, 1, 1]), np.array([1, 2, 3])))
    assert map_spearman(np.ones((2, 2)), np.eye(2)) == 0.0


def test_ambiguity():
    probs = torch.tensor([[0.5, 0.3, 0.2], [0.4, 0.4, 0.2]])
    assert ambiguity(probs, 0, 1).tolist() == pytest.approx([2 * 0.3 / 0.8, 1.0])
    assert ambiguity(probs, 0, 1, 2).tolist() == pytest.approx([3 * 0.2 / 1.0, 3 * 0.2 / 1.0])  # V = 3
    assert shared_evidence(probs, (0, 1)).tolist() == pytest.approx([0.3, 0.4])  # min_c h_c, eq. (5)


def test_insecurity_effects_follow_eq5_on_the_tiny_model(tiny_engine):
    """Each insecurity's deletion effect is the drop of min(h_a, h_b) (the evidence eq. 5 says the region holds
    for both classes), its insertion effect is h_a + h_b with only the region kept, each computed by hand from the
    quadrant means (removed pixels: the image's mean gray); the references are each class's own attributive
    region of the same size (W_c F per quadrant, eq. 3) and random regions."""
    image = quadrant_image()
    report = evaluate_types(tiny_engine, [Photo("quadrants", image)], [DEFAULT_SETTING], Baseline.MEAN,
                            insecurities=3, random_draws=2, finer_cam=False, dims=(2,))
    g = grays(image)
    w = W.numpy().astype(np.float64)

    def probs(mask: np.ndarray) -> np.ndarray:  # mask (4, 4): True = replaced by the mean
        f = np.where(mask, g.mean(), g).reshape(2, 2, 2, 2).mean(axis=(1, 3)).ravel()
        return softmax(w @ f)

    (res,) = tiny_engine.explain([ImageRequest(image, DEFAULT_SETTING.with_kinds(Kind.DELIBERATIVE, dims=(2,), top_e=3,
                                                                                 max_insecurities=3))])
    p0 = probs(np.zeros((4, 4), bool))
    deletions = [e for e in report.effects if e.kind == "deliberative"]
    insertions = [e for e in report.effects if e.kind == "deliberative insertion"]
    assert [e.classes for e in deletions] == [i.class_ids for i in res.deliberative[2]] == [e.classes for e in
                                                                                            insertions]
    for ins, dele, keep in zip(res.deliberative[2], deletions, insertions):
        a, b = ins.class_ids
        cells = ins.region.cells
        assert dele.effect == pytest.approx(min(p0[a], p0[b]) - min(probs(cells)[[a, b]]), abs=1e-5)
        assert keep.effect == pytest.approx(probs(~cells)[[a, b]].sum(), abs=1e-5)
        k = int(cells.sum())
        assert dele.pixels == keep.pixels == k
        # own attributive regions: the k highest pixels of W_c F (eq. 3, clipped) upsampled bilinearly to 4 x 4
        own = []
        for c in (a, b):
            amap = torch.tensor(np.maximum(w[c] * V, 1e-7).reshape(1, 1, 2, 2))
            up = torch.nn.functional.interpolate(amap, size=(4, 4), mode="bilinear", align_corners=False).ravel()
            ranked = np.sort(up.numpy())[::-1]
            assert ranked[k - 1] > ranked[k]  # no tie at the cut: the region is unique
            own.append((up.numpy() >= ranked[k - 1]).reshape(4, 4))
        drops = [min(p0[a], p0[b]) - min(probs(m)[[a, b]]) for m in own]
        assert dele.references["own attributive, best"] == pytest.approx(max(drops), abs=1e-5)
        assert dele.references["own attributive, mean"] == pytest.approx(np.mean(drops), abs=1e-5)
        kept = [probs(~m)[[a, b]].sum() for m in own]
        assert keep.references["own attributive, best"] == pytest.approx(max(kept), abs=1e-5)
        amb = lambda p: 2 * min(p[a], p[b]) / (p[a] + p[b])  # noqa: E731 - the former measure, kept as a column
        assert dele.ambiguity_drop == pytest.approx(amb(p0) - amb(probs(cells)), abs=1e-5)
    rows = {r["kind"]: r for r in report.summary()}
    assert rows["deliberative V=2"]["regions"] == len(deletions)
    assert "ambiguity drop" in rows["deliberative V=2"] and "ambiguity drop" not in rows["deliberative insertion V=2"]


def test_counterfactual_and_attributive_effects_on_the_tiny_model(tiny_engine):
    """Each region's drop equals the hand formula on the quadrant means: removed pixels become the image's mean
    gray, F is re-averaged per quadrant, then margin = (W_y - W_c) F and h_y = softmax(W F)_y."""
    image = quadrant_image()
    report = evaluate_types(tiny_engine, [Photo("quadrants", image)], [DEFAULT_SETTING], Baseline.MEAN,
                            insecurities=1, random_draws=2, finer_cam=False)
    g = grays(image)
    w = W.numpy().astype(np.float64)

    def features(mask: np.ndarray) -> np.ndarray:
        h = np.where(mask, g.mean(), g)
        return h.reshape(2, 2, 2, 2).mean(axis=(1, 3)).ravel()

    (res,) = tiny_engine.explain([ImageRequest(
        image, DEFAULT_SETTING.with_kinds(Kind.ATTRIBUTIVE, Kind.COUNTERFACTUAL))])
    y, c = res.counterfactual.predicted_id, res.counterfactual.counter_ids[0]
    f0 = features(np.zeros((4, 4), bool))
    f1 = features(res.counterfactual.query.cells)
    cf = next(e for e in report.effects if e.kind == "counterfactual")
    assert cf.classes == (y, c)
    assert cf.effect == pytest.approx((w[y] - w[c]) @ (f0 - f1), abs=1e-5)
    assert cf.pixels == int(res.counterfactual.query.cells.sum())
    at = next(e for e in report.effects if e.kind == "attributive")
    f2 = features(res.attributive.region.cells)
    assert at.effect == pytest.approx(softmax(w @ f0)[y] - softmax(w @ f2)[y], abs=1e-5)
    summary = {r["kind"]: r for r in report.summary()}
    assert set(summary) == {"attributive", "deliberative V=2", "deliberative insertion V=2", "deliberative V=3",
                            "deliberative insertion V=3", "counterfactual"}
    assert 0.0 <= summary["counterfactual"]["wins vs random regions"] <= 1.0


def test_kind_maps_match_the_engine(tiny_engine, tiny_scorer):
    """The metrics' fixed-class maps are the engine's own maps (same attribution code path)."""
    image = quadrant_image()
    (res,) = tiny_engine.explain([ImageRequest(
        image, DEFAULT_SETTING.with_kinds(Kind.ATTRIBUTIVE, Kind.COUNTERFACTUAL))])
    y, c = res.counterfactual.predicted_id, res.counterfactual.counter_ids[0]
    maps = tiny_scorer.maps(tiny_scorer.input(image), [y, c], DEFAULT_SETTING.options)
    torch.testing.assert_close(kind_map(maps, Kind.ATTRIBUTIVE, [y]), res.attributive.region.heatmap)
    torch.testing.assert_close(kind_map(maps, Kind.COUNTERFACTUAL, [y, c]), res.counterfactual.query.heatmap)
    # gradient x activation of a logit, clipped: W_y * F per quadrant (2 x 2), negatives -> 1e-7
    expected = np.clip(W.numpy()[y] * grays(image).reshape(2, 2, 2, 2).mean(axis=(1, 3)).ravel(), 1e-7, None)
    np.testing.assert_allclose(kind_map(maps, Kind.ATTRIBUTIVE, [y]).flatten().numpy(), expected, rtol=1e-5)


def test_sanity_cascade_on_the_tiny_model(tiny_engine):
    """Groups top down (head linear, then the backbone's 1 x 1 conv); step 0 is the original (rho = SSIM = 1);
    randomising the head changes W, so the attributive map W'_y * F no longer ranks the quadrants like W_y * F."""
    assert [name for name, _ in cascade_groups(tiny_engine.split)] == ["head:3", "backbone:0"]
    image = quadrant_image(((0.2, 0.9), (0.5, 0.7)))
    report = evaluate_sanity(tiny_engine, [Photo("quadrants", image)], [DEFAULT_SETTING])
    rows = {(r["kind"], r["step"]): r for r in report.summary()}
    for kind in ("attributive", "deliberative", "counterfactual"):
        assert rows[kind, 0]["spearman"] == pytest.approx(1.0) and rows[kind, 0]["ssim"] == pytest.approx(1.0)
    assert rows["attributive", 1]["spearman"] < 0.99
    assert rows["attributive", 1]["randomised_through"] == "head:3"
    torch.testing.assert_close(tiny_engine.split.head.get_submodule("3").weight, W)  # the engine is untouched


def test_pointing_pieces():
    assert mosaics_of(list("abcde"))[1] == [1, 2, 3, 4] and mosaics_of(list("abcde"))[4] == [4, 0, 1, 2]
    with pytest.raises(InvalidArgument, match="at least 4"):
        mosaics_of(list("abc"))
    tiles = [torch.full((3, 6, 9), v, dtype=torch.uint8) for v in (10, 20, 30, 40)]
    m = mosaic(tiles, 2)
    assert m.shape == (3, 4, 4) and m[0].tolist() == [[10, 10, 20, 20], [10, 10, 20, 20],
                                                     [30, 30, 40, 40], [30, 30, 40, 40]]
    cells = cell_masks(4)
    saliency = torch.tensor([[0.0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 2, 1], [-5, 0, 0, 0]])
    assert score_map(saliency, cells, 3) == (True, pytest.approx(3 / 4))  # max 2 in cell 3; 3 of 4 positive mass
    assert score_map(saliency, cells, 1) == (False, pytest.approx(1 / 4))


def test_setting_names():
    from galore.options import Target
    assert DEFAULT_SETTING.name == "gradient_x_activation/logit/clip/softmax"
    assert Setting.of(target=Target.PROBABILITY, clip_negative=False, normalize=True).name == \
        "gradient_x_activation/probability/minmax/softmax"
