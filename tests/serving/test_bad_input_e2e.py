"""Every kind of bad input gets a clear error naming the field, never a crash, and never fails the good images."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc
from PIL import Image

from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import GrpcClient
from galore_client.errors import GaloreClientError

from .conftest import CATS, REPO, free_ports


def expect_error(call, code: str, field: str) -> GaloreClientError:
    with pytest.raises(GaloreClientError) as caught:
        call()
    assert (caught.value.code, caught.value.field) == (code, field), str(caught.value)
    assert caught.value.message
    return caught.value


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """A 12000 x 12000 (144 Mpixel) bilevel PNG of a few kilobytes: a decompression bomb."""
    buffer = io.BytesIO()
    Image.new("1", (12000, 12000)).save(buffer, "PNG")
    return buffer.getvalue()


def test_undecodable_bytes(grpc_client):
    err = expect_error(lambda: grpc_client.explain([b"not an image at all"]), "INVALID_ARGUMENT", "images[0].data")
    assert "decode" in err.message


def test_zero_byte_image(grpc_client):
    err = expect_error(lambda: grpc_client.explain([b""]), "INVALID_ARGUMENT", "images[0].data")
    assert "empty" in err.message


def test_decompression_bomb_over_grpc_and_rest(grpc_client, rest_url, bomb):
    assert len(bomb) < 200_000
    expect_error(lambda: grpc_client.explain([bomb]), "RESOURCE_EXHAUSTED", "images[0].data")
    answer = requests.post(rest_url, data=bomb, headers={"Content-Type": "image/png"}, timeout=60)
    assert answer.status_code == 413
    assert answer.json()["status"]["field"] == "images[0].data"


def test_too_many_images(grpc_client, chelsea):
    err = expect_error(lambda: grpc_client.explain([chelsea] * 17), "RESOURCE_EXHAUSTED", "images")
    assert "16" in err.message


def test_unknown_counter_class(grpc_client, chelsea):
    options = pb.ExplainOptions(counter_classes=[pb.CounterClass(label="tabby"), pb.CounterClass(label="unicorn")])
    err = expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT",
                       "options.counter_classes[1].label")
    assert "unicorn" in err.message
    options = pb.ExplainOptions(counter_classes=[pb.CounterClass(class_id=1000)])
    expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT",
                 "options.counter_classes[0].class_id")


def test_v_greater_than_e(grpc_client, chelsea):
    options = pb.ExplainOptions(top_e=2, dims=[2, 3])
    err = expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT", "options.dims[1]")
    assert "top_e=2" in err.message


def test_negative_coverage(grpc_client, chelsea):
    options = pb.ExplainOptions(threshold=pb.Threshold(coverage=-0.1))
    expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT", "options.threshold.coverage")


def test_unknown_explained_class(grpc_client, chelsea):
    options = pb.ExplainOptions(explained_class=pb.ClassRef(label="unicorn"))
    err = expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT",
                       "options.explained_class.label")
    assert "unicorn" in err.message
    options = pb.ExplainOptions(explained_class=pb.ClassRef(class_id=1000))
    expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT",
                 "options.explained_class.class_id")


def test_unknown_enum_value_binary_and_json(grpc_client, rest_url, chelsea):
    options = pb.ExplainOptions(attribution=99)  # proto3 enums are open: the number survives the wire
    err = expect_error(lambda: grpc_client.explain([chelsea], options), "INVALID_ARGUMENT", "options.attribution")
    assert "99" in err.message
    body = '{"images": [], "options": {"score": "CONFIDENCE_SCORE_BRAVADO"}}'
    answer = requests.post(rest_url, data=body, headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 400
    status = answer.json()["status"]
    assert status["field"] == "options.score" and "CONFIDENCE_SCORE_BRAVADO" in status["message"]


def test_easiness_without_hardness_predictor(grpc_client, chelsea):
    options = pb.ExplainOptions(score=pb.CONFIDENCE_SCORE_EASINESS)
    expect_error(lambda: grpc_client.explain([chelsea], options), "FAILED_PRECONDITION", "options.score")


def test_malformed_json_and_wrong_content_type(rest_url):
    answer = requests.post(rest_url, data="{'images': ", headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 400 and answer.json()["status"]["field"] == "body"
    answer = requests.post(rest_url, data="hello", headers={"Content-Type": "text/plain"}, timeout=60)
    assert answer.status_code == 415
    status = answer.json()["status"]
    assert (status["code"], status["field"]) == ("UNSUPPORTED_MEDIA_TYPE", "Content-Type")
    answer = requests.post(rest_url, data=b"\x0a\xff\xff", headers={"Content-Type": "application/x-protobuf"},
                           timeout=60)
    assert answer.status_code == 400
    assert pb.ExplainResponse.FromString(answer.content).status.field == "body"


def test_one_bad_image_in_a_batch_of_good_ones(grpc_client, chelsea, coffee):
    response = grpc_client.explain([chelsea, b"\x89PNG broken", coffee, b""],
                                   pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE]))
    assert response.status.code == "OK"
    codes = [(i.status.code, i.status.field) for i in response.images]
    assert codes == [("OK", ""), ("INVALID_ARGUMENT", "images[1].data"), ("OK", ""),
                     ("INVALID_ARGUMENT", "images[3].data")]
    assert response.images[0].top_classes[0].label in CATS
    assert response.images[2].top_classes[0].label not in CATS
    assert response.images[2].attributive.region.mask.pixel_count > 0


def test_a_sixteen_bit_scan_is_seen_as_its_eight_bit_copy_and_float_samples_are_refused(grpc_client, chelsea):
    """A 16-bit greyscale PNG gets the same answer as its 8-bit copy (Pillow's own conversion would have made it
    white); a floating-point TIFF in the same batch is refused alone, naming its field."""
    import numpy as np

    grey = np.asarray(Image.open(io.BytesIO(chelsea)).convert("L"))
    encoded = []
    for image, fmt in ((Image.fromarray(grey), "PNG"), (Image.fromarray(grey.astype(np.uint16) * 257), "PNG"),
                       (Image.fromarray(grey.astype(np.float32)), "TIFF")):
        buffer = io.BytesIO()
        image.save(buffer, fmt)
        encoded.append(buffer.getvalue())
    response = grpc_client.explain(encoded, pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE]))
    eight, sixteen, floating = response.images
    assert (eight.status.code, sixteen.status.code) == ("OK", "OK")
    assert [(c.label, round(c.probability, 4)) for c in sixteen.top_classes] == \
        [(c.label, round(c.probability, 4)) for c in eight.top_classes]
    assert (floating.status.code, floating.status.field) == ("INVALID_ARGUMENT", "images[2].data")
    assert "floating-point" in floating.status.message


def test_deadline_is_propagated(grpc_client, chelsea):
    # 5 ms: shorter than the batch delay both hosts hold a lone request for (maxBatchDelay 20 ms), so no engine or
    # machine answers in time
    expect_error(lambda: grpc_client.explain([chelsea], timeout_s=0.005), "DEADLINE_EXCEEDED", "")


def test_health_and_reflection(service):
    target = f"127.0.0.1:{service.config.ports.grpc}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for name in ("", "galore.v1.Explainer"):
            assert health.Check(health_pb2.HealthCheckRequest(service=name), timeout=10).status == \
                health_pb2.HealthCheckResponse.SERVING
        with pytest.raises(grpc.RpcError) as caught:
            health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"), timeout=10)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

        database = ProtoReflectionDescriptorDatabase(channel)
        assert "galore.v1.Explainer" in database.get_services()
        explain = database.FindFileContainingSymbol("galore.v1.Explainer")
        methods = {m.name: m.input_type for s in explain.service for m in s.method}
        assert methods == {"Explain": ".galore.v1.ExplainRequest", "GetModelInfo": ".galore.v1.GetModelInfoRequest"}


def test_torchserve_down_is_unavailable_and_sigterm_stops_the_gateway(tmp_path):
    """A gateway whose TorchServe is not there: NOT_SERVING, Explain UNAVAILABLE, clean exit on SIGTERM."""
    grpc_port, ts_port, ts_management = free_ports(3)
    gateway = subprocess.Popen(
        [sys.executable, "-m", "galore_gateway", "--listen", f"127.0.0.1:{grpc_port}", "--metrics-port", "0",
         "--torchserve-inference", f"127.0.0.1:{ts_port}", "--torchserve-management", f"127.0.0.1:{ts_management}"],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), start_new_session=True)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=60)
            health = health_pb2_grpc.HealthStub(channel)
            assert health.Check(health_pb2.HealthCheckRequest(), timeout=10).status == \
                health_pb2.HealthCheckResponse.NOT_SERVING
        with GrpcClient(f"127.0.0.1:{grpc_port}", timeout_s=30) as client:
            err = expect_error(lambda: client.explain([b"x"]), "UNAVAILABLE", "")
            assert f"127.0.0.1:{ts_port}" in err.message
        gateway.send_signal(signal.SIGTERM)
        assert gateway.wait(timeout=60) == 0
    finally:
        if gateway.poll() is None:
            os.killpg(gateway.pid, signal.SIGKILL)
            gateway.wait()
