"""Explain over the real gateway and TorchServe with a real photo: predictions, insecurities, masks, counterfactual."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageOps

from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import decode_mask, heatmap_array

from .conftest import CATS, encode

K = pb.ExplanationKind


@pytest.fixture(scope="module")
def full(grpc_client, chelsea) -> pb.ImageExplanation:
    options = pb.ExplainOptions(top_e=5, dims=[2, 3], max_insecurities=4, include_heatmaps=True)
    response = grpc_client.explain([chelsea], options, ids=["chelsea"])
    assert response.status.code == "OK"
    assert len(response.images) == 1
    return response.images[0]


def test_top_classes_are_cats(full):
    assert full.id == "chelsea" and full.status.code == "OK"
    labels = [c.label for c in full.top_classes]
    assert len(labels) == 5
    assert set(labels[:3]) <= CATS, labels
    probabilities = [c.probability for c in full.top_classes]
    assert probabilities == sorted(probabilities, reverse=True)
    assert 0.0 < sum(probabilities) <= 1.0 + 1e-5
    assert full.score_kind == pb.CONFIDENCE_SCORE_SOFTMAX
    assert full.score == pytest.approx(probabilities[0], rel=1e-5)  # softmax score is h_y*(x)


def test_insecurities_are_sorted_pairs_and_triples(full):
    top_e = {c.class_id for c in full.top_classes}
    assert [g.dim for g in full.deliberative] == [2, 3]
    for group in full.deliberative:
        assert 1 <= len(group.insecurities) <= 4
        strengths = [i.region.strength for i in group.insecurities]
        assert strengths == sorted(strengths, reverse=True)
        tuples = [tuple(sorted(i.class_ids)) for i in group.insecurities]
        assert len(set(tuples)) == len(tuples)  # no class tuple twice
        for insecurity in group.insecurities:
            assert len(insecurity.class_ids) == group.dim == len(set(insecurity.class_ids))
            assert set(insecurity.class_ids) <= top_e
            by_id = {c.class_id: c.label for c in full.top_classes}
            assert list(insecurity.labels) == [by_id[c] for c in insecurity.class_ids]


def _check_mask(mask: pb.Mask, width: int, height: int) -> np.ndarray:
    assert (mask.width, mask.height) == (width, height)
    assert mask.WhichOneof("encoding") == "coco_rle" and len(mask.coco_rle) < 20_000  # the default encoding
    pixels = decode_mask(mask)
    assert pixels.shape == (height, width)
    assert int(pixels.sum()) == mask.pixel_count > 0
    ys, xs = np.nonzero(pixels)
    assert (mask.bbox.x0, mask.bbox.y0, mask.bbox.x1, mask.bbox.y1) == \
        (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    return pixels


def test_masks_decode_to_the_original_image_size(full):
    assert (full.width, full.height) == (451, 300)  # chelsea is 451 wide, 300 high
    for region in (full.attributive.region, full.self_aware.region, full.counterfactual.query,
                   *(i.region for g in full.deliberative for i in g.insecurities)):
        _check_mask(region.mask, 451, 300)
    heat = heatmap_array(full.attributive.region.heatmap)
    assert heat.shape == (7, 7) and np.isfinite(heat).all() and heat.max() > 0
    assert full.attributive.class_id == full.top_classes[0].class_id


def test_heatmaps_are_left_out_unless_asked(grpc_client, chelsea):
    image = grpc_client.explain([chelsea], pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_ATTRIBUTIVE])).images[0]
    assert image.HasField("attributive") and not image.attributive.region.HasField("heatmap")
    assert not image.HasField("counterfactual") and not image.deliberative


def test_larger_coverage_keeps_more_pixels(grpc_client, chelsea):
    counts = []
    for coverage in (0.05, 0.3):
        options = pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_ATTRIBUTIVE], threshold=pb.Threshold(coverage=coverage))
        counts.append(grpc_client.explain([chelsea], options).images[0].attributive.region.mask.pixel_count)
    assert counts[0] < counts[1]
    assert counts[1] / counts[0] == pytest.approx(6.0, rel=0.1)


def test_exif_orientation_is_applied(grpc_client, chelsea):
    rotated = Image.open(io.BytesIO(chelsea))
    exif = rotated.getexif()
    exif[0x0112] = 6  # "rotate 90 CW to display": the displayed image is 300 wide, 451 high
    buffer = io.BytesIO()
    rotated.save(buffer, "JPEG", exif=exif.tobytes())
    image = grpc_client.explain([buffer.getvalue()], pb.ExplainOptions(prediction_only=True)).images[0]
    assert (image.width, image.height) == (300, 451)
    assert image.top_classes[0].label in CATS


def test_counterfactual_with_request_exemplar_has_both_sides(grpc_client, chelsea):
    exemplar = encode(np.ascontiguousarray(np.asarray(ImageOps.mirror(Image.open(io.BytesIO(chelsea))))))
    options = pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_COUNTERFACTUAL],
                                counter_classes=[pb.CounterClass(label="tabby", exemplar=exemplar)])
    image = grpc_client.explain([chelsea], options).images[0]
    cf = image.counterfactual
    assert list(cf.counter_ids) == [281] and cf.predicted_id == image.top_classes[0].class_id
    assert cf.complete and len(cf.exemplars) == 1
    side = cf.exemplars[0]
    assert (side.class_id, side.label, side.missing_reason) == (281, "tabby", "")
    query = _check_mask(cf.query.mask, 451, 300)
    counter = _check_mask(side.region.mask, 451, 300)
    # equal working-grid cell counts (equal size where the model looks); cells cover 1 or 2 original pixels here
    assert abs(int(query.sum()) - int(counter.sum())) <= 0.01 * int(query.sum())
    assert cf.strength > 0


def test_counterfactual_without_exemplar_says_why(grpc_client, chelsea):
    options = pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_COUNTERFACTUAL],
                                counter_classes=[pb.CounterClass(class_id=282)])
    cf = grpc_client.explain([chelsea], options).images[0].counterfactual
    assert list(cf.counter_ids) == [282] and not cf.complete
    assert not cf.exemplars[0].HasField("region") and "exemplar" in cf.exemplars[0].missing_reason
    _check_mask(cf.query.mask, 451, 300)


def test_model_info(grpc_client):
    info = grpc_client.model_info()
    assert info.name == "efficientnet_lite0" and info.architecture == "efficientnet_lite0"
    assert len(info.classes) == 1000
    assert (info.classes[281].class_id, info.classes[281].label) == (281, "tabby")
    assert (info.feature_height, info.feature_width, info.input_size) == (7, 7, 224)
    assert info.layer
    assert pb.CONFIDENCE_SCORE_SOFTMAX in info.scores and pb.CONFIDENCE_SCORE_EASINESS not in info.scores
    assert not info.has_hardness_predictor
    assert set(info.attributions) == set(pb.AttributionFunction.values()) - {0}
    assert info.limits.max_images_per_request == 16 and info.limits.max_pixels == 40_000_000
    assert info.limits.max_request_bytes == info.limits.max_response_bytes == 104857600
    assert info.max_batch_size == 4  # batchSize of deploy/torchserve/model-config.yaml
    assert info.precision == pb.BACKBONE_PRECISION_FP32  # the default archive's backbone (BENCHMARKS.md)


def test_explained_class_by_label(grpc_client, chelsea):
    options = pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_ATTRIBUTIVE, K.EXPLANATION_KIND_SELF_AWARE], top_k=5,
                                explained_class=pb.ClassRef(label="lynx"))
    response = grpc_client.explain([chelsea], options)
    image = response.images[0]
    assert response.status.code == "OK" and image.top_classes[0].label != "lynx"
    for explained in (image.attributive, image.self_aware):
        assert (explained.label, explained.class_id) == ("lynx", 287)
        assert 0 < explained.probability < image.top_classes[0].probability
        assert explained.region.mask.pixel_count > 0
    default = grpc_client.explain([chelsea], pb.ExplainOptions(kinds=[K.EXPLANATION_KIND_ATTRIBUTIVE])).images[0]
    assert default.attributive.class_id == default.top_classes[0].class_id
    assert default.attributive.probability == pytest.approx(default.top_classes[0].probability)
