"""Minimal Python client of the galore.v1 service: ``Explain`` / ``GetModelInfo`` over gRPC and REST, with timeouts.

    from galore_client.client import GrpcClient, RestClient, decode_mask
    with GrpcClient("127.0.0.1:50051") as client:
        response = client.explain([open("cat.jpg", "rb").read()])
    mask = decode_mask(response.images[0].attributive.region.mask)  # (H, W) bool numpy array

Request-level failures raise ``GaloreClientError`` (code name, message, field); a failure of one image is that
image's ``status`` in the response.

``GaloreClient`` (end of this module) is the typed API over either transport: ``grpc://``, ``grpcs://``,
``http://`` or ``https://`` server URLs, ``ExplainSettings`` in, ``Explanation`` objects (numpy masks and heatmaps,
labelled classes, strengths) out, TLS and bearer tokens. Retries (UNAVAILABLE, HTTP 503) are the transports' own:
a gRPC service config with a retry budget, urllib3's Retry honouring ``Retry-After`` (``galore_client.retry``).
"""
from __future__ import annotations

import threading
from typing import Iterable, Mapping

import grpc
import numpy as np
import requests
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from galore.options import DEFAULT_MODEL
from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc
from galore_wire.contract import (CODE_TRAILER, DEFAULT_GRPC_ADDRESS, DEFAULT_REST_ADDRESS, DEFAULT_SERVER,
                                  FIELD_TRAILER, MAX_MESSAGE_BYTES, RPC_KEY, Call)

from .errors import GaloreClientError
from .retry import NO_RETRIES, RetryPolicy
from .results import Explanation, ImageFailure
from .settings import ExplainSettings, ModelSummary
from .typed import WireFormatError, explanation_from_proto, mask_from_proto, settings_to_proto, summary_from_proto

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
SERVICE = pb.DESCRIPTOR.services_by_name["Explainer"].full_name  # "galore.v1.Explainer"


def build_request(images: Iterable[bytes] | bytes, options: pb.ExplainOptions | None = None,
                  ids: Iterable[str] | None = None) -> pb.ExplainRequest:
    """Encoded images (+ optional ids) and options -> ExplainRequest."""
    images = [images] if isinstance(images, (bytes, bytearray)) else list(images)
    ids = list(ids) if ids is not None else [""] * len(images)
    request = pb.ExplainRequest(images=[pb.Image(data=bytes(d), id=i) for d, i in zip(images, ids)])
    if options is not None:
        request.options.CopyFrom(options)
    return request


def decode_mask(mask: pb.Mask) -> np.ndarray:
    """Mask (COCO RLE or bits) -> ``(height, width)`` bool array in original image pixels (``typed.mask_from_proto``)."""
    return mask_from_proto(mask)


def heatmap_array(heatmap: pb.Heatmap) -> np.ndarray:
    """Heatmap -> ``(height, width)`` float32 array on the feature grid."""
    return np.asarray(heatmap.values, dtype=np.float32).reshape(heatmap.height, heatmap.width)


