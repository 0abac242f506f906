"""Hostile input through the real service, both transports: no 5xx, no INTERNAL/UNKNOWN, every rejection names a
field, no worker restart, health stays SERVING. `make reliability` runs >= 10,000 cases; this runs a few hundred.
"""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from benchmarks.reliability_fuzz import generate, send_all

from .conftest import worker_pids

SEED = 20261201  # recorded: the same seed draws the same cases (hypothesis, no shrinking)
CASES = 300


def test_generation_is_reproducible_from_the_seed():
    first, again = generate(40, SEED), generate(40, SEED)
    assert [c.body for c in first] == [c.body for c in again]
    assert [c.body for c in generate(40, SEED + 1)] != [c.body for c in first]


def test_fuzzed_requests_on_both_transports_are_answered_cleanly(service, grpc_target, rest_url):
    workers = worker_pids(service.torchserve.pid)
    cases = generate(CASES, SEED)
    assert {c.transport for c in cases} == {"grpc", "rest"}
    report = send_all(cases, grpc_target, rest_url, concurrency=4, timeout_s=120)
    print(report.summary())
    assert not report.problems, report.summary()
    codes = report.codes()
    # the cases reach the engine as well as the validators
    assert codes["grpc OK"] > 0 and codes["rest OK"] > 0
    assert codes["grpc INVALID_ARGUMENT"] > 0 and codes["rest INVALID_ARGUMENT"] > 0
    assert worker_pids(service.torchserve.pid) == workers, "a worker restarted while fuzzing"
    with grpc.insecure_channel(grpc_target) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
    assert status == health_pb2.HealthCheckResponse.SERVING
