"""The service core on its own: typed calls in (``galore_service.calls.Request``), typed answers out (``Answer``), on
the tests' tiny 3-class model (tests/engine/conftest.py). No TorchServe, no KServe, no server: the hosts only map
their own request shapes to these calls, which tests/reliability/test_units.py and tests/kserve check."""
from __future__ import annotations

import dataclasses
import io
import json
import time

import pytest
from google.protobuf import json_format
from PIL import Image

from galore import Engine
from galore_api.v1 import explainer_pb2 as pb
from galore_service.calls import Answer, Request
from galore_service.config import HandlerConfig
from galore_service.metrics import MetricKind, WorkerMetrics
from galore_service.service import ExplainService
from galore_wire.contract import JSON, PROTOBUF, RPC_KEY, Call
from galore_wire.status import STATUS_TABLE
from handlers.galore_handler import to_request
from tests.engine.conftest import IDENTITY_PREP, gray_pool_model, quadrant_image

LABELS = ["zero", "one", "two"]


class Recorded(WorkerMetrics):
    def __init__(self):
        super().__init__("tiny")
        self.counts: dict[tuple, float] = {}

    def _record(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        if kind is MetricKind.COUNTER:
            self.counts[(name, *labels)] = self.counts.get((name, *labels), 0) + value


@pytest.fixture(scope="module")
def core() -> ExplainService:
    engine = Engine.from_module("tiny", gray_pool_model(), LABELS, IDENTITY_PREP, layer="1", device="cpu")
    return ExplainService(engine, HandlerConfig(), "tiny")


@pytest.fixture(scope="module")
def png() -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(quadrant_image().permute(1, 2, 0).numpy()).save(buffer, "PNG")
    return buffer.getvalue()


def explain(core: ExplainService, message: pb.ExplainRequest, **call) -> tuple[Answer, pb.ExplainResponse]:
    [answer] = core.answer([Request(rpc=Call.EXPLAIN, body=message.SerializeToString(), **call)])
    return answer, pb.ExplainResponse.FromString(answer.body)


def test_an_answer_is_typed_and_frozen(core):
    [answer] = core.answer([Request(rpc=Call.MODEL_INFO)])
    assert isinstance(answer, Answer)
    assert (answer.http_status, answer.phrase, answer.media_type) == (200, "OK", PROTOBUF)
    with pytest.raises(dataclasses.FrozenInstanceError):
        answer.body = b""
    info = pb.ModelInfo.FromString(answer.body)
    assert info.name == "tiny" and [c.label for c in info.classes] == LABELS
    assert (info.feature_height, info.feature_width) == (2, 2)


def test_one_batch_answers_each_call_and_each_image_with_its_own_status(core, png):
    """Three calls in one batch (one engine call): a good one, one with an undecodable image next to a good image,
    one with a bad option. Each gets its own answer; the bad image is that image's status only."""
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE, pb.EXPLANATION_KIND_DELIBERATIVE])
    good = pb.ExplainRequest(images=[pb.Image(data=png, id="a")], options=options)
    mixed = pb.ExplainRequest(images=[pb.Image(data=b"not an image", id="broken"), pb.Image(data=png, id="b")],
                              options=options)
    bad_option = pb.ExplainRequest(images=[pb.Image(data=png)], options=pb.ExplainOptions(top_e=2, dims=[2, 3]))
    metrics = Recorded()
    answers = core.answer([Request(rpc=Call.EXPLAIN, body=m.SerializeToString(), request_id=f"r{i}")
                              for i, m in enumerate((good, mixed, bad_option))], metrics)
    assert [a.http_status for a in answers] == [200, 200, 400]
    first, second, third = (pb.ExplainResponse.FromString(a.body) for a in answers)
    assert first.status.code == "OK" and first.images[0].id == "a"
    assert first.images[0].top_classes[0].label in LABELS and first.images[0].attributive.region.mask.coco_rle
    assert second.status.code == "OK"  # one image failed, the other was explained: the call is OK
    broken, explained = second.images
    assert (broken.status.code, broken.status.field) == ("INVALID_ARGUMENT", "images[0].data")
    assert broken.status.grpc_code == STATUS_TABLE["INVALID_ARGUMENT"][0] and not broken.top_classes
    assert explained.status.code == "OK" and explained.top_classes
    # the same image in two calls of one batch: the same answer
    assert explained.top_classes == first.images[0].top_classes
    assert (third.status.code, third.status.field) == ("INVALID_ARGUMENT", "options.dims[1]")
    assert "top_e=2" in third.status.message and not third.images
    assert metrics.counts[("galore_images_total", "prediction")] == 2


