"""The KServe host's queue is bounded like TorchServe's job queue: requests beyond ``max_queued`` are answered at
once with UNAVAILABLE ("overloaded", retryable) in the caller's format, the others are explained; the real
ExplainService and engine run in process (no server is needed to hold a queue)."""
from __future__ import annotations

import asyncio

import pytest
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_kserve.archive import Batching
from galore_kserve.batcher import MicroBatcher
from galore_service.calls import Request
from galore_service.metrics import DROPPED_TOTAL, MetricKind, WorkerMetrics
from galore_wire.contract import JSON, PROTOBUF, Call
from galore_wire.status import STATUS_TABLE


class CountingMetrics(WorkerMetrics):
    """Keeps what the batcher and service record, to check the dropped-requests counter."""

    def __init__(self):
        super().__init__("m")
        self.counts: dict[tuple, float] = {}

    def _record(self, name: str, kind: MetricKind, value: float, labels: list[str]) -> None:
        key = (name, *labels)
        self.counts[key] = self.counts.get(key, 0) + value


@pytest.fixture(scope="module")
def explain_service():
    from galore_cli.local import LocalBackend

    return LocalBackend(device="cpu").service


def _request(chelsea: bytes) -> bytes:
    request = pb.ExplainRequest(images=[pb.Image(data=chelsea, id="cat")],
                                options=pb.ExplainOptions(prediction_only=True))
    return request.SerializeToString()


def test_requests_beyond_the_queue_are_refused_at_once_as_overloaded(explain_service, chelsea):
    metrics = CountingMetrics()
    batcher = MicroBatcher([explain_service], metrics, Batching(max_batch_size=1, max_delay_s=0.0), max_queued=2)
    body = _request(chelsea)

    async def burst():
        try:
            gateway = [batcher.submit(Request(rpc=Call.EXPLAIN, body=body)) for _ in range(4)]
            rest = [batcher.submit(Request(body=body, content_type=PROTOBUF, accept=JSON)) for _ in range(2)]
            return await asyncio.gather(*gateway, *rest)
        finally:
            batcher.close()

    answers = asyncio.run(burst())
    # submit() puts without yielding, so the first two wait in the queue and the four after them find it full
    assert [a.http_status for a in answers] == [200, 200, 503, 503, 503, 503]
    # REST's Retry-After: whole seconds, at least 1 (galore_wire.backpressure); none on answered requests
    assert [a.retry_after for a in answers[:2]] == ["", ""]
    assert all(a.retry_after.isdigit() and int(a.retry_after) >= 1 for a in answers[2:]), answers
    refused_grpc = pb.ExplainResponse.FromString(answers[2].body)
    assert refused_grpc.status.code == "UNAVAILABLE"
    assert refused_grpc.status.grpc_code == STATUS_TABLE["UNAVAILABLE"][0] == 14
    assert refused_grpc.status.message == ("the service is overloaded (the KServe host's job queue is full, "
                                           "job_queue_size=2); the call may be retried with backoff")
    assert not refused_grpc.images
    refused_rest = json_format.Parse(answers[5].body, pb.ExplainResponse())
    assert answers[5].media_type == JSON and refused_rest.status.http_status == 503
    explained = pb.ExplainResponse.FromString(answers[0].body)
    assert explained.status.code == "OK" and explained.images[0].top_classes
    assert metrics.counts[(DROPPED_TOTAL, "queue_full")] == 4


def test_the_queue_bound_must_be_positive(explain_service):
    with pytest.raises(ValueError, match="max_queued"):
        MicroBatcher([explain_service], WorkerMetrics("m"), Batching(), max_queued=0)
