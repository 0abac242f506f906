"""The proxy protocol (GALORE §VI-B) on the CUB-format fixture of conftest.py, with hand-computed expectations.

Hand computation of the ground truth (two photos per class, additive smoothing 1, so phi = (count + 1) / 4):
  bill colour  A (3/4, 1/4)  B (3/4, 1/4)  C (1/4, 3/4)      tail shape A (3/4, 1/4) B (1/4, 3/4) C (1/4, 3/4)
  throat colour A (1/2, 1/2) B (3/4, 1/4)  C (1/4, 3/4)
  (3/4, 1/4) vs (1/4, 3/4): KL + KL = 2 (1/2) log 3 = log 3, gamma = 1/3
  (1/2, 1/2) vs (3/4, 1/4): KL + KL = (1/4) log(3/2) + (1/4) log 2 = (1/4) log 3, gamma = 3^(-1/4)
  alpha:   beak  AB 1  AC 1/3  BC 1/3 | tail  AB 1/3  AC 1/3  BC 1 | throat AB 3^-1/4  AC 3^-1/4  BC 1/3
  9 (part, pair) triplets, M = ceil(0.2 x 9) = 2: G^d = {beak AB, tail BC} (cut 1); G^c = the other 7.
  V = 3: one class triple, eta = 1/3 for every part, M = ceil(0.2 x 3) = 1, ties at the cut go in: all parts.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from galore.engine import ImageRequest
from galore.errors import InvalidArgument
from galore.evaluate import proxy
from galore.evaluate.cub import CubFormatError, read_cub
from galore.options import ExplainOptions, Kind, Threshold

from .conftest import LOCS

BEAK, TAIL, THROAT = 0, 1, 2
A, B, C = 0, 1, 2
G = 3 ** -0.25
ALPHA = {(BEAK, A, B): 1, (BEAK, A, C): 1 / 3, (BEAK, B, C): 1 / 3, (TAIL, A, B): 1 / 3, (TAIL, A, C): 1 / 3,
         (TAIL, B, C): 1, (THROAT, A, B): G, (THROAT, A, C): G, (THROAT, B, C): 1 / 3}
INSECURE = {frozenset({A, B}): {BEAK}, frozenset({B, C}): {TAIL}, frozenset({A, C}): set(),
            frozenset({A, B, C}): {BEAK, TAIL, THROAT}}


def discriminant(a: int, others) -> set[int]:
    """Hand table of G^c: parts whose (part, a, b) is not in G^d, for every b."""
    return {k for k in (BEAK, TAIL, THROAT)
            if all(frozenset({a, b}) not in INSECURE or k not in INSECURE[frozenset({a, b})] for b in others)}


def test_reads_the_cub_layout(cub_root):
    cub = read_cub(cub_root)
    assert cub.parts == ("beak", "tail", "throat") and cub.num_classes == 3
    assert cub.class_names == ("001.A", "002.B", "003.C")
    assert cub.train_ids == (1, 3, 5) and cub.test_ids == (2, 4, 6)
    assert [cub.labels[i] for i in cub.image_ids] == [A, A, B, B, C, C]
    assert cub.part_points[4].visible.tolist() == [True, False, True]
    assert cub.part_points[3].xy.tolist() == [[20, 10], [90, 80], [50, 40]]
    assert cub.attribute_groups[:3] == ("has_bill_color", "has_bill_color", "has_tail_shape")
    assert cub.attribute_present[0].astype(int).tolist() == [1, 0, 1, 0, 1, 0]
    assert tuple(cub.image(1).shape) == (3, 96, 128)


def test_malformed_files_name_file_and_line(cub_root, tmp_path):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(cub_root, root)
    locs = root / "parts" / "part_locs.txt"
    lines = locs.read_text().splitlines()
    lines[4] = "2 9 1.0 1.0 1"
    locs.write_text("\n".join(lines) + "\n")
    with pytest.raises(CubFormatError, match=r"part id 9 out of range") as err:
        read_cub(root)
    assert err.value.field == "parts/part_locs.txt:5"
    (root / "train_test_split.txt").unlink()
    with pytest.raises(CubFormatError, match="does not exist"):
        read_cub(root)


def test_similarity_and_ground_truth_by_hand(cub_root):
    gt = proxy.GroundTruth.of(read_cub(cub_root))
    for (k, a, b), value in ALPHA.items():
        assert gt.alpha[k, a, b] == pytest.approx(value, rel=1e-12)
        assert gt.alpha[k, b, a] == pytest.approx(value, rel=1e-12)
    assert gt.cut(2) == pytest.approx(1.0) and gt.cut(3) == pytest.approx(1 / 3)
    for classes, parts in INSECURE.items():
        assert set(np.flatnonzero(gt.insecure_parts(sorted(classes)))) == parts
    for a, others in ((A, [B]), (A, [C]), (A, [B, C]), (B, [A, C]), (C, [A]), (C, [A, B])):
        assert set(np.flatnonzero(gt.discriminant_parts(a, others))) == discriminant(a, others)
    assert discriminant(A, [B, C]) == {TAIL, THROAT}  # the hand table itself, once


def test_precision_recall_and_part_iou_by_hand():
    inside = np.array([[True, False, False], [True, True, False], [False, False, False]])
    gt, seen = np.array([False, True, True]), np.array([True, True, False])  # throat not seen
    p, r = proxy.precision_recall(inside, gt, seen)
    assert p[:2].tolist() == [0.0, 0.5] and math.isnan(p[2])
    assert r.tolist() == [0.0, 1.0, 0.0]  # 1 GT part seen (tail)
    other = np.array([[False, True, False], [True, False, False], [False, False, False]])
    iou = proxy.part_iou(inside, other)
    assert iou[:2].tolist() == [0.0, 0.5] and math.isnan(iou[2])
    # no ground-truth part the model could see (the only GT part, throat, is not seen): P = R = NaN at every
    # level, even where the region holds parts (the authors skip such segments; P = 0 before)
    p, r = proxy.precision_recall(inside, np.array([False, False, True]), seen)
    assert np.isnan(p).all() and np.isnan(r).all()


def test_part_iou_authors_rules_by_hand():
    """SCOUT's cf_PIoU: parts not visible in BOTH images are dropped; NaN unless both regions hold a part."""
    query = np.array([[True, True, False, False],  # beak, tail
                      [True, False, False, False],  # beak only
                      [False, False, True, False],  # throat (not visible in the exemplar)
                      [False, False, False, False]])
    exemplar = np.array([[True, False, True, False],  # beak, throat
                         [False, False, False, True],  # wing (not visible in the query)
                         [True, False, False, False],
                         [True, False, False, False]])
    seen_q = np.array([True, True, True, False])
    seen_e = np.array([True, True, False, True])
    iou = proxy.part_iou(query, exemplar, seen_q, seen_e)
    # level 0: both = {beak, tail}; query {beak, tail}, exemplar {beak} -> 1/2
    assert iou[0] == 0.5
    # level 1: the exemplar's wing is not visible in the query -> exemplar empty -> NaN (was 0: |{}|/|{beak, wing}|)
    # level 2: the query's throat is not visible in the exemplar -> query empty -> NaN
    # level 3: the query region holds no part -> NaN (was 0)
    assert np.isnan(iou[1:]).all()
    assert proxy.part_iou(query, exemplar)[1] == 0.0  # without the visibility masks: plain IoU of the ids


