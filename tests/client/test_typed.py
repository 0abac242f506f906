"""The client's wire decoding agrees with the service's own encoding (galore_service/convert.py), bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from galore.options import ExplainOptions, MaskEncoding
from galore_api.v1 import explainer_pb2 as pb
from galore_cli.images import read_image
from galore_client.settings import ExplainSettings
from galore_client.typed import WireFormatError, mask_from_proto, settings_to_proto
from galore_service import convert
from tests.regions import region_of


@pytest.mark.parametrize("encoding", list(MaskEncoding))
@pytest.mark.parametrize("height,width", [(1, 1), (3, 5), (7, 13), (300, 451)])
def test_mask_decoding_matches_the_servers_encoding(height, width, encoding):
    rng = np.random.default_rng(height * 1000 + width)
    mask = rng.random((height, width)) < 0.3
    message = convert.mask(region_of(mask), encoding)
    wire = pb.Mask.FromString(message.SerializeToString())
    assert wire.WhichOneof("encoding") == {MaskEncoding.RLE: "coco_rle", MaskEncoding.BITS: "bits"}[encoding]
    decoded = mask_from_proto(wire, width, height)
    assert decoded.dtype == bool and decoded.shape == (height, width)
    assert np.array_equal(decoded, mask)


def test_mask_unpacking_is_row_major_most_significant_bit_first():
    # 3 x 4 image, pixels (x=0, y=0), (x=3, y=0) and (x=1, y=2): bits 0, 3 and 9
    message = pb.Mask(width=4, height=3, bits=bytes([0b10010000, 0b01000000]), pixel_count=3)
    expected = np.zeros((3, 4), bool)
    expected[0, 0] = expected[0, 3] = expected[2, 1] = True
    assert np.array_equal(mask_from_proto(message, 4, 3), expected)


@pytest.mark.parametrize("message,error", [
    (pb.Mask(width=4, height=3, bits=bytes(2), pixel_count=0), "mask is 4x3, image is 5x3"),
    (pb.Mask(width=5, height=3, bits=bytes(3), pixel_count=0), "expected 2 bytes for 5x3 pixels, got 3"),
    (pb.Mask(width=5, height=3, bits=bytes([255, 0]), pixel_count=7), "pixel_count 7 but 8 bits set"),
])
def test_inconsistent_masks_are_rejected_with_the_reason(message, error):
    with pytest.raises(WireFormatError, match=error):
        mask_from_proto(message, 5, 3, "attributive.region.mask")


def test_settings_survive_the_wire_as_the_server_parses_them():
    settings = ExplainSettings(kinds=("deliberative", "counterfactual"), attribution="grad_cam", score="certainty",
                               target="probability", top_e=6, dims=(3, 2), max_insecurities=4, top_k=3,
                               counter_classes=(282, 287), absolute=0.5,  # 0.5: exact in float32
                               include_heatmaps=True, ig_steps=9, clip_negative=False, normalize=True)
    wire = pb.ExplainOptions.FromString(settings_to_proto(settings, {287: b"jpeg"}).SerializeToString())
    assert [c.class_id for c in wire.counter_classes] == [282, 287]
    assert [c.exemplar for c in wire.counter_classes] == [b"", b"jpeg"]
    assert wire.HasField("clip_negative") and not wire.clip_negative and wire.normalize
    assert convert.to_options(wire, (282, 287), 1000) == settings.options


def test_defaults_survive_the_wire_as_the_server_parses_them():
    wire = settings_to_proto(ExplainSettings())
    assert wire.ByteSize() == 0  # every field is the engine default, which the proto spells as "unset"
    assert convert.to_options(wire, (), 1000) == ExplainSettings().options == ExplainOptions()


def test_prediction_only_and_label_counters_reach_the_wire():
    wire = settings_to_proto(ExplainSettings(prediction_only=True, counter_classes=("tabby", 5)))
    assert wire.prediction_only and not wire.kinds
    assert [c.WhichOneof("class_ref") for c in wire.counter_classes] == ["label", "class_id"]
    assert convert.to_options(wire, (281, 5), 1000).kinds == frozenset()


def test_local_explanations_carry_the_engines_own_masks_and_strengths(local_backend, chelsea_path):
    """--local runs the handler's converters: its typed result equals the engine's result, mask for mask."""
    import torch
    from galore import ImageRequest

    engine = local_backend.engine
    image = read_image(chelsea_path)
    settings = ExplainSettings(dims=(2, 3), counter_classes=(287,), include_heatmaps=True)

    def chw(pixels):
        return torch.from_numpy(np.array(pixels, dtype=np.uint8, copy=True)).permute(2, 0, 1).contiguous()

    [result] = engine.explain([ImageRequest(image=chw(image.pixels), options=settings.options,
                                            exemplars={287: chw(image.pixels)})])
    [local] = local_backend.explain([image], settings, {287: image})
    assert local.ok and (local.width, local.height) == (451, 300) == (result.width, result.height)
    assert [c.label for c in local.top_classes] == [c.label for c in result.top_classes]
    pairs = [(local.attributive.region, result.attributive.region),
             (local.self_aware.region, result.self_aware.region),
             (local.counterfactual.query, result.counterfactual.query),
             (local.counterfactual.exemplars[0].region, result.counterfactual.exemplars[0].region)]
    ranked = sorted((ins for group in result.deliberative.values() for ins in group),
                    key=lambda ins: float(ins.region.strength), reverse=True)
    pairs += list(zip((i.region for i in local.insecurities), (i.region for i in ranked)))
    assert len(pairs) == 4 + 10  # 5 pairs + 5 triples from E = 5
    for typed, engine_region in pairs:
        assert np.array_equal(typed.mask, engine_region.mask.numpy())
        assert typed.pixel_count == int(engine_region.pixel_count) > 0
        assert typed.strength == pytest.approx(float(engine_region.strength), rel=1e-4, abs=1e-12)
        # two engine runs: float sums may differ in the last bits
        assert np.allclose(typed.heatmap, engine_region.heatmap.numpy(), rtol=1e-4, atol=0)
    assert local.counterfactual.exemplars[0].cls.label == "lynx" and local.counterfactual.complete
