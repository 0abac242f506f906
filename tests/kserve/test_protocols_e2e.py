"""The KServe host's own protocols, through the running host: v1 :predict / :explain, OIP v2 over REST (JSON with
base64) and gRPC (binary tensors), health, readiness, metadata, and request errors per protocol."""
from __future__ import annotations

import asyncio
import base64
import json

import grpc
import numpy as np
import pytest
import requests
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import RestClient
from galore_wire.contract import OIP_IMAGE_IDS, OIP_IMAGES, OIP_OPTIONS, OIP_RESPONSE, RPC_KEY, Call
from tests.serving.conftest import CATS, MODEL

pytestmark = pytest.mark.backends("kserve")


@pytest.fixture(scope="module")
def http(service) -> str:
    return f"http://127.0.0.1:{service.config.ports.rest}"


def test_v1_predict_gives_the_top_classes_only_and_explain_everything(http, chelsea):
    predicted = requests.post(f"{http}/v1/models/{MODEL}:predict", data=chelsea,
                              headers={"Content-Type": "image/jpeg"}, timeout=120)
    explained = requests.post(f"{http}/v1/models/{MODEL}:explain", data=chelsea,
                              headers={"Content-Type": "image/jpeg"}, timeout=120)
    assert predicted.status_code == explained.status_code == 200
    assert predicted.headers["content-type"].startswith("application/json")
    only = json.loads(predicted.content)["images"][0]
    full = json.loads(explained.content)["images"][0]
    assert only["topClasses"][0]["label"] in CATS and only["topClasses"] == full["topClasses"]
    assert not {"attributive", "deliberative", "counterfactual"} & set(only)
    assert {"attributive", "deliberative", "counterfactual"} <= set(full)


def test_v1_predict_overrides_kinds_in_the_body(http, chelsea):
    body = json_format.MessageToJson(pb.ExplainRequest(
        images=[pb.Image(data=chelsea)], options=pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_DELIBERATIVE])))
    answer = requests.post(f"{http}/v1/models/{MODEL}:predict", data=body,
                           headers={"Content-Type": "application/json"}, timeout=120)
    assert answer.status_code == 200 and "deliberative" not in answer.json()["images"][0]


def test_model_info_over_v1_and_the_typed_rest_client(service, http):
    with RestClient(f"{http}/v1", MODEL, timeout_s=60) as client:
        info = client.model_info()
    assert info.name == MODEL and len(info.classes) == 1000 and info.max_batch_size == 4
    raw = requests.post(f"{http}/v1/models/{MODEL}:explain", data=b"", timeout=60,
                        headers={RPC_KEY: Call.MODEL_INFO.value, "Content-Type": "application/x-protobuf"})
    assert pb.ModelInfo.FromString(raw.content) == info


def test_health_readiness_and_metadata(http):
    assert requests.get(f"{http}/v2/health/live", timeout=10).json() == {"live": True}
    assert requests.get(f"{http}/v2/health/ready", timeout=10).json() == {"ready": True}
    assert requests.get(f"{http}/v1/models/{MODEL}", timeout=10).json() == {"name": MODEL, "ready": True}
    assert requests.get(f"{http}/v2/models/{MODEL}/ready", timeout=10).json()["ready"] is True
    metadata = requests.get(f"{http}/v2/models/{MODEL}", timeout=10).json()
    assert {t["name"]: t["datatype"] for t in metadata["inputs"]}[OIP_IMAGES] == "BYTES"
    assert [t["name"] for t in metadata["outputs"]] == [OIP_RESPONSE]


def v2_json(images: list[bytes], options: dict | None = None, ids: list[str] | None = None) -> dict:
    body = {"inputs": [{"name": OIP_IMAGES, "datatype": "BYTES", "shape": [len(images)],
                        "data": [base64.b64encode(i).decode() for i in images]}]}
    if ids is not None:
        body["inputs"].append({"name": OIP_IMAGE_IDS, "datatype": "BYTES", "shape": [len(ids)], "data": ids})
    if options is not None:
        body["parameters"] = {OIP_OPTIONS: json.dumps(options)}
    return body


def test_oip_rest_json_with_base64_images(http, chelsea):
    answer = requests.post(f"{http}/v2/models/{MODEL}/infer", timeout=120,
                           json=v2_json([chelsea, b"broken"], {"predictionOnly": True}, ids=["cat", "junk"]))
    assert answer.status_code == 200
    [output] = answer.json()["outputs"]
    assert (output["name"], output["datatype"], output["shape"]) == (OIP_RESPONSE, "BYTES", [1])
    response = json_format.Parse(output["data"][0], pb.ExplainResponse())
    assert [i.id for i in response.images] == ["cat", "junk"]
    assert response.images[0].top_classes[0].label in CATS and not response.images[0].HasField("attributive")
    assert (response.images[1].status.code, response.images[1].status.field) == ("INVALID_ARGUMENT", "images[1].data")


