"""Requests that wait together are explained together: with both TorchServe workers held at the gate, 8 calls over
gRPC and REST queue up; once the gate opens each worker takes a full batch of 4 (batchSize) in one engine call, and
every caller still gets its own answer. Deterministic: the queue is filled while nothing can drain it."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import requests
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc as pb_grpc
from tests.conftest import MODEL

from .test_overload_e2e import wait_until

QUEUED = 8


def pending_requests(service) -> int:
    """TorchServe's count of requests waiting in the model's job queue (management API, DescribeModel)."""
    answer = requests.get(f"http://127.0.0.1:{service.config.ports.management}/models/{MODEL}", timeout=30)
    return sum(model.get("jobQueueStatus", {}).get("pendingRequests", 0) for model in answer.json())


def test_queued_requests_share_full_batches_and_get_their_own_answers(gated_service, gate, tiny):
    target = f"127.0.0.1:{gated_service.config.ports.grpc}"

    def call(i: int) -> pb.ExplainResponse:
        request = pb.ExplainRequest(images=[pb.Image(data=tiny, id=f"client{i}")],
                                    options=pb.ExplainOptions(prediction_only=True, top_k=i + 1))
        if i % 2:
            answer = requests.post(gated_service.config.rest_url, data=json_format.MessageToJson(request),
                                   headers={"Content-Type": "application/json"}, timeout=120)
            assert answer.status_code == 200, answer.text
            return json_format.Parse(answer.content, pb.ExplainResponse())
        with grpc.insecure_channel(target) as channel:
            return pb_grpc.ExplainerStub(channel).Explain(request, timeout=120)

    with ThreadPoolExecutor(QUEUED + 2) as pool:
        with gate.held():
            first = gate.entered()
            holders = []
            for worker in range(2):  # one held call per worker
                holders.append(pool.submit(call, 100 + worker))
                gate.wait_entered(first + worker + 1)
            queued = [pool.submit(call, i) for i in range(QUEUED)]
            wait_until(lambda: pending_requests(gated_service) == QUEUED, 60, f"{QUEUED} requests queued")
        responses = [f.result() for f in queued]
        [f.result() for f in holders]
    assert sorted(gate.calls()[first:]) == [1, 1, 4, 4]  # the holders alone, then two full batches
    for i, response in enumerate(responses):
        [image] = response.images
        assert image.id == f"client{i}" and image.status.code == "OK"
        assert len(image.top_classes) == i + 1  # its own options