def test_table2_estimators_by_hand():
    """reference: one point per segment at the reference coverage; pooled: one point per coverage level
    (mean strength, mean precision over the segments whose P is defined there)."""
    settings = proxy.ProxySettings(options=ExplainOptions(threshold=Threshold(coverage=0.2)),
                                   coverages=(0.1, 0.2, 0.3))
    nan = float("nan")
    strengths = [(3.0, 2.0, 1.0), (5.0, 4.0, 2.0), (1.0, 1.5, 0.5), (2.0, 2.5, 0.2)]
    precisions = [(1.0, 0.5, nan), (0.5, 1.0, 0.25), (0.0, 0.0, 0.5), (nan, 0.25, 0.75)]
    segs = [proxy.Segment("deliberative", 2, i, "query", (0, 1), np.array(p), np.array(p), np.array(st),
                          np.zeros((3, 1), bool)) for i, (st, p) in enumerate(zip(strengths, precisions))]
    report = proxy.ProxyReport(settings, [0, 1, 2, 3], segs, {}, {})
    from scipy import stats
    ref = stats.pearsonr([2.0, 4.0, 1.5, 2.5], [0.5, 1.0, 0.0, 0.25])
    got = report.correlation("deliberative", 2)
    assert got["estimator"] == "reference" and got["n"] == 4 and got["pearson"] == pytest.approx(ref.statistic)
    xs = [np.mean([3.0, 5.0, 1.0]), np.mean([2.0, 4.0, 1.5, 2.5]), np.mean([2.0, 0.5, 0.2])]
    ys = [np.mean([1.0, 0.5, 0.0]), np.mean([0.5, 1.0, 0.0, 0.25]), np.mean([0.25, 0.5, 0.75])]
    pooled = report.correlation("deliberative", 2, "pooled")
    assert pooled["n"] == 3 and pooled["pearson"] == pytest.approx(stats.pearsonr(xs, ys).statistic)