def test_labels_resolve_once_and_errors_name_the_reference(core, png):
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE], explained_class=pb.ClassRef(label="two"))
    answer, response = explain(core, pb.ExplainRequest(images=[pb.Image(data=png)], options=options))
    assert answer.http_status == 200 and response.images[0].attributive.class_id == 2
    for ref, field in ((pb.ClassRef(label="unicorn"), "options.explained_class.label"),
                       (pb.ClassRef(class_id=3), "options.explained_class.class_id"),
                       (pb.ClassRef(), "options.explained_class")):
        _, response = explain(core, pb.ExplainRequest(images=[pb.Image(data=png)],
                                                         options=pb.ExplainOptions(explained_class=ref)))
        assert (response.status.code, response.status.field) == ("INVALID_ARGUMENT", field)
    counters = pb.ExplainOptions(counter_classes=[pb.CounterClass(label="one"), pb.CounterClass(label="nine")])
    _, response = explain(core, pb.ExplainRequest(images=[pb.Image(data=png)], options=counters))
    assert response.status.field == "options.counter_classes[1].label" and "nine" in response.status.message


def test_rest_calls_are_read_by_content_type_and_answered_in_accept(core, png):
    message = pb.ExplainRequest(images=[pb.Image(data=png)], options=pb.ExplainOptions(prediction_only=True))
    as_json = json_format.MessageToJson(message)
    [by_json, raw, by_proto, unsupported] = core.answer([
        Request(body=as_json.encode(), content_type="application/json; charset=utf-8"),
        Request(body=png, content_type="image/png", prediction_only=True),
        Request(body=message.SerializeToString(), content_type=PROTOBUF, accept=JSON),
        Request(body=b"x", content_type="text/csv"),
    ])
    assert by_json.media_type == JSON and json.loads(by_json.body)["status"]["code"] == "OK"
    assert raw.media_type == JSON and "attributive" not in json.loads(raw.body)["images"][0]
    assert by_proto.media_type == JSON and by_proto.http_status == 200
    assert unsupported.http_status == 415 and json.loads(unsupported.body)["status"]["field"] == "Content-Type"


def test_unknown_rpc_a_missing_body_and_a_passed_deadline_are_the_calls_status(core, png):
    body = pb.ExplainRequest(images=[pb.Image(data=png)]).SerializeToString()
    [unknown, empty, late] = core.answer([
        Request(rpc="Predict", body=body), Request(rpc=Call.EXPLAIN),
        Request(rpc=Call.EXPLAIN, body=body, deadline=time.time() - 1)])
    unknown, empty, late = (pb.ExplainResponse.FromString(a.body) for a in (unknown, empty, late))
    assert (unknown.status.code, unknown.status.field) == ("INVALID_ARGUMENT", RPC_KEY)
    assert (empty.status.code, empty.status.field) == ("INVALID_ARGUMENT", "body")
    assert late.status.code == "DEADLINE_EXCEEDED" and late.status.http_status == 504


def test_the_torchserve_adapter_maps_rows_and_headers_to_calls():
    class Context:
        request_ids = {0: "ts-0", 1: "ts-1"}

        def get_all_request_header(self, idx):
            return [{}, {"Content-Type": "image/jpeg", "Accept": JSON, "galore-deadline": "12.5"}][idx]

    gateway = to_request({RPC_KEY: b"Explain", "body": b"\x01", "galore-deadline": b"7"}, Context(), 0)
    assert gateway == Request(rpc="Explain", body=b"\x01", deadline=7.0, request_id="ts-0")
    rest = to_request({"data": b"jpeg"}, Context(), 1)
    assert rest == Request(body=b"jpeg", content_type="image/jpeg", accept=JSON, deadline=12.5, request_id="ts-1")
