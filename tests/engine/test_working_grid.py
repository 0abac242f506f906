"""Regions on the bounded working grid: against an independent full-resolution computation, exact mask geometry in
original pixels, COCO RLE through pycocotools, reduced decodes, degenerate shapes and per-image failure isolation."""
from __future__ import annotations

import math
import dataclasses
import logging

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from torch import nn

from galore import Engine, ExplainOptions, ImageRequest, Kind, Threshold
from galore.masks import CellFrame, coco_string, rle_counts, rle_from_mask
from galore.preprocess import Preprocess
from galore.regions import WorkingGrid

from ..tools import require_regions_kernel
from .conftest import IDENTITY_PREP, gray_pool_model, photo, quadrant_image
from .reference_regions import full_resolution_region, regions

PREP = Preprocess(resize=256, crop=224, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0))
GRID_W = torch.randn(5, 49, generator=torch.Generator().manual_seed(0))


@pytest.fixture(scope="module")
def grid_engine() -> Engine:
    """F is the 7 x 7 gray average of the 224-pixel crop; a random linear head over 5 classes."""
    return Engine.from_module("grid7", gray_pool_model(7, GRID_W), [f"c{i}" for i in range(5)], PREP, layer="1",
                              device="cpu")


@pytest.mark.parametrize("size", [(300, 451), (1200, 1800), (2000, 1500)])
def test_working_grid_matches_full_resolution(grid_engine, size):
    """Tolerances: mask IoU >= 0.97 and strength within 1 % of the full-resolution computation."""
    image = TF.resize(photo("chelsea"), list(size), antialias=True)
    (res,) = grid_engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})))])
    region = res.attributive.region
    _, geo = PREP(image)
    reference, strength = full_resolution_region(region.heatmap, geo, 0.1)
    mask = region.mask
    iou = float((mask & reference).sum()) / float((mask | reference).sum())
    assert mask.shape == size and iou >= 0.97, iou
    assert region.strength == pytest.approx(strength, rel=0.01)


def test_region_geometry_is_exact_in_original_pixels(lite_engine):
    """pixel_count, bbox and the RLE come from the cells; they agree with the materialised mask."""
    image = TF.resize(photo("coffee"), [750, 1100], antialias=True)
    (res,) = lite_engine.explain([ImageRequest(image, ExplainOptions(dims=(2,)))])
    for region in [res.attributive.region, res.self_aware.region, res.counterfactual.query,
                   *(i.region for i in res.deliberative[2])]:
        mask = region.mask.numpy()
        ys, xs = np.nonzero(mask)
        assert mask.shape == (750, 1100) and region.pixel_count == int(mask.sum()) > 0
        assert region.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        assert np.array_equal(rle_counts(region.cells, region.frame), rle_from_mask(mask))


@pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")  # inside pycocotools
def test_coco_rle_round_trip_through_pycocotools(lite_engine):
    from pycocotools import mask as coco

    image = TF.resize(photo("astronaut"), [640, 480], antialias=True)
    (res,) = lite_engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})))])
    region = res.attributive.region
    string = coco_string(rle_counts(region.cells, region.frame))
    decoded = coco.decode({"size": [640, 480], "counts": string})
    assert decoded.shape == (640, 480) and np.array_equal(decoded.astype(bool), region.mask.numpy())
    assert coco.encode(np.asfortranarray(decoded))["counts"] == string  # byte-identical to COCO's own encoder
    assert int(coco.area({"size": [640, 480], "counts": string})) == region.pixel_count


def test_reduced_decode_gives_masks_in_original_pixels(grid_engine):
    """An image decoded at 1/4 scale with its original size: same prediction, masks at the original size."""
    original = TF.resize(photo("chelsea"), [1200, 1804], antialias=True)
    reduced = TF.resize(original, [300, 451], antialias=True)
    opts = ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE}))
    full, small = grid_engine.explain([ImageRequest(original, opts),
                                       ImageRequest(reduced, opts, original_size=(1200, 1804))])
    assert (small.width, small.height) == (1804, 1200) and small.attributive.region.mask.shape == (1200, 1804)
    assert small.top_classes[0].class_id == full.top_classes[0].class_id
    a, b = full.attributive.region.mask, small.attributive.region.mask
    assert float((a & b).sum()) / float((a | b).sum()) >= 0.9


