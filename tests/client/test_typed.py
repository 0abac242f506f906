"""The client's wire decoding agrees with the service's own encoding (handlers/convert.py), bit for bit."""
from __future__ import annotations

import numpy as np
import pytest

from galore_api.v1 import explainer_pb2 as pb
from galore_client.images import read_image
from galore_client.local import explanation_from_engine
from galore_client.settings import ExplainSettings
from galore_client.typed import WireFormatError, explanation_from_proto, mask_from_proto, settings_to_proto
from handlers import convert


@pytest.mark.parametrize("height,width", [(1, 1), (3, 5), (7, 13), (300, 451)])
def test_mask_unpacking_matches_the_servers_bit_packing(height, width):
    import torch

    rng = np.random.default_rng(height * 1000 + width)
    mask = rng.random((height, width)) < 0.3
    message = convert.mask(torch.from_numpy(mask), int(mask.sum()), None)
    wire = pb.Mask.FromString(message.SerializeToString())
    assert len(wire.bits) == (height * width + 7) // 8
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
                               include_heatmaps=True, ig_steps=9)
    wire = pb.ExplainOptions.FromString(settings_to_proto(settings, {287: b"jpeg"}).SerializeToString())
    assert [c.class_id for c in wire.counter_classes] == [282, 287]
    assert [c.exemplar for c in wire.counter_classes] == [b"", b"jpeg"]
    assert convert.to_options(wire, (282, 287), 1000) == settings.to_engine_options()


def test_defaults_survive_the_wire_as_the_server_parses_them():
    wire = settings_to_proto(ExplainSettings())
    assert wire.ByteSize() == 2  # only include_heatmaps=true is sent; everything else is the service default
    assert convert.to_options(wire, (), 1000) == ExplainSettings().to_engine_options()


def test_a_served_explanation_decodes_to_the_same_result_as_the_local_one(local_backend, chelsea_path):
    """Engine result -> the handler's ImageExplanation bytes -> typed, equals engine result -> typed directly."""
    from galore import ImageRequest

    from galore_client.local import to_chw

    engine = local_backend.engine
    image = read_image(chelsea_path)
    options = ExplainSettings(dims=(2, 3), counter_classes=(287,)).to_engine_options()
    [result] = engine.explain([ImageRequest(image=to_chw(image.pixels), options=options,
                                            exemplars={287: to_chw(image.pixels[:, ::-1])})])
    wire = pb.ImageExplanation.FromString(
        convert.image_explanation("chelsea", result, engine.labels, True).SerializeToString())
    served = explanation_from_proto(wire, engine.labels)
    local = explanation_from_engine(result, engine.labels)
    assert served.ok and (served.width, served.height) == (451, 300)
    assert [c.label for c in served.top_classes] == [c.label for c in local.top_classes]
    pairs = [(served.attributive.region, local.attributive.region),
             (served.self_aware.region, local.self_aware.region),
             (served.counterfactual.query, local.counterfactual.query),
             (served.counterfactual.exemplars[0].region, local.counterfactual.exemplars[0].region)]
    pairs += list(zip((i.region for i in served.insecurities), (i.region for i in local.insecurities)))
    assert len(pairs) == 4 + 10  # 5 pairs + 5 triples from E = 5
    for wired, direct in pairs:
        assert wired.mask.shape == direct.mask.shape and np.array_equal(wired.mask, direct.mask)
        assert wired.pixel_count == direct.pixel_count > 0 and wired.bbox == direct.bbox
        assert wired.strength == pytest.approx(direct.strength, rel=1e-6, abs=1e-12)
        assert np.allclose(wired.heatmap, direct.heatmap, rtol=1e-6, atol=0)
    assert [i.labels for i in served.insecurities] == [i.labels for i in local.insecurities]
    assert served.counterfactual.exemplars[0].cls.label == "lynx"
    assert served.counterfactual.complete
    assert served.counterfactual.exemplars[0].exemplar_key == local.counterfactual.exemplars[0].exemplar_key
