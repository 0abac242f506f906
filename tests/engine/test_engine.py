"""Engine behaviour: model split, batch independence, real photos, mask geometry, bad input, easiness."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from galore import (Attribution, Engine, ExplainOptions, FailedPrecondition, ImageRequest, InvalidArgument, Kind,
                    ModelError, Score, Threshold)
from galore.model import split_classifier
from galore.preprocess import Preprocess

from .conftest import IDENTITY_PREP, gray_pool_model, photo, quadrant_image

CATS = {"tabby", "tiger cat", "Egyptian cat", "Persian cat", "Siamese cat", "lynx"}


@pytest.mark.parametrize("arch,layer,shape", [
    ("resnet18", "layer4.1.relu_1", (512, 7, 7)), ("vgg11", "features.19", (512, 14, 14)),
    ("alexnet", "features.11", (256, 13, 13)), ("densenet121", "relu", (1024, 7, 7)),
    ("efficientnet_b0", "features.8.2", (1280, 7, 7)), ("mobilenet_v2", "features.18.2", (1280, 7, 7)),
    ("mobilenet_v3_small", "features.12.2", (576, 7, 7))])
def test_split_picks_last_conv_map_and_preserves_outputs(arch, layer, shape):
    model = getattr(torchvision.models, arch)(num_classes=7).eval()
    split = split_classifier(model)
    assert (split.layer, split.feature_shape) == (layer, shape)  # VGG: last conv ReLU, 14x14, before max-pool
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(split.head(split.backbone(x)), model(x))


def test_split_layer_override_by_module_name():
    split = split_classifier(torchvision.models.resnet18(num_classes=5).eval(), layer="layer3")
    assert split.layer.startswith("layer3.") and split.feature_shape == (256, 14, 14)
    with pytest.raises(ModelError, match="layer"):
        split_classifier(torchvision.models.resnet18(num_classes=5).eval(), layer="nope")


def test_default_model_real_photo_cats_and_deliberation(lite_engine):
    img = photo("chelsea")  # (3, 300, 451)
    (res,) = lite_engine.explain([ImageRequest(img, ExplainOptions(dims=(2, 3), threshold=Threshold(coverage=0.1)))])
    assert res.error is None
    assert {c.label for c in res.top_classes[:3]} == {"tabby", "tiger cat", "Egyptian cat"}
    top = res.deliberative[2][0]
    assert {lite_engine.labels[c] for c in top.class_ids} <= CATS  # strongest insecurity: a pair of cats
    crop_pixels = round(224 / 256 * 300) ** 2  # the centre crop, in original pixels (262 x 262)
    for V in (2, 3):
        ins = res.deliberative[V]
        assert len(ins) == 5 and all(len(i.class_ids) == V for i in ins)
        assert [i.region.strength for i in ins] == sorted((i.region.strength for i in ins), reverse=True)
        for i in ins:
            m = i.region.mask
            assert m.shape == (300, 451) and int(m.sum()) == i.region.pixel_count
            assert abs(i.region.pixel_count - 0.1 * crop_pixels) <= 0.002 * crop_pixels  # sized as requested
            x0, y0, x1, y1 = i.region.bbox
            assert 0 <= x0 < x1 <= 451 and 0 <= y0 < y1 <= 300
    assert res.attributive.region.pixel_count > 0 and res.self_aware.region.pixel_count > 0
    assert res.counterfactual.counter_ids == (res.top_classes[1].class_id,)  # runner-up by default


def test_batch_independence_mixed_requests(lite_engine):
    a, b, c = photo("chelsea"), photo("coffee"), photo("rocket")
    reqs = [ImageRequest(a, ExplainOptions(dims=(2, 3))),
            ImageRequest(b, ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE}), attribution=Attribution.GRAD_CAM)),
            ImageRequest(c, ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(744, 812),
                                           score=Score.CERTAINTY), exemplars={744: a})]
    together = lite_engine.explain(reqs)
    for req, mixed in zip(reqs, together):
        (alone,) = lite_engine.explain([req])
        assert [x.class_id for x in alone.top_classes] == [x.class_id for x in mixed.top_classes]
        for r1, r2 in zip(_regions(alone), _regions(mixed)):
            torch.testing.assert_close(r1.heatmap, r2.heatmap, rtol=0, atol=1e-5 * max(1e-12, float(r1.heatmap.abs().max())))
            # float noise at 1e-5 can swap cells tied at the threshold: masks agree up to that
            assert abs(r1.pixel_count - r2.pixel_count) <= 1e-3 * r1.pixel_count
            inter = int((r1.cells & r2.cells).sum())
            assert inter >= 0.99 * max(int(r1.cells.sum()), int(r2.cells.sum()))
    assert together[2].counterfactual.exemplars[0].region is not None
    assert together[2].counterfactual.exemplars[1].region is None  # no exemplar for 812: query side only


def _regions(res):
    out = [r.region for r in (res.attributive, res.self_aware) if r is not None]
    out += [i.region for V in sorted(res.deliberative) for i in res.deliberative[V]]
    if res.counterfactual:
        out += [res.counterfactual.query] + [e.region for e in res.counterfactual.exemplars if e.region]
    return out


def test_exemplar_features_are_cached(lite_engine):
    ex = photo("astronaut")
    req = ImageRequest(photo("coffee"), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}),
                                                       counter_classes=(1,)), exemplars={1: ex})
    hits, misses = lite_engine.cache_hits, lite_engine.cache_misses
    lite_engine.explain([req])
    lite_engine.explain([req])
    assert (lite_engine.cache_misses - misses, lite_engine.cache_hits - hits) == (1, 1)


def test_mask_lands_on_salient_block_of_non_square_image():
    """F = mean brightness on a 4x4 grid; the attributive mask must cover the one bright cell in the ORIGINAL
    200 x 300 image, whose centre crop spans x in [50, 250)."""
    model = gray_pool_model(grid=4, weights=torch.ones(2, 16))
    engine = Engine.from_module("grid4", model, ["a", "b"], Preprocess(resize=224, crop=224, mean=(0.,) * 3,
                                                                       std=(1.,) * 3), layer="1", device="cpu")
    img = torch.zeros(3, 200, 300, dtype=torch.uint8)
    img[:, 0:50, 200:250] = 255  # grid cell (row 0, col 3) of the crop
    opts = ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE}), threshold=Threshold(coverage=0.03))
    (res,) = engine.explain([ImageRequest(img, opts)])
    mask = res.attributive.region.mask
    assert mask.shape == (200, 300) and res.attributive.region.pixel_count > 0
    ys, xs = mask.nonzero(as_tuple=True)
    assert int(xs.min()) >= 200 and int(xs.max()) < 250 and int(ys.max()) < 50
    (flipped,) = engine.explain([ImageRequest(img.flip(-1), opts)])
    x0, y0, x1, y1 = flipped.attributive.region.bbox
    assert (300 - x1, y0, 300 - x0, y1) == res.attributive.region.bbox  # mirrored image, mirrored mask


def test_bad_input_raises_or_reports_named_fields(tiny_engine, lite_engine):
    good = ImageRequest(quadrant_image(), ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE})))
    bad = [
        (ImageRequest(quadrant_image().float(), good.options), "image"),
        (ImageRequest(quadrant_image()[:2], good.options), "image"),
        (ImageRequest(quadrant_image(), ExplainOptions(top_e=4, dims=(2,))), "options.top_e"),
        (ImageRequest(quadrant_image(), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(7,))),
         "options.counter_classes"),
        (ImageRequest(quadrant_image(), ExplainOptions(score=Score.EASINESS, top_e=3)), "options.score"),
        (ImageRequest(quadrant_image(), good.options, exemplars={1: quadrant_image()}), "exemplars"),
        (ImageRequest(quadrant_image(), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}),
                                                       counter_classes=(0,))), "options.counter_classes"),
    ]
    results = tiny_engine.explain([good] + [r for r, _ in bad] + [good])
    assert results[0].error is None and results[-1].error is None  # the good ones are still answered
    assert results[0].attributive.region.heatmap.tolist() == results[-1].attributive.region.heatmap.tolist()
    for res, (_, field) in zip(results[1:-1], bad):
        assert res.error is not None and res.error.field == field, (field, res.error)
    assert isinstance(results[5].error, FailedPrecondition) and results[5].error.code == "FAILED_PRECONDITION"
    assert "prediction itself" in results[7].error.message
    with pytest.raises(InvalidArgument, match="options.dims"):
        ExplainOptions(top_e=2, dims=(3,))  # V > E
    with pytest.raises(InvalidArgument, match="threshold.coverage"):
        Threshold(coverage=-0.1)
    with pytest.raises(InvalidArgument, match="counter_classes: unknown class label 'unicorn'"):
        lite_engine.class_id("unicorn")
    assert lite_engine.class_id("tabby") == 281 and lite_engine.class_id("281") == 281
    (res,) = lite_engine.explain([ImageRequest(photo("coffee"), ExplainOptions(top_e=1001))])
    assert res.error.field == "options.top_e" and "1000 classes" in res.error.message
    (res,) = lite_engine.explain([ImageRequest(photo("coffee"), ExplainOptions(top_e=40, dims=(3,)))])  # 9880 maps
    assert res.error.code == "RESOURCE_EXHAUSTED" and "9880 ambiguity maps" in res.error.message


def test_an_image_without_options_gets_the_defaults_for_a_model_of_few_classes(tiny_engine):
    """The tiny model has 3 classes: no options means E = K = 3 (ExplainOptions.defaults_for), as the service's
    unset fields; explicit options keep their values and are refused naming the field."""
    (res,) = tiny_engine.explain([ImageRequest(quadrant_image())])
    assert res.ok, res.error
    assert len(res.top_classes) == 3 and res.attributive is not None and res.counterfactual is not None
    assert {c for i in res.deliberative[2] for c in i.class_ids} <= {0, 1, 2} and res.deliberative[2]
    (res,) = tiny_engine.explain([ImageRequest(quadrant_image(), ExplainOptions())])
    assert res.error.field == "options.top_e" and "3 classes" in res.error.message


def test_easiness_with_hardness_predictor():
    torch.manual_seed(0)
    hardness = nn.Sequential(nn.Conv2d(3, 2, 1), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(8, 1)).eval()
    engine = Engine.from_module("tiny_hp", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                hardness=hardness, device="cpu")
    assert Score.EASINESS in engine.info.scores and engine.info.has_hardness
    (res,) = engine.explain([ImageRequest(quadrant_image(), ExplainOptions(score=Score.EASINESS, top_e=3))])
    x, _ = IDENTITY_PREP(quadrant_image())
    with torch.no_grad():
        expected = 1 - torch.sigmoid(hardness(x[None]))[0, 0]  # eq. (23)
    assert res.error is None and res.score == pytest.approx(float(expected), rel=1e-5)
    assert res.deliberative[2] and res.counterfactual.query.heatmap.shape == (2, 2)


@pytest.mark.parametrize("size", [(300, 451), (640, 427), (224, 224), (97, 500)])
def test_separable_upsampling_equals_grid_sample(size):
    img = torch.zeros(3, *size, dtype=torch.uint8)
    _, geo = Preprocess()(img)
    maps = torch.rand(3, 7, 7)
    from galore.preprocess import upsample_to_original
    values, inside = upsample_to_original(maps, geo)
    grid, _ = geo.sample_grid(maps.device)
    ref = torch.nn.functional.grid_sample(maps[:, None], grid[None].expand(3, -1, -1, -1), mode="bilinear",
                                          padding_mode="border", align_corners=False)[:, 0]
    torch.testing.assert_close(values[:, inside], ref[:, inside], rtol=1e-5, atol=1e-6)
    assert bool((values[:, ~inside] == 0).all())
    x0, y0, x1, y1 = geo.crop_box_original()
    ys, xs = inside.nonzero(as_tuple=True)
    assert x0 - 1 <= int(xs.min()) and int(xs.max()) <= x1 and y0 - 1 <= int(ys.min()) and int(ys.max()) <= y1


def test_shared_exemplar_is_one_row_and_each_image_gets_its_own_sides(lite_engine):
    """Two images with different predictions share one exemplar: its features and attribution row are shared,
    but each image's exemplar side uses its own C'_v = C minus y^v plus its own y* (eq. 13)."""
    ex = photo("chelsea")
    reqs = [ImageRequest(photo(name), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(281,)),
                         exemplars={281: ex}) for name in ("coffee", "rocket")]
    together = lite_engine.explain(reqs)
    for req, mixed in zip(reqs, together):
        (alone,) = lite_engine.explain([req])
        a, b = alone.counterfactual.exemplars[0].region, mixed.counterfactual.exemplars[0].region
        torch.testing.assert_close(a.heatmap, b.heatmap, rtol=1e-4, atol=1e-12)
        assert a.pixel_count == b.pixel_count > 0
    sides = [r.counterfactual.exemplars[0].region.heatmap for r in together]
    assert together[0].counterfactual.predicted_id != together[1].counterfactual.predicted_id
    assert not torch.allclose(sides[0], sides[1])  # C'_v contains each image's own prediction


def test_bank_exemplar_serves_the_default_runner_up_and_bad_exemplar_is_named():
    engine = Engine.from_module("tiny_bank", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                                device="cpu")
    engine.add_exemplar(1, quadrant_image(((0.8, 0.2), (0.2, 0.2))), key="bank/one/a.jpg")
    assert engine.info.exemplar_classes == (1,)
    opts = ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}))  # no counter class: the runner-up, class 1
    bad = ImageRequest(quadrant_image(), ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}), counter_classes=(1,)),
                       exemplars={1: quadrant_image()[:1]})
    good, failed = engine.explain([ImageRequest(quadrant_image(), opts), bad])
    (side,) = good.counterfactual.exemplars
    assert (side.class_id, side.exemplar_key) == (1, "bank/one/a.jpg") and good.counterfactual.complete
    assert side.region.pixel_count == good.counterfactual.query.pixel_count > 0
    assert failed.error.field == "exemplars[1]" and "(3, H, W)" in failed.error.message


@pytest.mark.parametrize("name,pair", [("chelsea", {"tiger cat", "Egyptian cat"}), ("rocket", {"missile", "projectile"})])
def test_readme_strongest_insecurity_pairs(lite_engine, name, pair):
    """The README's claim: with the defaults, the strongest insecurity (eq. 15) on chelsea is tiger cat / Egyptian
    cat and on rocket missile / projectile."""
    (res,) = lite_engine.explain([ImageRequest(photo(name), ExplainOptions(kinds=frozenset({Kind.DELIBERATIVE})))])
    assert {lite_engine.labels[c] for c in res.deliberative[2][0].class_ids} == pair