def test_coverage_presets_and_part_mappings():
    assert proxy.DEFAULT_COVERAGES[:3] == (0.005, 0.01, 0.02) and proxy.DEFAULT_COVERAGES[-1] == 0.9
    assert proxy.COVERAGE_PRESETS["table3-vgg16"] == (0.005,) and proxy.COVERAGE_PRESETS["table3-resnet50"] == (0.02,)
    assert proxy.COVERAGE_PRESETS["scout"][:2] == (0.005, 0.01) and proxy.COVERAGE_PRESETS["scout"][-1] == 0.49
    authors, ours = proxy.AUTHORS_PART_GROUPS, proxy.OUR_PART_GROUPS
    assert proxy.CUB_PART_GROUPS is authors and set(authors) == set(ours)
    differ = {part for part in authors if set(authors[part]) != set(ours[part])}
    assert differ == {"back", "belly", "crown", "left eye", "right eye", "throat"}
    assert "has_head_pattern" in authors["throat"] and "has_upperparts_color" not in authors["back"]
    with pytest.raises(InvalidArgument, match="part_mapping"):
        proxy.ProxySettings(part_mapping="mine")
    with pytest.raises(InvalidArgument, match="estimator"):
        proxy.ProxySettings(estimator="median")


def test_pearson_p_value_matches_scipy():
    from scipy import stats

    rng = np.random.default_rng(3)
    for n in (3, 5, 17, 60):
        x = rng.random(n)
        y = x + rng.random(n) * 0.7
        r, p, count = proxy.pearson(x, y)
        ref = stats.pearsonr(x, y)
        assert count == n and r == pytest.approx(ref.statistic, abs=1e-12) and p == pytest.approx(ref.pvalue, rel=1e-7)
    assert math.isnan(proxy.pearson([1, 2], [3, 4])[0]) and math.isnan(proxy.pearson([1, 1, 1], [1, 2, 3])[0])


