"""Serving pieces without servers: mask packing, enum mapping, limits, configs, sliding rate."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from galore import masks
from galore.errors import InvalidArgument, ResourceExhausted
from galore.options import DEFAULT_PRECISION, MaskEncoding, Precision
from galore.options import Attribution, ExplainOptions, Kind, Score, Target
from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import decode_mask
from galore_gateway.config import ENVELOPE_BYTES, GatewayConfig
from galore_supervisor.deployment import LocalConfig, Ports, render_ts_config
from galore_gateway.metrics import SlidingRate
from galore_service import convert
from galore_service.config import HandlerConfig, Limits
from galore_service.decode import decode_image
from galore_service.wire import parse_explain_json
from tests.regions import region_of


def test_mask_bits_are_row_major_msb_first():
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, 0] = mask[0, 4] = mask[1, 2] = True  # bits 0, 4, 7 of 10
    packed = convert.mask(region_of(mask), MaskEncoding.BITS)
    assert packed.bits == bytes([0b10001001, 0b00000000]) and packed.WhichOneof("encoding") == "bits"
    assert (packed.width, packed.height, packed.pixel_count) == (5, 2, 3)
    assert (packed.bbox.x0, packed.bbox.y0, packed.bbox.x1, packed.bbox.y1) == (0, 0, 5, 2)
    assert np.array_equal(decode_mask(packed), mask)


def test_mask_rle_is_coco_column_major():
    mask = np.zeros((2, 5), dtype=bool)
    mask[0, 0] = mask[0, 4] = mask[1, 2] = True  # column-major: 1 0 | 0 0 | 0 1 | 0 0 | 1 0
    packed = convert.mask(region_of(mask))
    assert packed.WhichOneof("encoding") == "coco_rle"
    assert masks.coco_counts(packed.coco_rle).tolist() == [0, 1, 4, 1, 2, 1, 1]
    assert np.array_equal(decode_mask(packed), mask)


def test_empty_mask_has_no_bbox():
    packed = convert.mask(region_of(np.zeros((3, 3), dtype=bool)), MaskEncoding.BITS)
    assert not packed.HasField("bbox") and packed.bits == b"\x00\x00" and packed.pixel_count == 0


@pytest.mark.parametrize("galore_enum", [Kind, Attribution, Score, Target])
def test_every_engine_enum_has_a_proto_value_and_back(galore_enum):
    for member in galore_enum:
        number = convert.to_proto_enum(member)
        assert number > 0
        assert convert.to_galore_enum(galore_enum, number, "f") is member
        assert convert.to_proto_enum(member.value) == number


def test_unspecified_takes_the_default_and_unknown_numbers_name_the_field():
    assert convert.to_galore_enum(Score, 0, "options.score", Score.CERTAINTY) is Score.CERTAINTY
    with pytest.raises(InvalidArgument) as caught:
        convert.to_galore_enum(Score, 42, "options.score", Score.SOFTMAX)
    assert caught.value.field == "options.score"
    with pytest.raises(InvalidArgument) as caught:
        convert.to_options(pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_UNSPECIFIED]), (), 1000)
    assert caught.value.field == "options.kinds[0]"


def test_options_defaults_and_counts():
    options = convert.to_options(pb.ExplainOptions(), (), 1000)
    assert options.kinds == frozenset(Kind) and options.top_k == 5 and options.dims == (2,)
    assert options.clip_negative is True and options.threshold.coverage == 0.1
    options = convert.to_options(pb.ExplainOptions(prediction_only=True, clip_negative=False, dims=[3, 2, 3],
                                                   threshold=pb.Threshold(absolute=0.5)), (7,), 1000)
    assert options.kinds == frozenset() and options.clip_negative is False and options.dims == (2, 3)
    assert options.threshold.absolute == 0.5 and options.threshold.coverage is None
    assert options.counter_classes == (7,)
    small = convert.to_options(pb.ExplainOptions(), (), 3)  # unset counts shrink to a 3-class model, as the engine's
    assert (small.top_e, small.top_k) == (3, 3) and small == ExplainOptions.defaults_for(3)
    for bad, field in ((pb.ExplainOptions(top_k=-1), "options.top_k"), (pb.ExplainOptions(top_k=1001), "options.top_k"),
                       (pb.ExplainOptions(ig_steps=5000), "options.ig_steps"),
                       (pb.ExplainOptions(threshold=pb.Threshold(absolute=1.0)), "options.threshold.absolute"),
                       (pb.ExplainOptions(prediction_only=True, kinds=[1]), "options.prediction_only")):
        with pytest.raises(InvalidArgument) as caught:
            convert.to_options(bad, (), 1000)
        assert caught.value.field == field


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 20, 30)).save(buffer, "PNG")
    return buffer.getvalue()


def test_decode_gives_chw_uint8_rgb_and_enforces_limits():
    image, original = decode_image(_png(7, 3), "images[0].data", Limits())
    assert image.shape == (3, 3, 7) and image.dtype == torch.uint8 and original == (3, 7)
    assert image[:, 0, 0].tolist() == [10, 20, 30]
    with pytest.raises(ResourceExhausted) as caught:
        decode_image(_png(7, 3), "images[2].data", Limits(max_pixels=20))
    assert caught.value.field == "images[2].data" and "21 pixels" in caught.value.message
    with pytest.raises(ResourceExhausted):
        decode_image(_png(7, 3), "x", Limits(max_image_bytes=10))
    with pytest.raises(InvalidArgument):
        decode_image(_png(7, 3)[:40], "x", Limits())


def _encoded(image: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def _pgm16(samples: np.ndarray) -> bytes:
    """A binary 16-bit PGM (maxval 65535): Pillow reads it as mode I, 32-bit integers."""
    return f"P5 {samples.shape[1]} {samples.shape[0]} 65535\n".encode() + samples.astype(">u2").tobytes()


GREY16 = np.array([[0, 257, 32896], [65535, 65280, 128]], dtype=np.uint16)
GREY16_AS_8 = [[0, 1, 128], [255, 254, 0]]  # round(v * 255 / 65535), by hand


@pytest.mark.parametrize("encoded", [
    pytest.param(lambda: _encoded(Image.fromarray(GREY16), "PNG"), id="png-16-bit"),
    pytest.param(lambda: _encoded(Image.fromarray(GREY16), "TIFF"), id="tiff-16-bit"),
    pytest.param(lambda: _pgm16(GREY16), id="pgm-16-bit"),
])
def test_sixteen_bit_greyscale_is_scaled_not_clipped(encoded):
    """Pillow's convert("RGB") clips 16-bit samples at 255 (a 16-bit photo came out white); every 16-bit greyscale
    reaches the model scaled to 0..255, and the client reads the same pixels as the service."""
    from galore_cli.images import decode

    data = encoded()
    image, original = decode_image(data, "images[0].data", Limits())
    assert original == (2, 3)
    for channel in image:
        assert channel.tolist() == GREY16_AS_8
    assert np.array_equal(decode(data), image.permute(1, 2, 0).numpy())


def test_transparent_pixels_show_white_as_a_viewer_shows_them():
    """Alpha is composited over white, not dropped: a fully transparent black pixel is white, a half-transparent one
    halfway; a palette's transparent entry likewise."""
    from galore_cli.images import decode

    rgba = np.array([[[0, 0, 0, 0], [0, 0, 0, 255], [0, 0, 0, 128], [200, 100, 50, 255]]], dtype=np.uint8)
    data = _encoded(Image.fromarray(rgba, "RGBA"), "PNG")
    image, _ = decode_image(data, "images[0].data", Limits())
    assert image[:, 0, 0].tolist() == [255, 255, 255] and image[:, 0, 1].tolist() == [0, 0, 0]
    assert all(abs(v - 127) <= 1 for v in image[:, 0, 2].tolist())  # 255 x (1 - 128 / 255)
    assert image[:, 0, 3].tolist() == [200, 100, 50]
    assert np.array_equal(decode(data), image.permute(1, 2, 0).numpy())
    palette = Image.fromarray(np.array([[0, 1]], dtype=np.uint8), "P")
    palette.putpalette([0, 0, 0, 10, 20, 30])
    palette.info["transparency"] = 0
    image, _ = decode_image(_encoded(palette, "PNG"), "images[0].data", Limits())
    assert image[:, 0, 0].tolist() == [255, 255, 255] and image[:, 0, 1].tolist() == [10, 20, 30]