def test_coverage_counts_cells_of_the_working_grid():
    _, geo = PREP(torch.zeros(3, 300, 451, dtype=torch.uint8))
    heat = torch.rand(7, 7, generator=torch.Generator().manual_seed(1)) + 0.1  # positive, no ties
    for side in (224, 56, 20):
        (region,) = regions(heat[None], geo, Threshold(coverage=0.25), WorkingGrid(side, 224))
        assert region.cells.shape == (side, side) and int(region.cells.sum()) == round(0.25 * side * side)


@pytest.mark.parametrize("shape", [(1, 1), (1, 15), (15, 1), (3, 60)])
def test_degenerate_shapes_are_explained(tiny_engine, shape):
    image = torch.full((3,) + shape, 128, dtype=torch.uint8)
    (res,) = tiny_engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})))])
    assert res.ok and res.attributive.region.mask.shape == shape


@pytest.mark.parametrize("shape", [(1, 10000), (10000, 1), (2, 100)])
def test_extreme_aspect_ratios_are_rejected_naming_the_field(tiny_engine, shape):
    image = torch.zeros((3,) + shape, dtype=torch.uint8)
    (res,) = tiny_engine.explain([ImageRequest(image, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})),
                                               field="images[3].data")])
    assert res.error.code == "INVALID_ARGUMENT" and res.error.field == "images[3].data"
    assert "aspect ratio" in res.error.message


class FaultyBackbone(nn.Module):
    """A real backbone that fails on one kind of image: a white top-left pixel next to a black one."""

    def __init__(self, inner: nn.Module, error: type[BaseException]):
        super().__init__()
        self.inner, self.error = inner, error

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        poisoned = (x[:, :, 0, 0] == 1).all(1) & (x[:, :, 0, 1] == 0).all(1)
        if bool(poisoned.any()):
            raise self.error("injected failure")
        return self.inner(x)


@pytest.mark.parametrize("error, code", [(RuntimeError, "INTERNAL"), (MemoryError, "RESOURCE_EXHAUSTED")])
def test_a_failing_image_fails_alone(error, code, caplog):
    engine = Engine.from_module("tiny_faulty", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                device="cpu")
    healthy = Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                 device="cpu")
    engine.split = dataclasses.replace(engine.split, backbone=FaultyBackbone(engine.split.backbone, error))
    good = torch.full((3, 4, 4), 100, dtype=torch.uint8)
    bad = good.clone()
    bad[:, 0, 0], bad[:, 0, 1] = 255, 0
    opts = ExplainOptions(top_e=3)
    requests = [ImageRequest(good, opts), ImageRequest(bad, opts, field="images[1].data",
                                                       tag="request r-42 images[1].data"),
                ImageRequest(quadrant_image(), opts)]
    with caplog.at_level(logging.ERROR, logger="galore.engine"):
        results = engine.explain(requests)
    assert [r.ok for r in results] == [True, False, True]
    assert results[1].error.code == code
    if code == "RESOURCE_EXHAUSTED":
        assert results[1].error.field == "images[1].data"
    assert any("r-42" in rec.getMessage() and rec.exc_info for rec in caplog.records)  # traceback + request id
    for req, got in zip((requests[0], requests[2]), (results[0], results[2])):
        (alone,) = healthy.explain([req])
        assert alone.top_classes == got.top_classes
        assert alone.counterfactual.strength == pytest.approx(got.counterfactual.strength)


@pytest.mark.parametrize("path", ["host branches (CPU)", "sync-free, k bound", "sync-free, no hints"])
def test_measure_equals_a_sorting_reference_with_ties_absolute_t_and_few_positive_cells(path):
    """``_measure`` selects without sorting and counts only on ties; the sync-free path (every device but the CPU)
    resolves the same branches with full-width ``torch.where``; a plain sort per row must agree exactly."""
    from galore.regions import _measure, _measure_sync_free

    g = torch.Generator().manual_seed(0)
    M, N = 60, 50
    values = torch.randint(-3, 6, (M, N), generator=g).float()  # integers: ties at the threshold everywhere
    values[0] = -1.0  # no positive cell
    values[1, :3], values[1, 3:] = 2.0, -2.0  # fewer positive cells than wanted
    k = torch.randint(0, N + 1, (M,), generator=g)
    k[1], k[2], k[3] = 10, N, 0
    k[::7] = -1  # absolute threshold rows: T x scale = 0.5 x 4 = 2
    absolute, scale = torch.full((M,), 0.5), torch.full((M,), 4.0)
    flags = torch.ones(M, dtype=torch.bool)
    if path.startswith("host"):
        got = _measure(values, k, absolute, flags, scale)
    else:  # the tightest bound the options could give, or none (all cells, absolute T possible)
        got = _measure_sync_free(values, k, absolute, flags, scale, int(k.max()) if "bound" in path else N, None)
    check_against_sorting(values, k, 2.0, got)
    assert int(got.kept[1]) == 3 and int(got.kept[0]) == 0  # every positive cell, none


