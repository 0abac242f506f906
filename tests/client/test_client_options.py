"""Retries with backoff, bearer tokens and TLS, checked on real loopback servers (gRPC and HTTP) that this file
starts: a small galore.v1 Explainer that can refuse its first calls, and a plain HTTP server."""
from __future__ import annotations

import http.server
import socket
import subprocess
import threading
from concurrent import futures

import grpc
import pytest
from google.protobuf import json_format

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc
from galore_client.client import GaloreClient, parse_server
from galore_client.errors import GaloreClientError
from galore_client.settings import ExplainSettings
from tests.tools import require_tool


class FlakyExplainer(explainer_pb2_grpc.ExplainerServicer):
    """Answers GetModelInfo, but first fails ``failures`` calls with ``code``; records each call's metadata."""

    def __init__(self, failures: int = 0, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE):
        self.failures, self.code, self.calls = failures, code, []

    def GetModelInfo(self, request, context):
        self.calls.append(dict(context.invocation_metadata()))
        if len(self.calls) <= self.failures:
            context.abort(self.code, f"refused call {len(self.calls)}")
        return pb.ModelInfo(name="tiny", classes=[pb.ClassInfo(class_id=0, label="zero"),
                                                  pb.ClassInfo(class_id=1, label="one")], input_size=4,
                            feature_height=2, feature_width=2)


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

    def make(failures: int = 0, code=grpc.StatusCode.UNAVAILABLE, credentials=None):
        servicer = FlakyExplainer(failures, code)
        server, port = start_server(servicer, credentials)
        servers.append(server)
        return servicer, port

    yield make
    for server in servers:
        server.stop(grace=None)


def test_unavailable_is_retried_with_exponential_backoff(flaky):
    servicer, port = flaky(failures=2)
    sleeps = []
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=3, backoff_s=0.25, sleep=sleeps.append) as client:
        summary = client.model_info()
    assert summary.labels == ("zero", "one") and summary.class_id("one") == 1
    assert len(servicer.calls) == 3 and sleeps == [0.25, 0.5]


def test_retries_give_up_with_the_servers_message(flaky):
    servicer, port = flaky(failures=10)
    sleeps = []
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=3, backoff_s=1.0, max_backoff_s=3.0,
                      sleep=sleeps.append) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "UNAVAILABLE" and info.value.message == "refused call 4"
    assert info.value.grpc_code == 14 and info.value.http_status == 503
    assert len(servicer.calls) == 4 and sleeps == [1.0, 2.0, 3.0]  # capped at max_backoff_s


def test_other_errors_are_not_retried(flaky):
    servicer, port = flaky(failures=1, code=grpc.StatusCode.INVALID_ARGUMENT)
    sleeps = []
    with GaloreClient(f"127.0.0.1:{port}", retries=3, sleep=sleeps.append) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "INVALID_ARGUMENT" and info.value.message == "refused call 1"
    assert len(servicer.calls) == 1 and sleeps == []


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
    """Answers every image OK at 1x1 pixels, except images with data b"broken" (see ``broken_answer``)."""

    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        length = int(self.headers["Content-Length"])
        request = json_format.Parse(self.rfile.read(length), pb.ExplainRequest())
        type(self).seen.append((self.path, self.headers.get("Authorization"), request))
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
    _Recorder.seen = []
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
    sleeps = []
    with GaloreClient(f"grpc://127.0.0.1:{port}", retries=2, sleep=sleeps.append) as client:
        with pytest.raises(GaloreClientError) as info:
            client.model_info()
    assert info.value.code == "UNAVAILABLE" and sleeps == [0.2, 0.4]


def test_an_answer_that_breaks_the_contract_fails_that_image_only(recorder):
    with GaloreClient(recorder) as client:
        broken, fine = client.explain([b"broken", b"img"], input_size=0)
    assert not broken.ok and broken.error.code == "INTERNAL"
    assert broken.error.message == ("malformed answer from the service: attributive.region.mask: mask is 3x3, "
                                    "image is 2x2")
    assert fine.ok
