"""What the load tester sends and how: request building, sample images, loopback check, gRPC and REST senders.

A sender turns one serialized-ready ``ExplainRequest`` into an ``Outcome``: the request-level code name and the
code name of every image (names from galore/errors.py STATUS_TABLE, or "HTTP_<status>" / the gRPC status name
when the transport failed before the service answered).
"""
from __future__ import annotations

import io
import ipaddress
import socket
import threading
from dataclasses import dataclass
from pathlib import Path

import grpc
import requests
from google.protobuf import json_format
from PIL import Image as PILImage

from galore_api.v1 import explainer_pb2, explainer_pb2_grpc

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")  # skimage.data RGB photos shipped in its wheel
KIND_NAMES = ("attributive", "self_aware", "deliberative", "counterfactual")
GRPC_MAX_MESSAGE_BYTES = 256 * 1024 * 1024


class LoadTestError(ValueError):
    """A load-test setting is wrong; the message names the option."""


@dataclass(frozen=True)
class Outcome:
    """Result of one request: ``code`` for the request, ``image_codes`` one per image ("OK" when answered)."""

    code: str
    image_codes: tuple[str, ...]


def check_loopback(host: str, allow_remote: bool) -> None:
    """Raises LoadTestError unless every address ``host`` resolves to is loopback (or ``allow_remote``)."""
    if allow_remote:
        return
    try:
        infos = socket.getaddrinfo(host, None)
    except socket.gaierror as exc:
        raise LoadTestError(f"--target: cannot resolve host {host!r}: {exc}") from exc
    addresses = {info[4][0] for info in infos}
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if remote:
        raise LoadTestError(f"--target: {host!r} resolves to non-loopback {', '.join(remote)}; "
                            "the load tester only loads loopback targets unless --allow-remote is given")


def split_target(target: str) -> tuple[str, int]:
    """'host:port' -> (host, port); '[::1]:50051' works too."""
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LoadTestError(f"--target: expected HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def encode_jpeg(rgb) -> bytes:
    """(H, W, 3) uint8 array -> JPEG bytes (quality 90)."""
    buffer = io.BytesIO()
    PILImage.fromarray(rgb).convert("RGB").save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def sample_images() -> list[bytes]:
    """The bundled sample photos of scikit-image (chelsea, astronaut, coffee, ...) as JPEG bytes."""
    try:
        from skimage import data
    except ImportError as exc:
        raise LoadTestError("--images: no folder given and scikit-image (the sample photos) is not installed; "
                            "pass --images DIR or `pip install scikit-image`") from exc
    photos = []
    for name in SAMPLE_PHOTOS:
        rgb = getattr(data, name)()
        if rgb.ndim == 3 and rgb.shape[2] == 3:
            photos.append(encode_jpeg(rgb))
    return photos


def folder_images(folder: str) -> list[bytes]:
    """Bytes of every image file (by suffix) directly inside ``folder``, in name order."""
    path = Path(folder)
    if not path.is_dir():
        raise LoadTestError(f"--images: {folder!r} is not a directory")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise LoadTestError(f"--images: no {'/'.join(IMAGE_SUFFIXES)} files in {folder!r}")
    return [p.read_bytes() for p in files]


def build_request(images: list[bytes], kinds: tuple[str, ...], dims: tuple[int, ...], top_e: int,
                  counters: tuple[tuple[str, bytes], ...] = ()) -> explainer_pb2.ExplainRequest:
    """ExplainRequest for ``images`` (encoded bytes); kinds () means prediction only.

    counters: (class id as digits or exact label, exemplar bytes or b"") per counter class of the counterfactual.
    """
    options = explainer_pb2.ExplainOptions(prediction_only=not kinds, dims=list(dims), top_e=top_e)
    for kind in kinds:
        options.kinds.append(explainer_pb2.ExplanationKind.Value(f"EXPLANATION_KIND_{kind.upper()}"))
    for ref, exemplar in counters:
        counter = explainer_pb2.CounterClass(class_id=int(ref)) if ref.isdigit() else \
            explainer_pb2.CounterClass(label=ref)
        counter.exemplar = exemplar
        options.counter_classes.append(counter)
    return explainer_pb2.ExplainRequest(
        images=[explainer_pb2.Image(data=data, id=f"load-{i}") for i, data in enumerate(images)], options=options)


def read_counters(classes: tuple[str, ...], exemplar_paths: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """Pairs counter classes with the bytes of their exemplar files (by position; classes beyond get none)."""
    if len(exemplar_paths) > len(classes):
        raise LoadTestError(f"--exemplars: {len(exemplar_paths)} files for {len(classes)} --counter-classes")
    counters = []
    for i, ref in enumerate(classes):
        if i < len(exemplar_paths):
            path = Path(exemplar_paths[i])
            if not path.is_file():
                raise LoadTestError(f"--exemplars: {exemplar_paths[i]!r} is not a file")
            counters.append((ref, path.read_bytes()))
        else:
            counters.append((ref, b""))
    return tuple(counters)


def _image_codes(response: explainer_pb2.ExplainResponse, expected: int) -> tuple[str, ...]:
    codes = tuple(item.status.code or "OK" for item in response.images)
    return codes if len(codes) == expected else codes + ("MISSING_IMAGE",) * (expected - len(codes))


class GrpcSender:
    """Calls galore.v1.Explainer/Explain on the gateway; one channel shared by all threads."""

    transport = "grpc"

    def __init__(self, target: str, timeout_s: float):
        self._channel = grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", GRPC_MAX_MESSAGE_BYTES),
            ("grpc.max_send_message_length", GRPC_MAX_MESSAGE_BYTES)])
        self._stub = explainer_pb2_grpc.ExplainerStub(self._channel)
        self._timeout_s = timeout_s

    def architecture(self) -> str:
        """The served model's architecture from GetModelInfo (e.g. "resnet50"); "" when the server cannot tell.

        An unreachable server is not an error here: it shows in the run's error counts.
        """
        try:
            info = self._stub.GetModelInfo(explainer_pb2.GetModelInfoRequest(), timeout=self._timeout_s)
        except grpc.RpcError:
            return ""
        return info.architecture or info.name

    def send(self, request: explainer_pb2.ExplainRequest) -> Outcome:
        try:
            response = self._stub.Explain(request, timeout=self._timeout_s)
        except grpc.RpcError as exc:
            code = exc.code().name if exc.code() is not None else "UNKNOWN"
            return Outcome(code, (code,) * len(request.images))
        if response.status.code not in ("", "OK"):
            return Outcome(response.status.code, (response.status.code,) * len(request.images))
        return Outcome("OK", _image_codes(response, len(request.images)))

    def close(self) -> None:
        self._channel.close()


