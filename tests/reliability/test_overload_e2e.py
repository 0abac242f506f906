"""Overload and deadlines through the real service: shed calls are UNAVAILABLE with an "overloaded, may be retried"
message (never INTERNAL) and a ``grpc-retry-pushback-ms`` hint, the client retries them as its service config says,
and work whose deadline passed is dropped before the engine and counted.

Every scenario that needs work to outlast a deadline or a queue to stay full holds the gated archive's engine
calls (tests/reliability/gate.py) for as long as it needs, so none depends on how fast the engine or machine is.
"""
from __future__ import annotations

import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc as pb_grpc
from galore_client.client import GaloreClient
from galore_client.errors import GaloreClientError
from galore_client.settings import ExplainSettings
from galore_supervisor.deployment import free_ports
from galore_wire.backpressure import PUSHBACK_KEY
from tests.conftest import MODEL, REPO

from .conftest import metric

PUSHBACK_CEILING_MS = 3000  # galore_wire.backpressure.DrainEstimate: 2 s ceiling x 1.5 jitter


def explain(target: str, request: pb.ExplainRequest, timeout_s: float) -> tuple[str, str, float, dict]:
    """(code name, details, seconds, trailing metadata) of one Explain call, without retries."""
    start = time.perf_counter()
    with grpc.insecure_channel(target, options=[("grpc.enable_retries", 0)]) as channel:
        try:
            pb_grpc.ExplainerStub(channel).Explain(request, timeout=timeout_s)
            return "OK", "", time.perf_counter() - start, {}
        except grpc.RpcError as err:
            return (err.code().name, err.details() or "", time.perf_counter() - start,
                    dict(err.trailing_metadata() or ()))


def assert_overloaded(details: str) -> None:
    assert "overloaded" in details and "retried" in details, details


def assert_pushback(trailers: dict) -> None:
    assert 0 < int(trailers[PUSHBACK_KEY]) <= PUSHBACK_CEILING_MS, trailers


def wait_until(predicate, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"not {what} after {timeout_s} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def grpc_target(gated_service) -> str:
    return f"127.0.0.1:{gated_service.config.ports.grpc}"


@pytest.fixture(scope="module")
def rest_url(gated_service) -> str:
    return gated_service.config.rest_url


@pytest.fixture(scope="module")
def narrow_gateway(gated_service):
    """A second gateway on the gated TorchServe that forwards one call at a time (--max-inflight 1): (its
    address, its metrics port)."""
    port, metrics_port = free_ports(2)
    proc = subprocess.Popen(
        [sys.executable, "-m", "galore_gateway", "--listen", f"127.0.0.1:{port}", "--metrics-port", str(metrics_port),
         "--ts-config", str(gated_service.config.ts_config), "--model", MODEL, "--max-inflight", "1"], cwd=REPO)
    target = f"127.0.0.1:{port}"
    try:
        with grpc.insecure_channel(target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)

            def serving():
                assert proc.poll() is None, "the narrow gateway exited"
                try:
                    return stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1
                except grpc.RpcError:
                    return False

            wait_until(serving, 60, "SERVING")
        yield target, metrics_port
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def settled(port: int, name: str, quiet_s: float = 2.0, **labels) -> float:
    """The metric once it has not changed for ``quiet_s`` (work released from the gate has been counted)."""
    value, since = metric(port, name, **labels), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.25)
        now = metric(port, name, **labels)
        if now != value:
            value, since = now, time.monotonic()
    return value


def test_calls_beyond_the_inflight_limit_are_shed_with_pushback_and_retried_as_configured(narrow_gateway, gate,
                                                                                         tiny):
    target, metrics_port = narrow_gateway
    request = pb.ExplainRequest(images=[pb.Image(data=tiny)], options=pb.ExplainOptions(prediction_only=True))

    def shed() -> float:
        return metric(metrics_port, "galore_shed_total", model=MODEL)

    with ThreadPoolExecutor(2) as pool:
        with gate.held():
            entered = gate.entered()
            holder = pool.submit(explain, target, request, 120)
            gate.wait_entered(entered + 1)  # the holder fills the one slot until the gate opens
            code, details, seconds, trailers = explain(target, request, 30)
            assert code == "UNAVAILABLE", (code, details)
            assert_overloaded(details)
            assert_pushback(trailers)

            before = shed()
            with GaloreClient(f"grpc://{target}", retries=2, backoff_s=0.05) as client:
                with pytest.raises(GaloreClientError) as info:
                    client.explain([tiny], ExplainSettings(prediction_only=True), input_size=224)
            assert info.value.code == "UNAVAILABLE"
            assert shed() - before == 3  # the first attempt and exactly `retries` more

            # a call still retrying when the slot frees gets through
            before = shed()
            client = GaloreClient(f"grpc://{target}", retries=4, backoff_s=0.05)
            retried = pool.submit(client.explain, [tiny], ExplainSettings(prediction_only=True), input_size=224)
            wait_until(lambda: shed() > before, 60, "the retried call shed once")
        assert holder.result()[0] == "OK"
        [result] = retried.result()
        client.close()
    assert result.error is None