class GrpcClient:
    """``galore.v1.Explainer`` over gRPC (the gateway). ``timeout_s`` is the default per-call deadline."""

    def __init__(self, target: str = DEFAULT_GRPC_ADDRESS, timeout_s: float = 60.0,
                 max_message_bytes: int = MAX_MESSAGE_BYTES, tls: bool = False, ca_cert: bytes | None = None,
                 token: str | None = None, retry: RetryPolicy = NO_RETRIES):
        """``tls``: TLS channel, trusting ``ca_cert`` (PEM bytes) or the system roots; ``token``: sent as
        ``authorization: Bearer <token>`` metadata on every call; ``retry``: the channel's retry policy and budget
        (a call's ``timeout_s`` covers all its attempts)."""
        self.timeout_s = timeout_s
        options = [("grpc.max_send_message_length", max_message_bytes),
                   ("grpc.max_receive_message_length", max_message_bytes),
                   *retry.grpc_channel_options(SERVICE, max_message_bytes)]
        if tls or ca_cert:
            credentials = grpc.ssl_channel_credentials(root_certificates=ca_cert)
            self._channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self._channel = grpc.insecure_channel(target, options=options)
        self._metadata = (("authorization", f"Bearer {token}"),) if token else None
        self._stub = explainer_pb2_grpc.ExplainerStub(self._channel)

    def explain(self, images: Iterable[bytes] | bytes, options: pb.ExplainOptions | None = None,
                ids: Iterable[str] | None = None, timeout_s: float | None = None) -> pb.ExplainResponse:
        return self.explain_request(build_request(images, options, ids), timeout_s)

    def explain_request(self, request: pb.ExplainRequest, timeout_s: float | None = None) -> pb.ExplainResponse:
        return self._call(self._stub.Explain, request, timeout_s)

    def model_info(self, timeout_s: float | None = None) -> pb.ModelInfo:
        return self._call(self._stub.GetModelInfo, pb.GetModelInfoRequest(), timeout_s)

    def _call(self, method, request, timeout_s):
        try:
            return method(request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as err:
            trailers = dict(err.trailing_metadata() or ())
            field = trailers.get(FIELD_TRAILER, "")
            code = trailers.get(CODE_TRAILER) or err.code().name
            message = err.details() or ""
            if field and message.startswith(f"{field}: "):
                message = message[len(field) + 2:]
            raise GaloreClientError(code, message, field) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "GrpcClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


KSERVE_V1 = "/v1"  # a REST base URL ending so speaks to the KServe host's v1 routes


class RestClient:
    """TorchServe REST: ``POST /predictions/<model>`` (or ``/explanations/<model>``) with JSON or protobuf; with a
    base URL ending in ``/v1``, the KServe host's ``POST /v1/models/<model>:explain`` (same bodies and answers)."""

    def __init__(self, base_url: str = f"http://{DEFAULT_REST_ADDRESS}", model: str = DEFAULT_MODEL,
                 timeout_s: float = 60.0, ca_cert: str | None = None, token: str | None = None,
                 retry: RetryPolicy = NO_RETRIES):
        """``ca_cert``: path of a PEM file to trust for https:// URLs; ``token``: sent as
        ``Authorization: Bearer <token>``; ``retry``: 503 answers and refused connections are retried (each attempt
        gets ``timeout_s``), honouring ``Retry-After``. Safe to share between threads (one session per thread)."""
        self.base_url = base_url.rstrip("/")
        self.kserve = self.base_url.endswith(KSERVE_V1)
        self.model = model
        self.timeout_s = timeout_s
        self._ca_cert, self._token, self._retry = ca_cert, token, retry
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()

    @property
    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
            adapter = requests.adapters.HTTPAdapter(max_retries=self._retry.http_retry())
            session.mount("http://", adapter)
            session.mount("https://", adapter)
            if self._ca_cert:
                session.verify = self._ca_cert
            if self._token:
                session.headers["Authorization"] = f"Bearer {self._token}"
            with self._lock:
                self._sessions.append(session)
        return session

    def url(self, endpoint: str = "predictions") -> str:
        """TorchServe's ``endpoint`` ("predictions" or "explanations", which answer alike); on KServe ``:explain``."""
        if self.kserve:
            return f"{self.base_url}/models/{self.model}:explain"
        return f"{self.base_url}/{endpoint}/{self.model}"

    def explain(self, images: Iterable[bytes] | bytes, options: pb.ExplainOptions | None = None,
                ids: Iterable[str] | None = None, media_type: str = JSON, endpoint: str = "predictions",
                timeout_s: float | None = None) -> pb.ExplainResponse:
        return self.explain_request(build_request(images, options, ids), media_type, endpoint, timeout_s)

    def explain_request(self, request: pb.ExplainRequest, media_type: str = JSON, endpoint: str = "predictions",
                        timeout_s: float | None = None) -> pb.ExplainResponse:
        body = request.SerializeToString() if media_type == PROTOBUF else json_format.MessageToJson(request)
        return self.post(body, media_type, endpoint=endpoint, timeout_s=timeout_s)

    def explain_image(self, image: bytes, content_type: str = "image/jpeg", endpoint: str = "predictions",
                      timeout_s: float | None = None) -> pb.ExplainResponse:
        """A raw encoded image (all explanation kinds, default options)."""
        return self.post(image, content_type, accept=JSON, endpoint=endpoint, timeout_s=timeout_s)

    def post(self, body: bytes | str, content_type: str, accept: str | None = None, endpoint: str = "predictions",
             timeout_s: float | None = None) -> pb.ExplainResponse:
        """POSTs ``body``; returns the ExplainResponse or raises GaloreClientError for a non-2xx answer."""
        headers = {"Content-Type": content_type, "Accept": accept or content_type}
        try:
            answer = self._session.post(self.url(endpoint), data=body, headers=headers,
                                        timeout=timeout_s or self.timeout_s)
        except requests.Timeout:
            raise GaloreClientError("DEADLINE_EXCEEDED", f"no answer from {self.base_url} in time") from None
        except requests.ConnectionError as err:
            raise GaloreClientError("UNAVAILABLE", f"cannot reach {self.base_url}: {err}") from None
        response = parse_response(answer.content, answer.headers.get("Content-Type", ""))
        if answer.status_code >= 400:
            raise _http_error(answer, response)
        if response is None:
            raise GaloreClientError("INTERNAL", f"unreadable answer ({answer.headers.get('Content-Type')})")
        return response

    def model_info(self, timeout_s: float | None = None) -> pb.ModelInfo:
        """GetModelInfo over REST: a multipart form whose ``galore_wire.contract.RPC_KEY`` field names the call (KServe:
        that header on an empty protobuf body); the answer is a serialized ModelInfo."""
        if self.kserve:
            call = dict(data=b"", headers={RPC_KEY: Call.MODEL_INFO.value, "Content-Type": PROTOBUF,
                                           "Accept": PROTOBUF})
        else:
            call = dict(files={RPC_KEY: (None, Call.MODEL_INFO.value)}, headers={"Accept": PROTOBUF})
        try:
            answer = self._session.post(self.url(), timeout=timeout_s or self.timeout_s, **call)
        except requests.Timeout:
            raise GaloreClientError("DEADLINE_EXCEEDED", f"no answer from {self.base_url} in time") from None
        except requests.ConnectionError as err:
            raise GaloreClientError("UNAVAILABLE", f"cannot reach {self.base_url}: {err}") from None
        if answer.status_code >= 400:
            raise _http_error(answer, parse_response(answer.content, answer.headers.get("Content-Type", "")))
        try:
            return pb.ModelInfo.FromString(answer.content)
        except DecodeError:
            raise GaloreClientError("INTERNAL", f"unreadable model info ({answer.headers.get('Content-Type')})") \
                from None

    def close(self) -> None:
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self) -> "RestClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _http_error(answer: requests.Response, response: pb.ExplainResponse | None) -> GaloreClientError:
    """A non-2xx answer -> GaloreClientError. TorchServe's own 503 (job queue full: "has no worker to serve
    inference request", or no worker at all) and its 500 "Worker died." (the worker holding the call crashed and is
    being restarted) are UNAVAILABLE: the caller may retry. The session's Retry has already retried the 503s; a
    500 it cannot tell apart from a real fault without reading the body, so "Worker died." is not retried here."""
    status = response.status if response is not None else pb.Status()
    worker_lost = answer.status_code == 500 and "Worker died" in answer.text  # TorchServe restarts the worker
    code = status.code or ("UNAVAILABLE" if answer.status_code == 503 or worker_lost else f"HTTP_{answer.status_code}")
    return GaloreClientError(code, status.message or answer.text[:500], status.field, http_status=answer.status_code)