@pytest.mark.parametrize("samples, says", [
    (np.array([[0.0, 0.5]], dtype=np.float32), "floating-point samples"),
    (np.array([[0, 70000]], dtype=np.int32), "outside 0..65535"),
])
def test_samples_without_an_eight_bit_scale_are_refused_naming_the_field(samples, says):
    from galore_cli.images import ImageFileError, decode

    data = _encoded(Image.fromarray(samples), "TIFF")
    with pytest.raises(InvalidArgument) as caught:
        decode_image(data, "images[3].data", Limits())
    assert caught.value.field == "images[3].data" and says in caught.value.message
    with pytest.raises(ImageFileError, match=says):
        decode(data, "scan.tif")


@pytest.mark.parametrize("orientation", [1, 6])
def test_jpeg_decodes_at_reduced_scale_with_the_original_size(orientation):
    """A 2000 x 1500 JPEG needs only a 256-pixel shorter side: libjpeg's DCT scaling decodes it at 1/4 (500 x 375),
    and the size reported is the original's after EXIF orientation (6: rotated, width and height swap)."""
    yy, xx = np.mgrid[:1500, :2000]
    pixels = np.stack([xx % 256, yy % 256, (xx // 8) % 256], -1).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="JPEG", quality=90, exif=exif)
    image, original = decode_image(out.getvalue(), "images[0].data", Limits(), min_side=256)
    full, full_size = decode_image(out.getvalue(), "images[0].data", Limits())
    expected = (1500, 2000) if orientation == 1 else (2000, 1500)
    assert original == full_size == expected and tuple(full.shape[1:]) == expected
    assert tuple(image.shape[1:]) == (expected[0] // 4, expected[1] // 4)


def test_handler_config_is_validated_and_paths_resolved(tmp_path):
    config = HandlerConfig.from_model_yaml(
        {"batchSize": 4, "handler": {"model": "resnet50", "state_dict": "w.pt", "labels": "l.txt",
                                     "limits": {"max_pixels": 100}}}, str(tmp_path))
    assert config.state_dict == str(tmp_path / "w.pt") and config.batch_size == 4
    assert config.limits == Limits(max_pixels=100)
    with pytest.raises(InvalidArgument) as caught:
        HandlerConfig.from_model_yaml({"handler": {"modle": "x"}}, str(tmp_path))
    assert caught.value.field == "handler" and "modle" in caught.value.message
    with pytest.raises(InvalidArgument) as caught:
        Limits(max_images_per_request=0)
    assert caught.value.field == "handler.limits.max_images_per_request"
    assert config.precision is DEFAULT_PRECISION
    assert HandlerConfig.from_model_yaml({"handler": {"precision": "auto"}}, str(tmp_path)).precision is Precision.AUTO
    with pytest.raises(InvalidArgument) as caught:
        HandlerConfig.from_model_yaml({"handler": {"precision": "int8"}}, str(tmp_path))
    assert caught.value.field == "handler.precision" and "int8" in caught.value.message


def test_gateway_takes_ports_and_size_limits_from_the_torchserve_config(tmp_path):
    config = LocalConfig(model_store=tmp_path, run_dir=tmp_path / "run", ports=Ports(1, 2, 3, 4, 5, 6, 7))
    path = render_ts_config(config)
    text = path.read_text()
    assert "inference_address=http://127.0.0.1:3\n" in text and "grpc_management_port=7\n" in text
    assert "disable_token_authorization=true\n" in text and "enable_model_api=false\n" in text
    gateway = GatewayConfig.with_torchserve_config(path, listen="127.0.0.1:9")
    assert (gateway.torchserve_inference, gateway.torchserve_management) == ("127.0.0.1:6", "127.0.0.1:7")
    assert gateway.max_request_bytes == gateway.max_response_bytes == 104857600
    assert gateway.caller_max_request_bytes == 104857600 - ENVELOPE_BYTES


def test_sliding_rate_forgets_old_events():
    now = [100.0]
    rate = SlidingRate(window_s=10.0, clock=lambda: now[0])
    rate.add(30)
    now[0] = 105.0
    rate.add(20)
    assert rate.per_second() == 5.0
    now[0] = 112.0
    assert rate.per_second() == 2.0


@pytest.mark.parametrize("body, field", [
    ('{"options": {"score": "CONFIDENCE_SCORE_NOPE"}}', "options.score"),
    ('{"options": {"topE": 1.5}}', "options.topE"),
    ('{"options": {"counterClasses": [{"classId": "x"}]}}', "options.counterClasses.classId"),
    ('{"imagez": []}', "body"),
    ('{"images": [', "body"),
    (b"\xff\xfe", "body"),
])
def test_malformed_json_names_the_field(body, field):
    with pytest.raises(InvalidArgument) as caught:
        parse_explain_json(body)
    assert caught.value.field == field and "malformed JSON" in caught.value.message


def test_json_mapping_reads_base64_images_and_enums():
    request = parse_explain_json('{"images": [{"data": "AQID", "id": "a"}], '
                                 '"options": {"kinds": ["EXPLANATION_KIND_COUNTERFACTUAL"], "topE": 3}}')
    assert request.images[0].data == b"\x01\x02\x03" and request.images[0].id == "a"
    assert list(request.options.kinds) == [pb.EXPLANATION_KIND_COUNTERFACTUAL] and request.options.top_e == 3


def test_worker_problems_go_to_stderr_which_torchserve_logs_at_warn(capfd):
    """TorchServe logs a worker's stdout at INFO (hidden by make serve's quiet log config) and its stderr at WARN:
    the engine's tracebacks must reach stderr, chatter must not."""
    import logging

    from handlers.galore_handler import _problems_to_stderr

    saved = {name: (list(lg.handlers), lg.propagate, lg.level)
             for name, lg in ((n, logging.getLogger(n)) for n in ("galore", "galore_service", "handlers"))}
    try:
        _problems_to_stderr()
        _problems_to_stderr()  # idempotent: one line per record, not two
        try:
            raise RuntimeError("boom")
        except RuntimeError as exc:
            logging.getLogger("galore.engine").error("explaining %s failed", "request r-7 images[0].data",
                                                     exc_info=exc)
        logging.getLogger("galore_service.service").info("ready")
        out, err = capfd.readouterr()
    finally:  # the worker keeps this setup for life; the test process must not
        for name, (handlers, propagate, level) in saved.items():
            lg = logging.getLogger(name)
            lg.handlers[:], lg.propagate, lg.level = handlers, propagate, level
    assert err.count("request r-7 images[0].data") == 1 and out.count("ready") == 1
    assert "request r-7 images[0].data" in err and "Traceback" in err and "RuntimeError: boom" in err
    assert "ready" in out and "ready" not in err