@pytest.mark.parametrize("coverage", [0.25, 0.5, 0.1])
def test_sweep_reproduces_every_engine_region(cub_root, cub_engine, coverage):
    """Every cell of every region (deliberative, counterfactual sides with their shared count, attributive) comes
    out of the sweep exactly as the engine cut it."""
    cub = read_cub(cub_root)
    opts = ExplainOptions(dims=(2, 3), top_e=3, threshold=Threshold(coverage=coverage), counter_classes=(B, C))
    (res,) = cub_engine.explain([ImageRequest(cub.image(2), opts, {B: cub.image(3), C: cub.image(5)})])
    assert res.ok and res.deliberative[2] and res.counterfactual.exemplars[0].region is not None
    grid = cub_engine.grid
    every_cell = np.arange(grid.cells)
    wanted = proxy.coverage_counts(grid.cells, [coverage])
    singles = [res.attributive.region, res.self_aware.region] + [i.region for v in res.deliberative.values()
                                                                  for i in v]
    for region in singles:
        sw = proxy.sweep(proxy.working_values(grid, region.heatmap), every_cell, wanted)
        assert np.array_equal(sw.inside[0], region.cells.flatten())
        assert sw.strength[0] == pytest.approx(region.strength, rel=1e-5)
    cf = res.counterfactual
    regions = [cf.query] + [s.region for s in cf.exemplars if s.region is not None]
    values = [proxy.working_values(grid, r.heatmap) for r in regions]
    counts = proxy.shared_counts(wanted, [int((v > 0).sum()) for v in values])
    for region, v, k in zip(regions, values, counts):
        assert np.array_equal(proxy.sweep(v, every_cell, k).inside[0], region.cells.flatten())


def test_protocol_end_to_end_hand_numbers(cub_root, cub_engine):
    """The tiny model (conftest) puts every attributive map of A on the crop's left half and every ambiguity map
    on its right half (the only cells where 1 - s(x) grows), so at coverage 0.5 the regions are those halves."""
    cub = read_cub(cub_root)
    settings = proxy.ProxySettings(options=ExplainOptions(dims=(2, 3), top_e=3, threshold=Threshold(coverage=0.5)),
                                   coverages=(0.25, 0.5, 1.0), split="all", geometry="crop")
    report = proxy.run_protocol(cub_engine, cub, settings)
    assert report.images == [1, 2, 3, 4, 5, 6] and not report.failures
    half = 1
    by = {}
    for s in report.segments:
        by.setdefault((s.kind, s.dim, s.image_id, s.side), []).append(s)
    # attributive: left half holds beak + throat (seen ones); GT of A against {B, C} = {tail, throat}
    expect_attr = {1: (0.5, 0.5), 2: (0.5, 0.5), 3: (0.5, 0.5), 4: (0.5, 1.0), 5: (0.5, 0.5), 6: (1.0, 0.5)}
    for image, (p, r) in expect_attr.items():
        (seg,) = by[("attributive", 1, image, "query")]
        assert seg.classes[0] == A and set(seg.classes[1:]) == {B, C}
        assert (seg.precision[half], seg.recall[half]) == (p, r)
    # deliberative: the right half holds the tail (when visible)
    for image in range(1, 7):
        tail_seen = LOCS[image][TAIL][2] == 1
        pairs = {frozenset(s.classes): s for s in by[("deliberative", 2, image, "query")]}
        assert set(pairs) == {frozenset({A, B}), frozenset({A, C}), frozenset({B, C})}
        for classes, seg in pairs.items():
            assert seg.inside[half].tolist() == [False, tail_seen, False]
        if tail_seen:
            ab = pairs[frozenset({A, B})]
            if image == 6:  # its beak (the only GT part of A, B) lies outside the crop: P and R undefined (NaN)
                assert math.isnan(ab.precision[half]) and math.isnan(ab.recall[half])
            else:
                assert (ab.precision[half], ab.recall[half]) == (0.0, 0.0)
            assert (pairs[frozenset({B, C})].precision[half], pairs[frozenset({B, C})].recall[half]) == (1.0, 1.0)
            # (A, C) has no ground-truth part: NaN, not P = 0 (the authors skip such segments)
            assert math.isnan(pairs[frozenset({A, C})].precision[half])
            assert math.isnan(pairs[frozenset({A, C})].recall[half])
        (triple,) = by[("deliberative", 3, image, "query")]
        seen = sum(1 for x, y, v in LOCS[image] if v and 16 <= x < 112)
        assert triple.recall[half] == pytest.approx((1 if tail_seen else 0) / seen)
    # every segment: P and R from the hand tables; PIoU from the part sets; Table II from its points
    for s in report.segments:
        if s.kind == "deliberative":
            truth = INSECURE[frozenset(s.classes)]
        else:
            truth = discriminant(s.classes[0], s.classes[1:])
        if s.side == "query":
            seen = {k for k, (x, y, v) in enumerate(LOCS[s.image_id]) if v and 16 <= x < 112}
            assert seen == set(np.flatnonzero(s.seen))
        else:
            seen = set(np.flatnonzero(s.seen))
        for level in range(3):
            found = set(np.flatnonzero(s.inside[level]))
            if found and truth & seen:
                assert s.precision[level] == pytest.approx(len(found & truth) / len(found))
            else:  # no part in the region, or no ground-truth part visible: undefined
                assert math.isnan(s.precision[level])
            if truth & seen:
                assert s.recall[level] == pytest.approx(len(found & truth) / len(truth & seen))
            else:
                assert math.isnan(s.recall[level])
    summary = report.summary()
    for dim in (1, 2):
        pairs = {}
        for s in report.segments:
            if s.kind == "counterfactual" and s.dim == dim:
                pairs.setdefault(s.pair, []).append(s)
        assert len(pairs) == 6
        ious = []
        for segs in pairs.values():
            (q,) = [s for s in segs if s.side == "query"]
            for e in (s for s in segs if s.side == "exemplar"):
                both = set(np.flatnonzero(q.seen & e.seen))  # the authors' PIoU: parts visible in both images
                a, b = set(np.flatnonzero(q.inside[half])) & both, set(np.flatnonzero(e.inside[half])) & both
                if a and b:  # NaN (left out) unless both regions hold such a part
                    ious.append(len(a & b) / len(a | b))
        assert ious and summary["piou"][f"counterfactual/{dim}"][half] == pytest.approx(np.mean(ious))
        # counterfactual P/R: the query side; the exemplar side apart
        queries = [s for ss in pairs.values() for s in ss if s.side == "query"]
        assert summary["curves"][f"counterfactual/{dim}"]["segments"] == len(queries) == 6
        assert summary["curves"][f"counterfactual/{dim}/exemplar"]["segments"] == sum(
            1 for ss in pairs.values() for s in ss if s.side == "exemplar")
    from scipy import stats

    segs = [s for s in report.segments if s.kind == "deliberative" and s.dim == 2]
    pts = [(s.strength[half], s.precision[half]) for s in segs if not math.isnan(s.precision[half])]
    ref = stats.pearsonr(*zip(*pts))
    got = summary["strength_precision"]["deliberative/2"]
    # image 4's three insecurities hold no part (no visible tail); every (A, C) pair has no ground-truth part;
    # image 6's (A, B) has its only ground-truth part (the beak) outside the crop
    assert got["n"] == len(pts) == len(segs) - 3 - 5 - 1
    assert got["pearson"] == pytest.approx(ref.statistic) and got["p_value"] == pytest.approx(ref.pvalue)
    assert summary["curves"]["attributive/1"]["precision"][half] == pytest.approx((0.5 * 5 + 1.0) / 6)
    assert summary["ground_truth_cut"] == {"2": pytest.approx(1.0), "3": pytest.approx(1 / 3)}


