"""Through the real service: a 24 MP photo with 969 maps, 1 x N and N x 1 images, and a sliver beyond the aspect
limit, all in ONE request with ordinary photos: each image gets its own answer and its neighbours stay OK."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from skimage import data

from galore.masks import coco_counts
from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import decode_mask

from .conftest import encode


@pytest.fixture(scope="module")
def photo_24mp() -> bytes:
    """skimage's cat photo upscaled to 6000 x 4000 (24 MP), as a phone would send it."""
    return encode(np.asarray(Image.fromarray(data.chelsea()).resize((6000, 4000), Image.BICUBIC)))


def test_mixed_sizes_in_one_request(grpc_client, chelsea, photo_24mp):
    images = [chelsea, encode(np.full((1, 15, 3), 128, np.uint8), "PNG"), encode(np.full((15, 1, 3), 90, np.uint8),
              "PNG"), encode(np.zeros((1, 10000, 3), np.uint8), "PNG"), photo_24mp, chelsea]
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_DELIBERATIVE, pb.EXPLANATION_KIND_ATTRIBUTIVE],
                                top_e=18, dims=[2, 3])  # C(18, 2) + C(18, 3) = 969 maps per image
    response = grpc_client.explain(images, options)
    codes = [image.status.code for image in response.images]
    assert codes == ["OK", "OK", "OK", "INVALID_ARGUMENT", "OK", "OK"], codes
    sliver = response.images[3].status
    assert sliver.field == "images[3].data" and "aspect ratio" in sliver.message
    assert [(i.width, i.height) for i in response.images[:3]] == [(451, 300), (15, 1), (1, 15)]
    big = response.images[4]
    assert (big.width, big.height) == (6000, 4000)
    # the same cat (its two top classes are within 1 % of each other, so upscaling may swap them)
    assert big.top_classes[0].class_id in {c.class_id for c in response.images[0].top_classes[:2]}
    for image in (response.images[0], big):
        assert [g.dim for g in image.deliberative] == [2, 3] and all(len(g.insecurities) == 5 for g in image.deliberative)
    mask = big.attributive.region.mask
    assert mask.WhichOneof("encoding") == "coco_rle" and len(mask.coco_rle) < 20_000  # vs 3 MB of bits
    pixels = decode_mask(mask)
    assert pixels.shape == (4000, 6000) and int(pixels.sum()) == mask.pixel_count
    assert int(coco_counts(mask.coco_rle).sum()) == 6000 * 4000
    # resize 4000 -> 256, crop 224: the model saw the central 3500 x 3500 pixels; 10 % of them are kept
    assert mask.pixel_count == pytest.approx(0.1 * 3500 * 3500, rel=0.01)
    ys, xs = np.nonzero(pixels)
    assert xs.min() >= 1250 and xs.max() < 4750 and ys.min() >= 250 and ys.max() < 3750
    assert response.images[5].deliberative[0].insecurities[0].class_ids == \
        response.images[0].deliberative[0].insecurities[0].class_ids  # neighbours unaffected