@pytest.mark.parametrize("body, field, status", [
    (v2_json([b"x"], {"score": "CONFIDENCE_SCORE_BRAVADO"}), "options.score", 400),
    ({"inputs": [{"name": "pixels", "datatype": "BYTES", "shape": [1], "data": ["AA=="]}]}, "inputs.pixels", 400),
    ({"inputs": [{"name": OIP_IMAGES, "datatype": "BYTES", "shape": [1], "data": ["***"]}]}, "inputs.images[0]", 400),
    (v2_json([]), "images", 400),
])
def test_oip_rest_request_errors_carry_the_status(http, body, field, status):
    answer = requests.post(f"{http}/v2/models/{MODEL}/infer", json=body, timeout=60)
    assert answer.status_code == status
    assert answer.json()["status"]["field"] == field and answer.json()["error"].startswith(f"{field}: ")


def test_oip_rest_base64_and_grpc_binary_with_kserves_clients(service, chelsea, coffee):
    from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

    options = {OIP_OPTIONS: json.dumps({"predictionOnly": True, "topK": 2})}
    text = InferInput(OIP_IMAGES, [2], "BYTES", data=[base64.b64encode(i).decode() for i in (chelsea, coffee)])
    binary = InferInput(OIP_IMAGES, [2], "BYTES")
    binary.set_data_from_numpy(np.array([chelsea, coffee], dtype=object), binary_data=True)

    async def both():
        rest = InferenceRESTClient(RESTConfig(protocol="v2", timeout=120))
        grpc_client = InferenceGRPCClient(f"127.0.0.1:{service.config.ports.ts_grpc}", timeout=120)
        try:
            over_rest = await rest.infer(f"http://127.0.0.1:{service.config.ports.rest}",
                                         InferRequest(model_name=MODEL, infer_inputs=[text], parameters=options),
                                         MODEL)
            over_grpc = await grpc_client.infer(InferRequest(model_name=MODEL, infer_inputs=[binary],
                                                             parameters=options))
        finally:
            await rest.close()
            await grpc_client.close()
        return over_rest, over_grpc

    answers = []
    for response in asyncio.run(both()):
        [output] = response.outputs  # binary over gRPC (the inputs were), JSON text over REST
        data = output.as_numpy()[0]
        answers.append(json_format.Parse(data.decode() if isinstance(data, bytes) else data, pb.ExplainResponse()))
    over_rest, over_grpc = answers
    assert [len(i.top_classes) for i in over_rest.images] == [2, 2]
    assert json_format.MessageToDict(over_rest) == json_format.MessageToDict(over_grpc)


def test_binary_image_tensors_over_rest_are_a_client_error_naming_the_way_out(service, chelsea):
    """KServe 0.21's REST decoder cannot take non-UTF-8 binary BYTES (server side); a 400 that says what works."""
    header = json.dumps({"inputs": [{"name": OIP_IMAGES, "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": len(chelsea) + 4}}]}).encode()
    body = header + len(chelsea).to_bytes(4, "little") + chelsea
    answer = requests.post(f"http://127.0.0.1:{service.config.ports.rest}/v2/models/{MODEL}/infer", data=body,
                           headers={"Content-Type": "application/octet-stream",
                                    "Inference-Header-Content-Length": str(len(header))}, timeout=60)
    assert answer.status_code == 400
    assert answer.json()["status"]["field"] == "inputs" and "base64" in answer.json()["error"]


def test_oip_grpc_request_error_has_the_tables_code(service):
    from kserve import InferenceGRPCClient, InferInput, InferRequest

    images = InferInput(OIP_IMAGES, [1], "BYTES")
    images.set_data_from_numpy(np.array([b"x"], dtype=object), binary_data=True)
    request = InferRequest(model_name=MODEL, infer_inputs=[images], parameters={OIP_OPTIONS: '{"topE": -1}'})

    async def call():
        client = InferenceGRPCClient(f"127.0.0.1:{service.config.ports.ts_grpc}", timeout=60)
        try:
            return await client.infer(request)
        finally:
            await client.close()

    with pytest.raises(grpc.aio.AioRpcError) as caught:
        asyncio.run(call())
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith("options.top_e: ")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_the_readme_tritonclient_example_runs(service, protocol):
    """docs/examples/oip_client.py, as the README shows it, in its own interpreter (tritonclient and kserve both
    register the OIP messages as "inference.*" and cannot share one process)."""
    import subprocess
    import sys

    from tests.conftest import REPO

    port = service.config.ports.ts_grpc if protocol == "grpc" else service.config.ports.rest
    done = subprocess.run([sys.executable, str(REPO / "docs/examples/oip_client.py"), protocol, f"127.0.0.1:{port}",
                           str(REPO / "docs/examples/chelsea.jpg")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    top, ambiguity = done.stdout.strip().split(" | strongest ambiguity: ")
    assert top in CATS and len(ambiguity.split(" / ")) == 2, done.stdout


def test_the_kserve_host_listens_on_loopback_only(service):
    """KServe binds every interface by itself; galore_kserve binds both servers to --host (127.0.0.1 here)."""
    from tests.reliability.test_security_e2e import LOOPBACK, listening

    sockets = listening(service.kserve.pid) | listening(service.gateway.pid)
    ports = service.config.ports
    assert {port for _, port in sockets} >= {ports.grpc, ports.rest, ports.ts_grpc, ports.gateway_metrics}
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets
