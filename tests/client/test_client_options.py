"""Retries with backoff, bearer tokens and TLS, checked on real loopback servers (gRPC and HTTP) that this file
starts: a small galore.v1 Explainer that can refuse its first calls, and a plain HTTP server."""
from __future__ import annotations

import http.server
import socket
import subprocess
import threading
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc
from galore_client.client import GaloreClient, parse_server
from galore_client.errors import GaloreClientError
from galore_client.settings import ExplainSettings
from galore_wire.backpressure import PUSHBACK_KEY
from tests.tools import require_tool


class FlakyExplainer(explainer_pb2_grpc.ExplainerServicer):
    """Answers GetModelInfo, but first fails ``failures`` calls with ``code`` (and ``pushback_ms`` as
    grpc-retry-pushback-ms when set); records each call's metadata and arrival time."""

    def __init__(self, failures: int = 0, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE,
                 pushback_ms: int | None = None):
        self.failures, self.code, self.pushback_ms = failures, code, pushback_ms
        self.calls, self.arrivals = [], []

    def GetModelInfo(self, request, context):
        self.arrivals.append(time.monotonic())
        self.calls.append(dict(context.invocation_metadata()))
        if len(self.calls) <= self.failures:
            if self.pushback_ms is not None:
                context.set_trailing_metadata(((PUSHBACK_KEY, str(self.pushback_ms)),))
            context.abort(self.code, f"refused call {len(self.calls)}")
        return pb.ModelInfo(name="tiny", classes=[pb.ClassInfo(class_id=0, label="zero"),
                                                  pb.ClassInfo(class_id=1, label="one")], input_size=4,
                            feature_height=2, feature_width=2)

    def gaps(self) -> list[float]:
        return [b - a for a, b in zip(self.arrivals, self.arrivals[1:])]


def start_server(servicer, credentials=None) -> tuple[grpc.Server, int]:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    explainer_pb2_grpc.add_ExplainerServicer_to_server(servicer, server)
    port = (server.add_secure_port("127.0.0.1:0", credentials) if credentials
            else server.add_insecure_port("127.0.0.1:0"))
    server.start()
    return server, port


@pytest.fixture
def flaky():
    servers = []

    def make(failures: int = 0, code=grpc.StatusCode.UNAVAILABLE, credentials=None, pushback_ms=None):
        servicer = FlakyExplainer(failures, code, pushback_ms)
        server, port = start_server(servicer, credentials)
        servers.append(server)
        return servicer, port

    yield make
    for server in servers:
        server.stop(grace=None)


def test_unavailable_is_retried_with_exponential_backoff(flaky):
    servicer, port = flaky(failures=2)
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=3, backoff_s=0.25) as client:
        summary = client.model_info()
    assert summary.labels == ("zero", "one") and summary.class_id("one") == 1
    assert len(servicer.calls) == 3
    first, second = servicer.gaps()
    # gRPC waits backoff * multiplier ** (n - 1), jittered by +-20 %; never sooner
    assert first >= 0.25 * 0.8 and second >= 0.5 * 0.8, servicer.gaps()


def test_retries_give_up_after_the_configured_attempts_with_the_servers_message(flaky):
    servicer, port = flaky(failures=10)
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=3, backoff_s=0.05, max_backoff_s=0.1) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "UNAVAILABLE" and info.value.message == "refused call 4"
    assert info.value.grpc_code == 14 and info.value.http_status == 503
    assert len(servicer.calls) == 4


def test_retries_are_jittered(flaky):
    """20 clients at once, each refused once, with a 2 s backoff: gRPC waits 1.6-2.4 s (+-20 %) before each retry.
    Scheduling delays only lengthen a gap, so a gap shorter than the backoff is jitter, measured. The backoff is long
    so that delays of a loaded machine (tens of ms) leave most of the jitter's range visible: with delays of 40 ms,
    a gap falls below 0.97 x backoff with probability 0.37 each, so all 20 miss it with probability 1e-4."""
    backoff, clients = 2.0, 20
    servers = [flaky(failures=1) for _ in range(clients)]

    def call(port: int) -> None:
        with GaloreClient(f"grpc://127.0.0.1:{port}", retries=1, backoff_s=backoff) as client:
            client.model_info()

    with futures.ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(call, [port for _, port in servers]))
    gaps = [gap for servicer, _ in servers for gap in servicer.gaps()]
    assert len(gaps) == clients and min(gaps) >= 0.8 * backoff * 0.99, gaps
    assert any(gap < 0.97 * backoff for gap in gaps), gaps


def test_the_retry_budget_stops_retries_while_most_calls_fail(flaky):
    servicer, port = flaky(failures=1000)
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=4, backoff_s=0.01, max_backoff_s=0.02) as client:
        for _ in range(10):
            with pytest.raises(GaloreClientError):
                client.model_info()
    # without a budget: 10 x 5 attempts; with gRPC's (10 tokens, one per failure, retries only above 5 tokens)
    # the first calls retry a few times, then every call makes one attempt
    assert 10 <= len(servicer.calls) <= 10 + 5, len(servicer.calls)


def test_the_servers_pushback_replaces_the_backoff(flaky):
    servicer, port = flaky(failures=1, pushback_ms=600)
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=2, backoff_s=0.01, max_backoff_s=0.02) as client:
        client.model_info()
    assert len(servicer.calls) == 2 and servicer.gaps()[0] >= 0.6, servicer.gaps()


def test_retries_are_bounded_by_grpcs_limit():
    with pytest.raises(ValueError, match="retries: must be an integer from 0 to 4"):
        GaloreClient("grpc://127.0.0.1:1", retries=5)


def test_other_errors_are_not_retried(flaky):
    servicer, port = flaky(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    with GaloreClient(f"127.0.0.1:{port}", retries=3) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "INVALID_ARGUMENT" and info.value.message == "refused call 1"
    assert len(servicer.calls) == 1


def test_grpc_token_is_sent_as_bearer_metadata(flaky):
    servicer, port = flaky()
    with GaloreClient(f"grpc://127.0.0.1:{port}", token="s3cret") as client:
        client.model_info()
    assert servicer.calls[0]["authorization"] == "Bearer s3cret"


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for localhost / 127.0.0.1: (cert path, key path)."""
    require_tool("openssl", purpose="make a test certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return cert, key


def test_grpcs_uses_tls_and_trusts_the_given_ca(flaky, certificate):
    cert, key = certificate
    credentials = grpc.ssl_server_credentials([(key.read_bytes(), cert.read_bytes())])
    servicer, port = flaky(credentials=credentials)
    with GaloreClient(f"grpcs://localhost:{port}", ca_cert=str(cert), token="t0k") as client:
        assert client.model_info().name == "tiny"
    assert servicer.calls[0]["authorization"] == "Bearer t0k"
    with GaloreClient(f"grpcs://localhost:{port}", retries=0) as client:  # system roots do not trust it
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "UNAVAILABLE"
    with GaloreClient(f"grpc://localhost:{port}", retries=0) as client:  # plaintext to a TLS port
        with pytest.raises(GaloreClientError):
            client.model_info()


def test_missing_ca_file_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="ca_cert: cannot read"):
        GaloreClient("grpcs://127.0.0.1:1", ca_cert=str(tmp_path / "none.pem"))


def broken_answer() -> pb.ImageExplanation:
    """A 2x2 image whose attributive mask claims 3x3 pixels: breaks the contract."""
    item = pb.ImageExplanation(status=pb.Status(code="OK"), width=2, height=2)
    item.attributive.region.mask.CopyFrom(pb.Mask(width=3, height=3, bits=bytes(2)))
    return item


class _Recorder(http.server.BaseHTTPRequestHandler):
    """Answers every image OK at 1x1 pixels, except images with data b"broken" (see ``broken_answer``); the first
    ``refusals`` posts get 503 with ``Retry-After: retry_after`` instead. Records each post and its arrival time."""

    seen: list = []
    arrivals: list = []
    refusals, retry_after = 0, "1"

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        request = json_format.Parse(self.rfile.read(length), pb.ExplainRequest())
        type(self).seen.append((self.path, self.headers.get("Authorization"), request))
        type(self).arrivals.append(time.monotonic())
        if len(self.seen) <= self.refusals:
            body = json_format.MessageToJson(pb.ExplainResponse(status=pb.Status(
                code="UNAVAILABLE", message="the service is overloaded", http_status=503))).encode()
            self.send_response(503)
            self.send_header("Retry-After", self.retry_after)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        body = json_format.MessageToJson(pb.ExplainResponse(
            status=pb.Status(code="OK"),
            images=[broken_answer() if image.data == b"broken" else
                    pb.ImageExplanation(status=pb.Status(code="OK"), width=1, height=1)
                    for image in request.images])).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def recorder():
    _Recorder.seen, _Recorder.arrivals, _Recorder.refusals = [], [], 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_rest_sends_the_token_and_the_proto_json_request(recorder):
    with GaloreClient(recorder, model="m", token="abc") as client:
        [result] = client.explain([b"img"], ExplainSettings(kinds=("attributive",), counter_classes=("tabby",)),
                                  input_size=0)  # 0: no crop box, so no model info call
    [(path, auth, request)] = _Recorder.seen
    assert path == "/predictions/m" and auth == "Bearer abc"
    assert request.images[0].data == b"img" and request.options.kinds == [pb.EXPLANATION_KIND_ATTRIBUTIVE]
    assert request.options.counter_classes[0].label == "tabby"
    assert result.ok and (result.width, result.height) == (1, 1) and result.crop_box is None


def test_rest_honours_retry_after_on_503(recorder):
    _Recorder.refusals = 1
    with GaloreClient(recorder, model="m", retries=2, backoff_s=0.01, max_backoff_s=0.02) as client:
        [result] = client.explain([b"img"], input_size=0)
    assert result.ok and len(_Recorder.seen) == 2
    first, second = _Recorder.arrivals
    assert second - first >= 1.0  # Retry-After: 1 second, not the 10 ms backoff


def test_rest_retries_503_at_most_the_configured_times(recorder):
    _Recorder.refusals, _Recorder.retry_after = 100, "0"
    with GaloreClient(recorder, model="m", retries=2, backoff_s=0.01, max_backoff_s=0.02) as client:
        with pytest.raises(GaloreClientError) as info:
            client.explain([b"img"], input_size=0)
    assert info.value.code == "UNAVAILABLE" and info.value.http_status == 503
    assert len(_Recorder.seen) == 3


@pytest.mark.parametrize("url,parsed", [
    ("grpc://127.0.0.1:50051", ("grpc", False, "127.0.0.1:50051")),
    ("127.0.0.1:50051", ("grpc", False, "127.0.0.1:50051")),
    ("grpcs://example.org:443", ("grpc", True, "example.org:443")),
    ("http://127.0.0.1:8080/", ("rest", False, "http://127.0.0.1:8080")),
    ("https://[::1]:8443", ("rest", True, "https://[::1]:8443")),
])
def test_server_urls(url, parsed):
    assert parse_server(url) == parsed


def test_closed_port_is_unavailable_after_the_retries():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    start = time.monotonic()
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=2, backoff_s=0.2) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "UNAVAILABLE"
    assert time.monotonic() - start >= 0.8 * (0.2 + 0.4)  # two backoffs: the refused connection was retried


def test_an_answer_that_breaks_the_contract_fails_that_image_only(recorder):
    with GaloreClient(recorder) as client:
        broken, fine = client.explain([b"broken", b"img"], input_size=0)
    assert not broken.ok and broken.error.code == "INTERNAL"
    assert broken.error.message == ("malformed answer from the service: attributive.region.mask: mask is 3x3, "
                                    "image is 2x2")
    assert fine.ok