def test_a_full_torchserve_queue_is_overloaded_on_both_transports_never_internal(grpc_target, rest_url, gate, tiny):
    """With the engine held, REST callers fill TorchServe's job queue: REST gets 503, and gRPC calls sent then get
    UNAVAILABLE saying so, with a pushback hint."""
    request = pb.ExplainRequest(images=[pb.Image(data=tiny)])
    with ThreadPoolExecutor(64) as pool:
        with gate.held():
            rest = [pool.submit(requests.post, rest_url, data=tiny, headers={"Content-Type": "image/jpeg"},
                                timeout=120) for _ in range(48)]  # 2 workers x 4 + a queue of 24: 32 places
            wait_until(lambda: any(f.done() for f in rest), 60, "a REST call refused")
            grpc_results = [explain(grpc_target, request, 120) for _ in range(4)]
        statuses = sorted(f.result().status_code for f in rest)
    assert set(statuses) == {200, 503}, statuses
    assert {code for code, *_ in grpc_results} == {"UNAVAILABLE"}, grpc_results
    for _, details, _, trailers in grpc_results:
        assert_overloaded(details)
        assert "job queue is full" in details
        assert_pushback(trailers)


def test_a_100_ms_deadline_gets_deadline_exceeded_without_waiting_for_the_work(gated_service, grpc_target, gate,
                                                                               tiny):
    port = gated_service.config.ports.metrics

    def counts() -> tuple[float, float]:
        return (metric(port, "galore_late_requests_total", model=MODEL),
                metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline"))

    late_before, dropped_before = counts()
    with gate.held():
        entered = gate.entered()
        code, _, seconds, _ = explain(grpc_target, pb.ExplainRequest(images=[pb.Image(data=tiny)]), 0.1)
        assert code == "DEADLINE_EXCEEDED"
        assert seconds < 1.0  # the gateway answers at the deadline, the work is still held
        # the call reached the engine (held there), or a worker found its deadline passed and dropped it
        wait_until(lambda: gate.entered() > entered or counts()[1] > dropped_before, 60, "the call taken")
        held = gate.entered() > entered
    wait_until(lambda: sum(counts()) > late_before + dropped_before, 60, "the call counted")
    late, dropped = (now - before for now, before in zip(counts(), (late_before, dropped_before)))
    # computed after its deadline: counted as late work; dropped in the queue: no work
    assert (late, dropped) == ((1, 0) if held else (0, 1))


def test_requests_whose_deadline_passed_in_the_queue_are_dropped_before_the_engine(gated_service, grpc_target,
                                                                                   gate, tiny):
    port = gated_service.config.ports.metrics
    images_before = settled(port, "galore_images_total", model=MODEL, kind="prediction")  # earlier work done
    dropped_before = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline")
    late_before = metric(port, "galore_late_requests_total", model=MODEL)
    request = pb.ExplainRequest(images=[pb.Image(data=tiny)])
    with ThreadPoolExecutor(16) as pool:
        with gate.held():
            holders = []
            for _ in range(2):  # one call per worker, each held in its engine call
                entered = gate.entered()
                holders.append(pool.submit(explain, grpc_target, request, 120))
                gate.wait_entered(entered + 1)
            short = [pool.submit(explain, grpc_target, request, 0.3) for _ in range(8)]
            short_codes = [f.result()[0] for f in short]  # every one expires while both workers are held
        assert [f.result()[0] for f in holders] == ["OK", "OK"]
    assert short_codes == ["DEADLINE_EXCEEDED"] * 8
    computed = settled(port, "galore_images_total", model=MODEL, kind="prediction") - images_before
    dropped = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline") - dropped_before
    assert (dropped, computed) == (8, 2)  # the expired requests cost no engine work
    assert metric(port, "galore_late_requests_total", model=MODEL) == late_before  # the holders were in time


def test_a_rest_call_past_its_deadline_header_is_dropped(gated_service, rest_url, tiny):
    port = gated_service.config.ports.metrics
    before = metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline")
    answer = requests.post(rest_url, data=tiny, headers={"Content-Type": "image/jpeg",
                                                         "galore-deadline": f"{time.time() - 1:.3f}"}, timeout=60)
    assert answer.status_code == 504 and answer.json()["status"]["code"] == "DEADLINE_EXCEEDED"
    wait_until(lambda: metric(port, "galore_dropped_requests_total", model=MODEL, reason="deadline") - before >= 1,
               60, "the drop counted")
    assert settled(port, "galore_dropped_requests_total", model=MODEL, reason="deadline") - before == 1