def test_whole_image_geometry_sees_every_visible_part(cub_root, cub_engine):
    """geometry "resize" (the default, the authors' NeurIPS 2019 script): the 128 x 96 photo is squeezed to the
    8 x 8 crop, part (x, y) -> (x / 16, y / 12); every visible part is seen, image 6's beak (x = 5, outside the
    centre crop) included: its (A, B) insecurity, whose only ground-truth part is that beak, now has P = R = 0
    (the region holds the tail) instead of NaN."""
    cub = read_cub(cub_root)
    opts = ExplainOptions(kinds=frozenset({Kind.DELIBERATIVE}), dims=(2,), top_e=3, threshold=Threshold(coverage=0.5))
    settings = proxy.ProxySettings(options=opts, coverages=(0.5,), split="all", counter_dims=(1,))
    assert settings.geometry == "resize"
    report = proxy.run_protocol(cub_engine, cub, settings)
    for s in (s for s in report.segments if s.side == "query"):
        assert s.seen.tolist() == [bool(v) for x, y, v in LOCS[s.image_id]]
    view = proxy.View(cub, cub_engine.preprocess, "resize")
    assert view.image(6).shape == (3, 8, 8)
    np.testing.assert_allclose(view.points(6).xy, [[5 / 16, 20 / 12], [100 / 16, 50 / 12], [40 / 16, 60 / 12]])
    (ab,) = [s for s in report.segments if s.image_id == 6 and s.kind == "deliberative" and set(s.classes) == {A, B}]
    assert ab.inside[0].tolist() == [False, True, False]  # the tail (x = 100 -> column 6, the right half)
    assert (ab.precision[0], ab.recall[0]) == (0.0, 0.0)
    from galore.preprocess import Preprocess
    with pytest.raises(InvalidArgument, match="resizes to 256 and crops 224") as err:
        proxy.View(cub, Preprocess(), "resize")
    assert err.value.field == "geometry"


