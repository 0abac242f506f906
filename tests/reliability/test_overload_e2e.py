"""Overload and deadlines through the real service: shed calls are UNAVAILABLE with an "overloaded, may be retried"
message (never INTERNAL), the client retries them with backoff, and work whose deadline passed is dropped before
the engine and counted."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc as pb_grpc
from galore_client.client import GaloreClient
from galore_client.settings import ExplainSettings
from galore_gateway.local import free_ports
from tests.conftest import MODEL, REPO

from .conftest import metric

# 286 ambiguity maps per image (E = 12, V = 2 and 3): seconds of work per call whatever the engine's speed-ups
HEAVY = pb.ExplainOptions(kinds=[1, 2, 3, 4], top_e=12, dims=[2, 3])


def explain(target: str, request: pb.ExplainRequest, timeout_s: float) -> tuple[str, str, float]:
    """(code name, details, seconds) of one Explain call."""
    start = time.perf_counter()
    with grpc.insecure_channel(target) as channel:
        try:
            pb_grpc.ExplainerStub(channel).Explain(request, timeout=timeout_s)
            return "OK", "", time.perf_counter() - start
        except grpc.RpcError as err:
            return err.code().name, err.details() or "", time.perf_counter() - start


def assert_overloaded(details: str) -> None:
    assert "overloaded" in details and "retried" in details, details


@pytest.fixture(scope="module")
def narrow_gateway(service):
    """A second gateway on the shared TorchServe that forwards one call at a time (--max-inflight 1)."""
    port = free_ports(1)[0]
    proc = subprocess.Popen(
        [sys.executable, "-m", "galore_gateway", "--listen", f"127.0.0.1:{port}", "--metrics-port", "0",
         "--ts-config", str(service.config.ts_config), "--model", MODEL, "--max-inflight", "1"], cwd=REPO)
    target = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while True:
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                        break
                except grpc.RpcError:
                    pass
                assert proc.poll() is None and time.monotonic() < deadline, "narrow gateway did not get SERVING"
                time.sleep(0.2)
        yield target
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def settled(port: int, name: str, quiet_s: float = 3.0, **labels) -> float:
    """The metric once it has not changed for ``quiet_s`` (work still running from earlier calls has finished)."""
    value, since = metric(port, name, **labels), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        now = metric(port, name, **labels)
        if now != value:
            value, since = now, time.monotonic()
    return value


def slow_request(big: bytes) -> pb.ExplainRequest:
    """Several seconds of work however fast the engine: 8 images of 2 MP with HEAVY options."""
    return pb.ExplainRequest(images=[pb.Image(data=big)] * 8, options=HEAVY)


def test_calls_beyond_the_inflight_limit_are_shed_and_the_client_retries_them_with_backoff(narrow_gateway, big,
                                                                                          tiny):
    holder = threading.Thread(target=explain, args=(narrow_gateway, slow_request(big), 120))
    holder.start()
    time.sleep(0.3)  # the slow call now fills the one slot
    code, details, seconds = explain(narrow_gateway, pb.ExplainRequest(images=[pb.Image(data=tiny)]), 30)
    assert code == "UNAVAILABLE" and seconds < 2, (code, details)
    assert_overloaded(details)
    sleeps = []

    def sleep(seconds_):
        sleeps.append(seconds_)
        time.sleep(seconds_)

    with GaloreClient(f"grpc://{narrow_gateway}", retries=10, backoff_s=0.2, max_backoff_s=2.0, sleep=sleep) as client:
        holder2 = threading.Thread(target=explain, args=(narrow_gateway, slow_request(big), 120))
        holder.join()
        holder2.start()
        time.sleep(0.3)
        [result] = client.explain([tiny], ExplainSettings(prediction_only=True), input_size=224)
        holder2.join()
    assert result.error is None
    assert sleeps and sleeps == sorted(sleeps) and sleeps[0] == pytest.approx(0.2), sleeps


def test_a_full_torchserve_queue_is_overloaded_on_both_transports_never_internal(service, grpc_target, rest_url,
                                                                                 photo, tiny):
    """140 REST callers (a photo, every kind) keep TorchServe's job queue full: REST gets 503, and gRPC calls sent
    once the queue is full get UNAVAILABLE saying so. The callers post again until the gRPC calls are answered, so
    the queue stays full however fast the engine drains it."""
    stop, full = threading.Event(), threading.Event()

    def rest(_):
        codes = []
        while not stop.is_set():
            codes.append(requests.post(rest_url, data=photo, headers={"Content-Type": "image/jpeg"},
                                       timeout=120).status_code)
            if codes[-1] == 503:
                full.set()
        return codes

    request = pb.ExplainRequest(images=[pb.Image(data=tiny)])
    with ThreadPoolExecutor(160) as pool:
        rest_calls = [pool.submit(rest, i) for i in range(140)]
        try:
            assert full.wait(60), "140 REST callers never filled the queue"
            grpc_calls = [pool.submit(explain, grpc_target, request, 120) for _ in range(16)]
            grpc_results = [f.result() for f in grpc_calls]
        finally:
            stop.set()
        statuses = {code for f in rest_calls for code in f.result()}
    assert statuses <= {200, 503} and 503 in statuses, statuses
    codes = {code for code, _, _ in grpc_results}
    assert codes <= {"OK", "UNAVAILABLE"}, grpc_results
    shed = [details for code, details, _ in grpc_results if code == "UNAVAILABLE"]
    assert shed, "no gRPC call met the full queue"
    for details in shed:
        assert_overloaded(details)
        assert "job queue is full" in details


def test_a_100_ms_deadline_gets_deadline_exceeded_without_waiting_for_the_work(grpc_target, big):
    # one image with HEAVY options (286 maps: far more than 100 ms of work however fast the engine); the next test
    # waits for the abandoned work to settle before it counts images
    code, _, seconds = explain(grpc_target, pb.ExplainRequest(images=[pb.Image(data=big)], options=HEAVY), 0.1)
    assert code == "DEADLINE_EXCEEDED"
    assert seconds < 1.0  # a loose bound; benchmarks/reliability.py prints the figure


def test_requests_whose_deadline_passed_in_the_queue_are_dropped_before_the_engine(service, grpc_target, big,
                                                                                   tiny):
    port = service.config.ports.metrics
    images_before = settled(port, "galore_images_total", model=MODEL, kind="prediction")  # earlier work done
    dropped_before = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline")
    heavy = pb.ExplainRequest(images=[pb.Image(data=big)], options=HEAVY)
    with ThreadPoolExecutor(24) as pool:
        backlog = [pool.submit(explain, grpc_target, heavy, 120) for _ in range(8)]  # 16 calls: under the limit
        time.sleep(0.3)
        short = [pool.submit(explain, grpc_target, pb.ExplainRequest(images=[pb.Image(data=tiny)]), 0.3)
                 for _ in range(8)]
        short_results = [f.result() for f in short]
        assert all(f.result()[0] == "OK" for f in backlog)
    assert {code for code, _, _ in short_results} <= {"OK", "DEADLINE_EXCEEDED"}
    expired = sum(1 for code, _, _ in short_results if code == "DEADLINE_EXCEEDED")
    assert expired >= 1
    computed = settled(port, "galore_images_total", model=MODEL, kind="prediction") - images_before
    dropped = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline") - dropped_before
    assert 1 <= dropped <= expired
    assert computed == 8 + 8 - dropped  # a dropped request cost no engine work


def test_a_rest_call_past_its_deadline_header_is_dropped(service, rest_url, tiny):
    port = service.config.ports.metrics
    before = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline")
    answer = requests.post(rest_url, data=tiny, headers={"Content-Type": "image/jpeg",
                                                         "galore-deadline": f"{time.time() - 1:.3f}"}, timeout=60)
    assert answer.status_code == 504 and answer.json()["status"]["code"] == "DEADLINE_EXCEEDED"
    time.sleep(1.0)
    assert metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline") - before == 1
