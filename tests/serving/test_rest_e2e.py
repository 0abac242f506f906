"""REST on both hosts (TorchServe /predictions and /explanations, the KServe host v1 :explain): JSON, protobuf and
raw images, Accept honoured."""
from __future__ import annotations

import base64
import json

import pytest
import requests
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb

from .conftest import CATS

PREDICTION_ONLY = pb.ExplainOptions(prediction_only=True, top_k=3)


def test_json_request_gets_json_answer(rest_url, chelsea):
    body = {"images": [{"data": base64.b64encode(chelsea).decode(), "id": "cat"}],
            "options": {"kinds": ["EXPLANATION_KIND_DELIBERATIVE"], "topE": 4, "dims": [2]}}
    answer = requests.post(rest_url, json=body, timeout=120)
    assert answer.status_code == 200
    assert answer.headers["Content-Type"].startswith("application/json")
    image = answer.json()["images"][0]
    assert image["id"] == "cat" and image["status"]["code"] == "OK"
    assert {c["label"] for c in image["topClasses"][:3]} <= CATS
    assert [g["dim"] for g in image["deliberative"]] == [2]
    assert "attributive" not in image and "counterfactual" not in image


def test_protobuf_request_gets_protobuf_answer(rest_client, chelsea):
    response = rest_client.explain([chelsea], PREDICTION_ONLY, media_type="application/x-protobuf")
    assert [c.label for c in response.images[0].top_classes][:1][0] in CATS
    assert len(response.images[0].top_classes) == 3


def test_accept_header_chooses_the_answer_format(rest_url, chelsea):
    request = pb.ExplainRequest(images=[pb.Image(data=chelsea)], options=PREDICTION_ONLY)
    answer = requests.post(rest_url, data=json_format.MessageToJson(request), timeout=120,
                           headers={"Content-Type": "application/json", "Accept": "application/x-protobuf"})
    assert answer.status_code == 200 and answer.headers["Content-Type"] == "application/x-protobuf"
    assert pb.ExplainResponse.FromString(answer.content).images[0].top_classes[0].label in CATS


def test_raw_image_gets_every_kind(rest_client, chelsea):
    image = rest_client.explain_image(chelsea).images[0]
    assert image.top_classes[0].label in CATS
    assert image.HasField("attributive") and image.HasField("self_aware") and image.HasField("counterfactual")
    assert [g.dim for g in image.deliberative] == [2]


@pytest.mark.backends("torchserve")  # TorchServe's second route; the KServe host has :explain and :predict
def test_explanations_endpoint_answers_the_same(rest_client, chelsea):
    predictions = rest_client.explain([chelsea], PREDICTION_ONLY)
    explanations = rest_client.explain([chelsea], PREDICTION_ONLY, endpoint="explanations")
    assert [c.class_id for c in explanations.images[0].top_classes] == \
        [c.class_id for c in predictions.images[0].top_classes]


def test_rest_and_grpc_agree(rest_client, grpc_client, chelsea):
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE])
    over_rest = rest_client.explain([chelsea], options).images[0]
    over_grpc = grpc_client.explain([chelsea], options).images[0]
    assert over_rest.attributive.region.mask == over_grpc.attributive.region.mask
    assert [c.class_id for c in over_rest.top_classes] == [c.class_id for c in over_grpc.top_classes]


def test_json_error_body_is_an_explain_response(rest_url):
    answer = requests.post(rest_url, data=b"{not json", headers={"Content-Type": "application/json"}, timeout=60)
    assert answer.status_code == 400
    status = json.loads(answer.content)["status"]
    assert (status["code"], status["field"], status["httpStatus"]) == ("INVALID_ARGUMENT", "body", 400)