def test_student_teacher_selection(cub_root, cub_engine):
    """With a student model (SCOUT's simulated user): only images the teacher (the engine: always A) classifies
    correctly and the student (biases make it rank B, A, C) misclassifies are explained (images 1 and 2, class A);
    the counter classes are the student's, without the true class: (B,) and (B, C)."""
    from galore import Engine
    from .conftest import PREP, tiny_cub_model

    model = tiny_cub_model()
    model[2].bias.data.copy_(torch.tensor([1.5, 3.0, 0.0]))
    student = Engine.from_module("student", model, ["A", "B", "C"], PREP, layer="0", device="cpu")
    cub = read_cub(cub_root)
    opts = ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), dims=(2,), top_e=3,
                          threshold=Threshold(coverage=0.5))
    report = proxy.run_protocol(cub_engine, cub, proxy.ProxySettings(options=opts, coverages=(0.5,), split="all"),
                                student=student)
    assert report.images == [1, 2]
    queries = [s for s in report.segments if s.kind == "counterfactual" and s.side == "query"]
    assert sorted((s.image_id, s.classes) for s in queries) == [(1, (A, B)), (1, (A, B, C)), (2, (A, B)),
                                                                (2, (A, B, C))]
    assert report.summary()["settings"]["counter_user"].startswith("student student")


def test_hardest_and_limit_select_images(cub_root, cub_engine):
    cub = read_cub(cub_root)
    opts = ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE}), dims=(2,), top_e=3, threshold=Threshold(coverage=0.5))
    report = proxy.run_protocol(cub_engine, cub, proxy.ProxySettings(options=opts, coverages=(0.5,), hardest=2,
                                                                      counter_dims=(1,), geometry="crop"))
    scores = {i: cub_engine.explain([ImageRequest(cub.image(i), opts)])[0].score for i in cub.test_ids}
    assert report.images == sorted(scores, key=lambda i: (scores[i], i))[:2]
    with pytest.raises(InvalidArgument, match="coverages"):
        proxy.ProxySettings(coverages=(0.0,))
    with pytest.raises(InvalidArgument, match="reference coverage 0.105 must be one of the swept") as err:
        proxy.ProxySettings(options=ExplainOptions(threshold=Threshold(coverage=0.105)))
    assert err.value.field == "options.threshold.coverage"
    with pytest.raises(InvalidArgument, match="3 counter classes need more than 3 classes"):
        proxy.run_protocol(cub_engine, cub, proxy.ProxySettings(options=opts, coverages=(0.5,), counter_dims=(3,)))


def test_attributes_file_next_to_the_root_as_the_cub_archive_unpacks(cub_root, tmp_path):
    import shutil

    root = tmp_path / "CUB_200_2011"
    shutil.copytree(cub_root, root)
    (root / "attributes.txt").rename(tmp_path / "attributes.txt")
    assert read_cub(root).attribute_values[:2] == ("black", "yellow")
    (tmp_path / "attributes.txt").unlink()
    with pytest.raises(CubFormatError, match="attributes.txt does not exist"):
        read_cub(root)