class RestSender:
    """POSTs the proto3-JSON ExplainRequest to TorchServe's /predictions/<model>; one HTTP session per thread."""

    transport = "rest"

    def __init__(self, target: str, model: str, timeout_s: float):
        self._url = f"http://{target}/predictions/{model}"
        self._timeout_s = timeout_s
        self._local = threading.local()

    def architecture(self) -> str:
        """REST cannot ask; the caller falls back to --arch or the model name."""
        return ""

    def _session(self) -> requests.Session:
        if not hasattr(self._local, "session"):
            self._local.session = requests.Session()
        return self._local.session

    def send(self, request: explainer_pb2.ExplainRequest) -> Outcome:
        body = json_format.MessageToJson(request, indent=None)
        count = len(request.images)
        try:
            reply = self._session().post(self._url, data=body, timeout=self._timeout_s,
                                         headers={"Content-Type": "application/json"})
        except requests.Timeout:
            return Outcome("DEADLINE_EXCEEDED", ("DEADLINE_EXCEEDED",) * count)
        except requests.ConnectionError:
            return Outcome("UNAVAILABLE", ("UNAVAILABLE",) * count)
        try:
            response = json_format.Parse(reply.text, explainer_pb2.ExplainResponse(), ignore_unknown_fields=True)
        except json_format.ParseError:  # not an ExplainResponse: TorchServe's own error body, or garbage
            code = "BAD_RESPONSE" if reply.status_code == 200 else f"HTTP_{reply.status_code}"
            return Outcome(code, (code,) * count)
        if reply.status_code != 200 or response.status.code not in ("", "OK"):
            code = response.status.code or f"HTTP_{reply.status_code}"
            return Outcome(code, (code,) * count)
        return Outcome("OK", _image_codes(response, count))

    def close(self) -> None:
        pass
