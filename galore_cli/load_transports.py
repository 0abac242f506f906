"""What the load tester sends and how: request building, sample images, loopback check, and the sender.

The sender runs one ready ``ExplainRequest`` through the client's own transport clients (``GrpcClient`` /
``RestClient`` of ``galore_client.client``, the same stack as ``galore explain`` and ``GaloreClient``) and turns
the answer into an ``Outcome``: the request-level code name and the code name of every image (names from
galore_wire/status.py STATUS_TABLE, or "HTTP_<status>" when TorchServe itself refused before the handler answered).
"""
from __future__ import annotations

import io
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from PIL import Image as PILImage

from galore.pixels import IMAGE_SUFFIXES
from galore_api.v1 import explainer_pb2
from galore_client.client import GrpcClient, RestClient
from galore_client.client import build_request as build_explain_request
from galore_client.errors import GaloreClientError
from galore_client.settings import ExplainSettings
from galore_client.typed import settings_to_proto

SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket")  # skimage.data RGB photos shipped in its wheel
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


def build_request(images: list[bytes], settings: ExplainSettings,
                  exemplars: Mapping[int | str, bytes] | None = None) -> explainer_pb2.ExplainRequest:
    """ExplainRequest for ``images`` (encoded bytes, ids "load-<i>") with ``settings`` and the exemplar bytes of
    counter classes (keyed as in ``settings.counter_classes``)."""
    return build_explain_request(images, settings_to_proto(settings, exemplars),
                                 [f"load-{i}" for i in range(len(images))])


def read_counters(classes: tuple[int | str, ...], exemplar_paths: tuple[str, ...]) -> dict[int | str, bytes]:
    """Counter class -> bytes of its exemplar file, pairing by position (classes beyond the files get none)."""
    if len(exemplar_paths) > len(classes):
        raise LoadTestError(f"--exemplars: {len(exemplar_paths)} files for {len(classes)} --counter-classes")
    exemplars = {}
    for ref, name in zip(classes, exemplar_paths):
        path = Path(name)
        if not path.is_file():
            raise LoadTestError(f"--exemplars: {name!r} is not a file")
        exemplars[ref] = path.read_bytes()
    return exemplars


def _image_codes(response: explainer_pb2.ExplainResponse, expected: int) -> tuple[str, ...]:
    codes = tuple(item.status.code or "OK" for item in response.images)
    return codes if len(codes) == expected else codes + ("MISSING_IMAGE",) * (expected - len(codes))


class Sender:
    """Sends ready requests through one ``GrpcClient`` or ``RestClient`` (shared by all threads)."""

    def __init__(self, client: GrpcClient | RestClient):
        self.client = client
        self.transport = "grpc" if isinstance(client, GrpcClient) else "rest"

    def architecture(self) -> str:
        """The served model's architecture from GetModelInfo (e.g. "resnet50"); "" when the server cannot tell.

        An unreachable server is not an error here: it shows in the run's error counts.
        """
        try:
            info = self.client.model_info()
        except GaloreClientError:
            return ""
        return info.architecture or info.name

    def send(self, request: explainer_pb2.ExplainRequest) -> Outcome:
        count = len(request.images)
        try:
            response = self.client.explain_request(request)
        except GaloreClientError as err:
            return Outcome(err.code, (err.code,) * count)
        if response.status.code not in ("", "OK"):
            return Outcome(response.status.code, (response.status.code,) * count)
        return Outcome("OK", _image_codes(response, count))

    def close(self) -> None:
        self.client.close()


def open_sender(transport: str, target: str, model: str, timeout_s: float) -> Sender:
    """A Sender over gRPC (the gateway at ``target`` HOST:PORT) or REST (TorchServe at ``target``)."""
    if transport == "grpc":
        return Sender(GrpcClient(target, timeout_s, max_message_bytes=GRPC_MAX_MESSAGE_BYTES))
    return Sender(RestClient(f"http://{target}", model, timeout_s))
