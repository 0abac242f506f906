"""`make serve` (python -m galore_supervisor) restarts what crashes: TorchServe (or the KServe host) killed ->
the gateway answers UNAVAILABLE at once and health says NOT_SERVING until the backend is back, then serves again by
itself; the gateway killed -> started again; SIGTERM -> everything stops. Runs its own deployments, since it kills
processes."""
from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time

import grpc
import numpy as np
import psutil
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc as pb_grpc
from galore_supervisor.deployment import free_ports
from galore_wire.backpressure import PUSHBACK_KEY
from tests.conftest import MODEL, REPO

from .conftest import jpeg

SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING


def health(channel) -> int | None:
    try:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=2).status
    except grpc.RpcError:
        return None


def wait_for(predicate, timeout_s: float, what: str) -> float:
    start = time.monotonic()
    while not predicate():
        assert time.monotonic() - start < timeout_s, f"not {what} after {timeout_s} s"
        time.sleep(0.2)
    return time.monotonic() - start


def descendant(root: psutil.Process, name: str) -> psutil.Process:
    [proc] = [p for p in root.children(recursive=True) if p.name() == name or
              (name == "gateway" and "galore_gateway" in " ".join(p.cmdline()) and p.ppid() == root.pid)]
    return proc


@contextlib.contextmanager
def serving(archive_dir, tmp_path, *flags: str):
    """`make serve` (python -m galore_supervisor ``flags``) on free ports: yields (its process, a channel to the
    gateway, the log file). Leaving stops it with SIGTERM and checks that every process it started has ended."""
    ports = free_ports(7)
    names = ["--grpc-port", "--gateway-metrics-port", "--rest-port", "--management-port", "--metrics-port",
             "--ts-grpc-port", "--ts-grpc-management-port"]
    log = (tmp_path / "serve.log").open("w+")
    serve = subprocess.Popen(
        [sys.executable, "-m", "galore_supervisor", *flags, "--model-store", str(archive_dir), "--run-dir",
         str(tmp_path / "run"), "--model", MODEL] + [str(x) for pair in zip(names, ports) for x in pair],
        cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    root = psutil.Process(serve.pid)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{ports[0]}") as channel:
            wait_for(lambda: health(channel) == SERVING, 300, "SERVING")
            yield serve, channel, log
        everyone = root.children(recursive=True)
        serve.send_signal(signal.SIGTERM)
        assert serve.wait(timeout=90) == 0
        gone, alive = psutil.wait_procs(everyone, timeout=30)
        assert not alive, alive
    finally:
        if serve.poll() is None:
            serve.kill()
            for proc in root.children(recursive=True):
                proc.kill()


def refused_at_once(stub, request, what: str) -> None:
    """The backend is away: Explain gets UNAVAILABLE ("retried") in under 2 s, not after its deadline, with a
    pushback of the gateway's health poll interval (1 s, jittered x0.5-1.5)."""
    start = time.perf_counter()
    try:
        stub.Explain(request, timeout=30)
        raise AssertionError(f"Explain answered while {what} was away")
    except grpc.RpcError as err:
        assert err.code() == grpc.StatusCode.UNAVAILABLE, err
        assert "retried" in err.details()
        assert 500 <= int(dict(err.trailing_metadata())[PUSHBACK_KEY]) <= 1500, err.trailing_metadata()
    assert time.perf_counter() - start < 2.0


TINY = pb.ExplainRequest(images=[pb.Image(data=jpeg(np.zeros((32, 32, 3), np.uint8)))])


def test_serve_restarts_a_killed_torchserve_and_gateway_and_stops_on_sigterm(gated_store, gate, tmp_path):
    with serving(gated_store, tmp_path) as (serve, channel, log):
        root = psutil.Process(serve.pid)
        stub = pb_grpc.ExplainerStub(channel)
        stub.Explain(TINY, timeout=60)

        # every worker dies while holding a call (held at the gate): the call fails as retryable, TorchServe starts
        # new workers
        with gate.held():
            entered = gate.entered()
            held = stub.Explain.future(TINY, timeout=120)
            gate.wait_entered(entered + 1)
            for worker in [p for p in root.children(recursive=True)
                           if any("model_service_worker" in part for part in p.cmdline())]:
                worker.kill()
            assert held.code() == grpc.StatusCode.UNAVAILABLE, (held.code(), held.details())
        assert "retried" in held.details()
        wait_for(lambda: health(channel) == SERVING, 300, "SERVING after the workers restarted")

        descendant(root, "java").kill()  # TorchServe's frontend crashes
        wait_for(lambda: health(channel) == NOT_SERVING, 10, "NOT_SERVING")
        refused_at_once(stub, TINY, "TorchServe")
        wait_for(lambda: health(channel) == SERVING, 300, "SERVING again")
        stub.Explain(TINY, timeout=60)

        descendant(root, "gateway").kill()
        wait_for(lambda: health(channel) is None, 10, "gone")
        wait_for(lambda: health(channel) == SERVING, 60, "SERVING after the gateway restart")
        stub.Explain(TINY, timeout=60)
    log.seek(0)
    text = log.read()
    assert "torchserve exited" in text and "gateway exited" in text and "restarting in" in text, text[-2000:]


def test_serve_restarts_a_killed_kserve_host_and_the_gateway_refuses_at_once_meanwhile(archive_dir, tmp_path):
    with serving(archive_dir, tmp_path, "--backend", "kserve") as (serve, channel, log):
        stub = pb_grpc.ExplainerStub(channel)
        stub.Explain(TINY, timeout=60)
        [host] = [p for p in psutil.Process(serve.pid).children() if "galore_kserve" in " ".join(p.cmdline())]
        host.kill()  # the KServe host crashes
        wait_for(lambda: health(channel) == NOT_SERVING, 10, "NOT_SERVING")
        refused_at_once(stub, TINY, "the KServe host")
        wait_for(lambda: health(channel) == SERVING, 300, "SERVING again")
        assert stub.Explain(TINY, timeout=60).status.code == "OK"
    log.seek(0)
    text = log.read()
    assert "kserve exited" in text and "restarting in" in text, text[-2000:]