def parse_response(body: bytes, content_type: str) -> pb.ExplainResponse | None:
    """An ExplainResponse in JSON or protobuf, or None when the body is neither (e.g. TorchServe's own errors)."""
    response = pb.ExplainResponse()
    try:
        if content_type.split(";")[0].strip() == PROTOBUF:
            response.ParseFromString(body)
        else:
            json_format.Parse(body.decode("utf-8"), response, ignore_unknown_fields=False)
    except (DecodeError, json_format.ParseError, UnicodeDecodeError):
        return None
    return response


# ---- one typed API over either transport (issue 5) ------------------------------------------------------------

_SCHEMES = {"grpc": ("grpc", False), "grpcs": ("grpc", True), "http": ("rest", False), "https": ("rest", True)}


def parse_server(url: str) -> tuple[str, bool, str]:
    """'grpc://H:P' | 'grpcs://H:P' | 'http(s)://H:P[/v1]' | 'H:P' (gRPC) -> (transport 'grpc'|'rest', tls, address).

    ``address`` is 'H:P' for gRPC and the base URL for REST ('/v1': the KServe host's v1 routes). Raises ValueError
    naming the bad part.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "grpc", url
    if scheme not in _SCHEMES:
        raise ValueError(f"server: unknown scheme {scheme!r} in {url!r}; use grpc://, grpcs://, http:// or https://")
    rest = rest.rstrip("/")
    suffix = KSERVE_V1 if _SCHEMES[scheme][0] == "rest" and rest.endswith(KSERVE_V1) else ""
    host, colon, port = rest.removesuffix(suffix).rpartition(":")
    if not colon or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"server: expected {scheme}://HOST:PORT, got {url!r}")
    transport, tls = _SCHEMES[scheme]
    return transport, tls, (f"{host}:{port}" if transport == "grpc" else f"{scheme}://{host}:{port}{suffix}")


class GaloreClient:
    """``Explain`` and model info over gRPC (the gateway) or REST (TorchServe) with one API and typed results.

        with GaloreClient("grpc://127.0.0.1:50051") as client:
            [result] = client.explain([open("cat.jpg", "rb").read()], ExplainSettings(dims=(2, 3)))
        result.insecurities[0].labels, result.insecurities[0].region.mask.shape   # ('tabby', 'tiger cat'), (H0, W0)

    Calls that fail with UNAVAILABLE (server down, restarting or overloaded; HTTP 503) are retried up to ``retries``
    times (0-4), the n-th after about ``backoff_s`` * 2 ** (n - 1) seconds (at most ``max_backoff_s``), jittered, or
    after the server's own hint (``grpc-retry-pushback-ms``, ``Retry-After``); on gRPC a retry budget stops retrying
    while most calls fail (``galore_client.retry``). Explain is side-effect free, so retrying is safe. Every
    request-level failure raises ``GaloreClientError``; one image's failure is its ``Explanation.error``.
    ``ca_cert`` is a PEM file path; ``token`` is sent as a bearer token.
    """

    def __init__(self, server: str = DEFAULT_SERVER, model: str = DEFAULT_MODEL, timeout_s: float = 60.0,
                 retries: int = 3, backoff_s: float = 0.2, max_backoff_s: float = 5.0, token: str | None = None,
                 ca_cert: str | None = None):
        retry = RetryPolicy(retries=retries, initial_backoff_s=backoff_s, max_backoff_s=max_backoff_s)
        self.transport, tls, address = parse_server(server)
        self.server = server
        self.retry = retry
        self._summary: ModelSummary | None = None
        if self.transport == "grpc":
            pem = None
            if ca_cert:
                try:
                    with open(ca_cert, "rb") as handle:
                        pem = handle.read()
                except OSError as exc:
                    raise ValueError(f"ca_cert: cannot read {ca_cert!r}: {exc.strerror}") from None
            self.raw = GrpcClient(address, timeout_s, tls=tls, ca_cert=pem, token=token, retry=retry)
        else:
            self.raw = RestClient(address, model, timeout_s, ca_cert=ca_cert, token=token, retry=retry)

    def model_info(self) -> ModelSummary:
        """The served model: classes, feature grid, crop size, limits (cached after the first call)."""
        if self._summary is None:
            self._summary = summary_from_proto(self.raw.model_info())
        return self._summary

    def explain_request(self, request: pb.ExplainRequest) -> pb.ExplainResponse:
        """Sends a ready ExplainRequest (with retries); raises GaloreClientError when the request failed."""
        return checked(self.raw.explain_request(request), len(request.images))

    def explain(self, images: Iterable[bytes] | bytes, settings: ExplainSettings | None = None,
                exemplars: Mapping[int | str, bytes] | None = None, ids: Iterable[str] | None = None,
                input_size: int | None = None) -> list[Explanation]:
        """Encoded images -> one typed Explanation per image, in order (failed images carry ``error``).

        ``exemplars`` maps a counter class (as written in ``settings.counter_classes``) to its encoded exemplar.
        ``input_size`` (the model's crop side: where heatmaps lie, ``Explanation.crop_box``) defaults to the served
        model's, asked once per client; labels missing from the answer come from the model info too.
        """
        settings = settings or ExplainSettings()
        unknown = [key for key in (exemplars or {}) if key not in settings.counter_classes]
        if unknown:
            raise ValueError(f"exemplars: {unknown} are not counter classes of the settings")
        request = build_request(images, settings_to_proto(settings, exemplars), ids)
        response = self.explain_request(request)
        summary = self.model_info() if input_size is None or self._summary is not None else None
        input_size = summary.input_size if input_size is None else input_size
        labels = summary.labels if summary is not None else ()
        return [typed_explanation(item, labels, input_size) for item in response.images]

    def close(self) -> None:
        self.raw.close()

    def __enter__(self) -> "GaloreClient":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def checked(response: pb.ExplainResponse, images: int) -> pb.ExplainResponse:
    """The response, or GaloreClientError when the request failed or the answer lacks images."""
    status = response.status
    if status.code not in ("", "OK"):
        raise GaloreClientError(status.code, status.message, status.field, http_status=status.http_status or None)
    if len(response.images) != images:
        raise GaloreClientError("INTERNAL", f"asked about {images} images, got {len(response.images)} answers")
    return response


def typed_explanation(item: pb.ImageExplanation, labels: tuple[str, ...], input_size: int) -> Explanation:
    """One answer -> Explanation; an answer that breaks the contract fails that image only (code INTERNAL)."""
    try:
        return explanation_from_proto(item, labels, input_size)
    except WireFormatError as exc:
        return Explanation(error=ImageFailure("INTERNAL", f"malformed answer from the service: {exc}"))