def check_against_sorting(values: torch.Tensor, k: torch.Tensor, limit: float, got, rel: float = 1e-6) -> None:
    """The sorting reference: per row, tau is the k-th largest value by a full sort (or just above ``limit`` = T x
    scale where k < 0), the few-positive rule, kept = every value >= tau (ties included), strength their mean."""
    for m in range(values.shape[0]):
        v = values[m]
        if k[m] < 0:
            tau = float(torch.nextafter(torch.tensor(limit), torch.tensor(math.inf)))
            wanted = int((v >= tau).sum())
        else:
            wanted = min(int(k[m]), v.numel())
            tau = float(v.sort(descending=True).values[wanted - 1]) if wanted else math.inf
        tau = math.inf if wanted == 0 else tau
        tau = torch.finfo(torch.float32).tiny if wanted and tau <= 0 else tau
        keep = v >= tau
        assert int(got.wanted[m]) == wanted and int(got.kept[m]) == int(keep.sum()), m
        assert float(got.tau[m]) == tau, m
        expected = float(v[keep].double().mean()) if keep.any() else 0.0
        assert math.isclose(float(got.strength[m]), expected, rel_tol=rel, abs_tol=1e-6), m
        assert int(got.positive[m]) in (-1, int((v > 0).sum())), m


PATHS = {"compiled (CPU)": {"sync_free": False, "compiled": True},
         "torch blocks (CPU)": {"sync_free": False, "compiled": False},
         "sync-free": {"sync_free": True}}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("side, h, w", [(224, 7, 7), (37, 5, 3), (16, 4, 4), (10, 12, 9), (1, 3, 3), (16, 16, 1),
                                         (32, 2, 32), (260, 9, 9), (9, 1, 1)])
