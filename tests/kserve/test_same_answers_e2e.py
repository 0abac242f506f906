"""Per-image errors, request errors and field names are the same on both backends: every case goes through the
running deployment (gateway gRPC and REST) and through the handler's ExplainService in process, and the statuses
(code, field, message, HTTP and gRPC numbers) and the JSON field names must match exactly. Runs on each backend,
so both equal the same reference."""
from __future__ import annotations

import json
import re

import pytest
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_client.errors import GaloreClientError
from galore_wire.contract import Call

CASES = {
    "bad image among good": lambda c, k: ([c, b"not an image", b"", k], pb.ExplainOptions(prediction_only=True)),
    "unknown counter class": lambda c, k: ([c], pb.ExplainOptions(counter_classes=[pb.CounterClass(label="griffin")])),
    "V greater than E": lambda c, k: ([c], pb.ExplainOptions(top_e=2, dims=[3])),
    "negative coverage": lambda c, k: ([c], pb.ExplainOptions(threshold=pb.Threshold(coverage=-0.5))),
    "no images": lambda c, k: ([], None),
    "unknown enum": lambda c, k: ([c], pb.ExplainOptions(attribution=99)),
    "easiness without predictor": lambda c, k: ([c], pb.ExplainOptions(score=pb.CONFIDENCE_SCORE_EASINESS)),
    "every kind": lambda c, k: ([c], pb.ExplainOptions(dims=[2], top_e=3)),
}


@pytest.fixture(scope="module")
def reference():
    """The handler's own answers, in process (no host): what both hosts must send."""
    from galore_cli.local import LocalBackend

    backend = LocalBackend(device="cpu")

    def answer(request: pb.ExplainRequest) -> pb.ExplainResponse:
        return pb.ExplainResponse.FromString(backend._call(Call.EXPLAIN, request.SerializeToString()))

    return answer


def build(case: str, chelsea: bytes, coffee: bytes) -> pb.ExplainRequest:
    images, options = CASES[case](chelsea, coffee)
    request = pb.ExplainRequest(images=[pb.Image(data=d, id=f"img{i}") for i, d in enumerate(images)])
    if options is not None:
        request.options.CopyFrom(options)
    return request


def same_run(status: dict) -> dict:
    """A status with Pillow's object addresses ("<_io.BytesIO object at 0x7f...>") blanked: they differ per process."""
    return {k: re.sub(r" at 0x[0-9a-f]+", " at 0x", v) if k == "message" else v for k, v in status.items()}


def statuses(response: pb.ExplainResponse | dict) -> list[dict]:
    if not isinstance(response, dict):
        response = json_format.MessageToDict(response)
    return [same_run(s) for s in [response["status"]] + [i["status"] for i in response.get("images", [])]]


def keys(value) -> object:
    """The JSON field names of an answer, recursively (values dropped)."""
    if isinstance(value, dict):
        return {k: keys(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [keys(v) for v in value[:1]]
    return None


@pytest.mark.parametrize("case", sorted(CASES))
def test_grpc_answers_equal_the_handler_in_process(case, grpc_client, reference, chelsea, coffee):
    request = build(case, chelsea, coffee)
    expected = reference(request)
    try:
        served = grpc_client.explain_request(request)
    except GaloreClientError as err:  # a request-level failure: code, field and message, as the handler said
        assert expected.status.code != "OK", err
        assert (err.code, err.field, err.message) == (expected.status.code, expected.status.field,
                                                       expected.status.message)
        return
    assert statuses(served) == statuses(expected)
    assert keys(json_format.MessageToDict(served)) == keys(json_format.MessageToDict(expected))


@pytest.mark.parametrize("case", sorted(CASES))
def test_rest_answers_equal_the_handler_in_process(case, rest_url, reference, chelsea, coffee):
    import requests

    request = build(case, chelsea, coffee)
    expected = reference(request)
    answer = requests.post(rest_url, data=json_format.MessageToJson(request), timeout=120,
                           headers={"Content-Type": "application/json"})
    assert answer.status_code == expected.status.http_status
    served = json.loads(answer.content)
    wanted = json_format.MessageToDict(expected)
    assert statuses(served) == statuses(expected)
    assert keys(served) == keys(wanted)