def test_grid_measure_and_masks_equal_the_sorting_reference_with_ties(side, h, w, path):
    """The whole working-grid measure of feature-grid maps, on the CPU by the C kernel (8 x 8 tiles, short ones at
    the edges when 8 does not divide the side) and by torch blocks (bounds from each block's corners, only the
    blocks that straddle a threshold upsampled), and sync-free, against a sort of every upsampled value.
    Regular tilings of 8 x 8, 1 x 8 and 8 x 1 blocks (224 over 7 x 7, 16 over 16 x 1, 32 over 2 x 32) and
    irregular ones (the rest) take the block path's two ways of upsampling and writing a block.
    Integer maps make plateaus: many cells tie at tau; absolute T, few-positive and all-zero maps included, and the
    masks equal ``values >= tau`` cell for cell."""
    from galore.regions import Rule

    if PATHS[path].get("compiled"):
        require_regions_kernel()
    g = torch.Generator().manual_seed(side)
    M = 40
    maps = torch.randint(-2, 4, (M, h, w), generator=g).float()
    maps[0], maps[1], maps[2, 0, 0] = -1.0, 0.0, 5.0  # no positive cell; all zero; one peak
    maps[3] = torch.randn(h, w, generator=g)  # no ties
    maps[4] = torch.randn(h, w, generator=g) * 1e-30  # tiny values
    maps[8] = -0.0  # negative zeros: equal to zero, never positive
    grid = WorkingGrid(side, 224, **PATHS[path])
    values = grid.upsample(maps).flatten(1)
    N = values.shape[1]
    k = torch.randint(0, N + 1, (M,), generator=g)
    k[5], k[6], k[1] = N, 0, max(1, N // 10)
    k[::7] = -1  # absolute T x scale: 0.5 x 4 = 2
    scale_groups = torch.arange(M)
    rule = Rule(k, torch.where(k < 0, 0.5, 0.0), scale_groups, k_max=N, any_absolute=True)
    # T's scale is each map's own peak; put every absolute row's peak at 4 so T x scale = 2, as the reference has
    peak = values.amax(1)
    maps[k < 0] *= torch.where(peak[k < 0] > 0, 4.0 / peak[k < 0], 1.0)[:, None, None]
    values = grid.upsample(maps).flatten(1)
    scale = values.amax(1)
    flags = torch.ones(M, dtype=torch.bool)
    got = grid.measure(maps, rule, flags)
    for m in range(M):  # the reference with each row's own scale
        limit = float(0.5 * max(float(scale[m]), torch.finfo(torch.float32).tiny))
        check_against_sorting(values[m:m + 1], k[m:m + 1], limit,
                              type(got)(*(getattr(got, f)[m:m + 1] for f in ("wanted", "tau", "kept", "positive",
                                                                             "strength"))), rel=1e-5)
    assert torch.equal(got.positive, (values > 0).sum(1))
    assert torch.equal(grid.cell_masks(maps, got.tau).flatten(1), values >= got.tau[:, None])


@pytest.mark.parametrize("path", PATHS)
def test_measure_of_no_maps_is_empty_with_the_dtypes_of_many(path):
    from galore.regions import Rule

    if PATHS[path].get("compiled"):
        require_regions_kernel()
    grid = WorkingGrid(224, 224, **PATHS[path])
    rule = Rule.coverage_of(Threshold(coverage=0.1), grid.cells)
    none, some = (grid.measure(torch.rand(n, 7, 7), rule.expand(n)) for n in (0, 2))
    for f in ("wanted", "tau", "kept", "positive", "strength"):
        assert getattr(none, f).shape == (0,) and getattr(none, f).dtype == getattr(some, f).dtype, f


def test_batched_pixel_counts_and_boxes_equal_the_per_mask_ones():
    """CellFrame.summaries (what measure_batch uses) against pixel_count and bbox, on frames with pixels outside the
    crop at both ends, cells no pixel falls in, and empty masks."""
    rng = np.random.default_rng(0)
    for _ in range(100):
        G, H, W = (int(n) for n in rng.integers(1, [9, 30, 30]))
        rows, cols = (np.concatenate([np.full(int(rng.integers(0, 3)), -1), np.sort(rng.integers(0, G, n)),
                                      np.full(int(rng.integers(0, 3)), -1)]) for n in (H, W))
        frame = CellFrame(rows, cols, G)
        cells = rng.random((4, G, G)) < rng.random()
        cells[0] = False
        counts, boxes = frame.summaries(cells)
        assert counts == [frame.pixel_count(c) for c in cells] and boxes == [frame.bbox(c) for c in cells]


def test_the_compiled_kernel_and_the_torch_blocks_give_the_same_bits_on_real_maps():
    """Lite0-like maps (7 x 7 Gaussians, 224 grid) at the engine's coverages: tau, counts and masks identical between
    the C kernel (its maps shared among 1 to 8 threads) and the torch block path; strengths to float64 rounding."""
    from galore.regions import Rule

    require_regions_kernel()
    g = torch.Generator().manual_seed(1)
    maps = torch.randn(64, 7, 7, generator=g).exp() * torch.rand(64, 1, 1, generator=g)
    maps[::5] = torch.relu(torch.randn(13, 7, 7, generator=g))  # plateaus of zeros
    before = torch.get_num_threads()
    try:
        for coverage, threads in ((0.005, 1), (0.1, 2), (0.5, 3), (1.0, 8)):  # the kernel's threads follow torch's
            torch.set_num_threads(threads)
            rule = Rule.coverage_of(Threshold(coverage=coverage), 224 * 224).expand(64)
            flags = torch.arange(64) % 2 == 0
            c, t = (WorkingGrid(224, 224, sync_free=False, compiled=on) for on in (True, False))
            a, b = c.measure(maps, rule, flags), t.measure(maps, rule, flags)
            for f in ("wanted", "tau", "kept", "positive"):
                assert torch.equal(getattr(a, f), getattr(b, f)), (coverage, f)
            torch.testing.assert_close(a.strength, b.strength, rtol=1e-5, atol=0)
            assert torch.equal(c.cell_masks(maps, a.tau), t.cell_masks(maps, b.tau)), coverage
    finally:
        torch.set_num_threads(before)


def test_the_kernel_refuses_buffers_that_do_not_fit_naming_them():
    """Its own checks, so a wrong call raises instead of reading or writing out of bounds."""
    from galore import regions
    from galore.regions import _blocks, _kernel_args

    require_regions_kernel()
    maps = torch.rand(3, 7, 7)
    args = list(_kernel_args(maps, _blocks(224, 7, 7, "cpu")))
    k, limit, flags = np.full(3, 10, np.int64), np.zeros(3, np.float32), np.zeros(3, np.uint8)
    outs = [np.empty(3, np.int64), np.empty(3, np.float32), np.empty(3, np.int64), np.empty(3, np.int64),
            np.empty(3, np.float32)]
    regions._kernel.measure(*args, k, limit, flags, *outs, 2)  # fits
    with pytest.raises(ValueError, match="k: expected 3 items"):
        regions._kernel.measure(*args, k[:2], limit, flags, *outs, 2)
    with pytest.raises(ValueError, match="maps: expected"):
        regions._kernel.measure(*([args[0][:2]] + args[1:]), k, limit, flags, *outs, 2)
    bad_axis = args[5].copy()
    bad_axis[0] = 7  # a feature row index outside the 7 rows
    with pytest.raises(ValueError, match="y axis: feature index out of"):
        regions._kernel.measure(*(args[:5] + [bad_axis] + args[6:]), k, limit, flags, *outs, 2)
    with pytest.raises(ValueError, match="out: expected"):
        regions._kernel.masks(*args, np.zeros(3, np.float32), np.zeros((3, 224, 223), np.bool_), 1)


@pytest.mark.parametrize("seed", range(4))
def test_the_kernel_equals_every_cell_on_random_grids_and_magnitudes(seed):
    """Random grid sides and feature grids (irregular tilings, 1 x 1 maps), counts, absolute thresholds, and values
    from denormal to 1e37: the C kernel's tau, counts, positives and masks equal the sync-free path's, which
    upsamples and selects every cell."""
    from galore.regions import Rule

    require_regions_kernel()
    g = torch.Generator().manual_seed(seed)
    for _ in range(15):
        side, h, w, M = (int(torch.randint(lo, hi, (1,), generator=g)) for lo, hi in ((1, 261), (1, 15), (1, 15),
                                                                                       (1, 12)))
        scale = 10.0 ** torch.randint(-40, 38, (M, 1, 1), generator=g).double()
        maps = (torch.randn(M, h, w, generator=g, dtype=torch.float64) * scale).float()
        maps[torch.rand(M, generator=g) < 0.2] = maps[0].round()  # plateaus
        N = side * side
        k = torch.randint(0, N + 2, (M,), generator=g)
        k[torch.rand(M, generator=g) < 0.2] = -1
        rule = Rule(k, torch.rand(M, generator=g), None, k_max=N, any_absolute=True)
        flags = torch.rand(M, generator=g) < 0.5
        kernel, every = WorkingGrid(side, 224, sync_free=False, compiled=True), WorkingGrid(side, 224, sync_free=True)
        a, b = kernel.measure(maps, rule, flags), every.measure(maps, rule, flags)
        for f in ("wanted", "tau", "kept"):
            assert torch.equal(getattr(a, f), getattr(b, f)), (side, h, w, f)
        assert torch.equal(a.positive[flags], b.positive[flags])
        assert torch.equal(kernel.cell_masks(maps, a.tau), every.cell_masks(maps, b.tau))


def test_tile_bounds_keep_their_rounding_margin():
    """A constant map's cells are not all equal after the two lerps' roundings, and its largest cells can lie
    inside tiles, above every tile corner (the bilinear bound holds only up to rounding). An absolute threshold at
    that largest value must still find them: the kernel and the torch blocks widen every tile's bounds (MARGIN),
    and agree with the path that upsamples every cell."""
    from galore.regions import Rule

    require_regions_kernel()
    g = torch.Generator().manual_seed(5)
    checked = 0
    for c in torch.rand(100, generator=g).tolist():
        maps = torch.full((1, 5, 5), c)
        every = WorkingGrid(224, 224, sync_free=True)
        peak = every.upsample(maps).max()
        T = torch.nextafter(peak, torch.tensor(0.0)) / peak  # T x peak rounds just below the peak
        limit = torch.nextafter((T * peak).float(), torch.tensor(math.inf))
        if limit != peak:
            continue
        rule = Rule(torch.tensor([-1]), T.reshape(1), None, k_max=0, any_absolute=True)
        b = every.measure(maps, rule)
        for compiled in (True, False):  # the C kernel and the torch blocks (``_Blocks.MARGIN``)
            a = WorkingGrid(224, 224, sync_free=False, compiled=compiled).measure(maps, rule)
            assert int(b.wanted[0]) > 0 and torch.equal(a.wanted, b.wanted) and torch.equal(a.kept, b.kept), c
        checked += 1
    assert checked >= 10  # the construction holds for most values
