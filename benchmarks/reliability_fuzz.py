"""Fuzzing through the real service: hypothesis strategies for hostile requests, senders for both transports and
the pass criteria. Used by tests/reliability (a few hundred cases) and benchmarks/reliability.py (>= 10,000).

Cases are generated first (hypothesis, seeded: the same seed gives the same cases) and sent afterwards, several
at a time, so generation never waits on the service. Each answer is judged by ``judge``:
  * no HTTP 5xx and no INTERNAL or UNKNOWN (for the request or for any image);
  * every rejection names a field (gRPC trailer ``galore-field``, REST ``status.field``, per-image status.field).
DEADLINE_EXCEEDED and UNAVAILABLE are load, not verdicts on the input; they are counted apart.
"""
from __future__ import annotations

import io
import json
import math
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import grpc
import numpy as np
import requests
from google.protobuf import json_format
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from PIL import Image

from galore_api.v1 import explainer_pb2 as pb
from galore_wire.contract import FIELD_TRAILER

EXPLAIN_METHOD = "/galore.v1.Explainer/Explain"
PROTOBUF, JSON = "application/x-protobuf", "application/json"
# Formats Pillow both writes and reads, so a valid file of each can be made and then mutated.
FORMATS = ("PNG", "JPEG", "GIF", "BMP", "TIFF", "WEBP", "PPM", "ICO", "TGA", "PCX", "SGI", "JPEG2000", "QOI", "IM")
INT32_MIN, INT32_MAX = -2 ** 31, 2 ** 31 - 1
LOAD_CODES = {"DEADLINE_EXCEEDED", "UNAVAILABLE"}
BAD_CODES = {"INTERNAL", "UNKNOWN"}


@dataclass(frozen=True)
class Case:
    """One request: ``transport`` "grpc" (raw bytes to the gateway) or "rest" (POST /predictions/<model>)."""

    transport: str
    kind: str  # what was generated, e.g. "image/PNG/truncated", "options", "random-bytes", "json-wrong-type"
    body: bytes
    content_type: str | None = None  # REST only; None sends no Content-Type header


@dataclass(frozen=True)
class Verdict:
    case: Case
    code: str  # "OK", a gRPC code name, or for REST the galore code name / "HTTP_<status>"
    problem: str | None = None  # why the answer breaks a pass criterion; None: it passed


# ---- strategies -------------------------------------------------------------------------------------------------

def _encode(array: np.ndarray, fmt: str) -> bytes:
    """``array`` in ``fmt``; a mode the format cannot store is converted to RGB first."""
    image = Image.fromarray(array)
    for candidate in (image, image.convert("RGB")):
        buffer = io.BytesIO()
        try:
            candidate.save(buffer, fmt)
            return buffer.getvalue()
        except (OSError, ValueError, KeyError):
            continue
    raise ValueError(f"Pillow cannot write a {array.shape} image as {fmt}")


@st.composite
def image_bytes(draw, max_side: int = 40) -> tuple[str, bytes]:
    """(kind, bytes): a small image in one of FORMATS, then maybe truncated, byte-flipped, or replaced by noise."""
    height = draw(st.integers(1, max_side))
    width = draw(st.integers(1, max_side))
    channels = draw(st.sampled_from([0, 3, 4]))
    seed = draw(st.integers(0, 2 ** 32 - 1))
    rng = np.random.default_rng(seed)
    shape = (height, width) if channels == 0 else (height, width, channels)
    fmt = draw(st.sampled_from(FORMATS))
    data = _encode(rng.integers(0, 256, shape, dtype=np.uint8), fmt)
    mutation = draw(st.sampled_from(["none", "truncate", "flip", "flip", "noise", "empty"]))
    if mutation == "truncate" and len(data) > 1:
        data = data[:draw(st.integers(0, len(data) - 1))]
    elif mutation == "flip":
        mutable = bytearray(data)
        for _ in range(draw(st.integers(1, 8))):
            mutable[draw(st.integers(0, len(mutable) - 1))] = draw(st.integers(0, 255))
        data = bytes(mutable)
    elif mutation == "noise":
        data = draw(st.binary(min_size=1, max_size=512))
    elif mutation == "empty":
        data = b""
    return f"image/{fmt}/{mutation}/{height}x{width}", data


_EXTREME_INTS = st.sampled_from([INT32_MIN, -1, 0, 1, 2, 3, 4, 5, 17, 18, 19, 999, 1000, 1001, INT32_MAX])
_ENUM = st.one_of(st.integers(0, 4), st.integers(INT32_MIN, INT32_MAX))  # known values and unknown ones
_FLOATS = st.one_of(st.sampled_from([math.nan, math.inf, -math.inf, 0.0, -0.0, 1.0, -1.0, 1e-45, 3.4e38]),
                    st.floats(-2, 2, width=32))


@st.composite
def options(draw) -> pb.ExplainOptions:
    """Random ExplainOptions: unknown enum values, NaN/inf thresholds, extreme E, V, Q, k, odd counter classes."""
    message = pb.ExplainOptions()
    wild = draw(st.integers(0, 9)) < 4  # else mostly valid options, so the engine runs too

    def pick(sane, hostile):
        return draw(hostile if wild and draw(st.booleans()) else sane)

    message.kinds.extend(pick(st.lists(st.integers(1, 4), max_size=4, unique=True), st.lists(_ENUM, max_size=5)))
    message.prediction_only = draw(st.integers(0, 5)) == 0
    message.attribution = pick(st.integers(0, 4), _ENUM)
    message.score = pick(st.sampled_from([0, 1, 2]), _ENUM)
    message.target = pick(st.integers(0, 2), _ENUM)
    message.top_e = pick(st.integers(0, 6), st.one_of(_EXTREME_INTS, st.integers(-3, 12)))
    message.dims.extend(pick(st.lists(st.integers(2, 3), max_size=2, unique=True),
                             st.lists(st.one_of(_EXTREME_INTS, st.integers(0, 5)), max_size=4)))
    message.max_insecurities = pick(st.integers(0, 5), _EXTREME_INTS)
    message.top_k = pick(st.integers(0, 10), st.one_of(_EXTREME_INTS, st.integers(-2, 1002)))
    message.ig_steps = pick(st.integers(0, 4), st.one_of(
        st.sampled_from([INT32_MIN, -1, 0, 1, 2, 4, 10**6, INT32_MAX]), st.integers(0, 8)))
    message.include_heatmaps = draw(st.booleans())
    message.normalize = draw(st.booleans())
    if draw(st.booleans()):
        message.clip_negative = draw(st.booleans())
    threshold = draw(st.sampled_from(["none", "none", "coverage", "absolute"]))
    if threshold != "none":
        setattr(message.threshold, threshold, pick(st.sampled_from([0.05, 0.1, 0.25, 0.5, 0.9]), _FLOATS))
    classes = st.one_of(
        st.builds(lambda c: pb.CounterClass(class_id=c), st.one_of(_EXTREME_INTS, st.integers(-2, 1002))),
        st.builds(lambda s: pb.CounterClass(label=s),
                  st.one_of(st.sampled_from(["tabby", "tiger cat", "281", "-1", "1000", "", " tabby", "0x1"]),
                            st.text(max_size=12))))
    counters = draw(st.lists(classes, max_size=4 if wild else 1))
    if counters and draw(st.booleans()):
        counters.append(counters[0])  # a duplicate
    for counter in counters:
        if draw(st.integers(0, 4)) == 0:
            counter.exemplar = draw(image_bytes())[1]
    message.counter_classes.extend(counters)
    return message


@st.composite
def explain_request(draw) -> tuple[str, pb.ExplainRequest]:
    images = draw(st.lists(image_bytes(), min_size=0, max_size=3))
    request = pb.ExplainRequest(images=[pb.Image(data=data, id=draw(st.sampled_from(["", "a", "x" * 300])))
                                        for _, data in images])
    if draw(st.booleans()):
        request.options.CopyFrom(draw(options()))
    kinds = "+".join(sorted({kind for kind, _ in images})) or "no-images"
    return kinds, request


_WRONG_VALUES = st.sampled_from(["x", "", 1.5, -1, 2 ** 40, True, None, [], {}, "NaN", [1, "a"], {"a": 1},
                                 "EXPLANATION_KIND_NOPE", math.nan, math.inf])


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, prefix + (i,))


@st.composite
def wrong_json(draw) -> bytes:
    """The proto3 JSON of a valid-looking request with one value of the wrong type (or an unknown key)."""
    _, request = draw(explain_request())
    tree = json_format.MessageToDict(request)
    tree.setdefault("options", {"topE": 5})
    paths = [p for p in _paths(tree) if p]
    if draw(st.integers(0, 5)) == 0:
        parent = draw(st.sampled_from([(), ("options",)]))
        node = tree
        for key in parent:
            node = node[key]
        node[draw(st.sampled_from(["unknownField", "top_e", "kinds ", "images"]))] = draw(_WRONG_VALUES)
    elif paths:
        path = draw(st.sampled_from(paths))
        node = tree
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(_WRONG_VALUES)
    return json.dumps(tree).encode()


@st.composite
def cases(draw) -> Case:
    """One case for either transport."""
    transport = draw(st.sampled_from(["grpc", "rest"]))
    shape = draw(st.sampled_from(["request", "request", "request", "random-bytes", "json-wrong-type", "raw-image"]))
    if shape == "random-bytes":
        body = draw(st.binary(max_size=256))
        content_type = draw(st.sampled_from([PROTOBUF, JSON, "image/png", None, "text/plain"]))
        return Case(transport, shape, body, content_type if transport == "rest" else None)
    if transport == "rest" and shape == "json-wrong-type":
        return Case("rest", shape, draw(wrong_json()), JSON)
    if transport == "rest" and shape == "raw-image":
        kind, data = draw(image_bytes())
        return Case("rest", f"raw/{kind}", data, draw(st.sampled_from(["image/jpeg", "application/octet-stream",
                                                                       None])))
    kind, request = draw(explain_request())
    if transport == "rest" and draw(st.booleans()):
        return Case("rest", f"json/{kind}", json_format.MessageToJson(request).encode(), JSON)
    return Case(transport, f"proto/{kind}", request.SerializeToString(), PROTOBUF if transport == "rest" else None)


def generate(count: int, seed_value: int) -> list[Case]:
    """``count`` cases drawn by hypothesis from ``seed_value`` (same seed, same cases), no shrinking."""
    drawn: list[Case] = []

    @settings(max_examples=count, database=None, deadline=None, phases=[Phase.generate], derandomize=False,
              suppress_health_check=list(HealthCheck))
    @given(cases())
    def collect(case):
        drawn.append(case)

    seed(seed_value)(collect)()
    return drawn[:count]


# ---- sending and judging ----------------------------------------------------------------------------------------

def _judge_images(case: Case, response: pb.ExplainResponse) -> str | None:
    for item in response.images:
        code = item.status.code or "OK"
        if code in BAD_CODES:
            return f"image {item.id}: {code}: {item.status.message}"
        if code != "OK" and not item.status.field:
            return f"image {item.id}: {code} names no field: {item.status.message}"
    return None


def judge_grpc(case: Case, channel: grpc.Channel, timeout_s: float) -> Verdict:
    call = channel.unary_unary(EXPLAIN_METHOD)  # bytes in, bytes out: the body goes as generated
    try:
        answer = call(case.body, timeout=timeout_s)
    except grpc.RpcError as err:
        code = err.code().name
        trailers = dict(err.trailing_metadata() or ())
        if code in BAD_CODES:
            return Verdict(case, code, f"{code}: {err.details()}")
        if code not in LOAD_CODES and not trailers.get(FIELD_TRAILER):
            return Verdict(case, code, f"{code} names no field: {err.details()}")
        return Verdict(case, code)
    return Verdict(case, "OK", _judge_images(case, pb.ExplainResponse.FromString(answer)))


def judge_rest(case: Case, session: requests.Session, url: str, timeout_s: float) -> Verdict:
    headers = {"Accept": JSON}
    if case.content_type:
        headers["Content-Type"] = case.content_type
    try:
        answer = session.post(url, data=case.body, headers=headers, timeout=timeout_s)
    except requests.Timeout:
        return Verdict(case, "DEADLINE_EXCEEDED")
    except requests.ConnectionError as err:
        return Verdict(case, "UNAVAILABLE", f"connection failed: {err}")
    response = pb.ExplainResponse()
    try:
        json_format.Parse(answer.content.decode("utf-8"), response)
    except (json_format.ParseError, UnicodeDecodeError):
        response = None
    code = (response.status.code or "OK") if response is not None else f"HTTP_{answer.status_code}"
    if answer.status_code == 503 and response is None:
        return Verdict(case, "UNAVAILABLE")  # TorchServe's full queue: load, not the input
    if answer.status_code >= 500:
        return Verdict(case, code, f"HTTP {answer.status_code}: {answer.text[:300]}")
    if response is None:
        return Verdict(case, code, f"HTTP {answer.status_code} without an ExplainResponse: {answer.text[:300]}")
    if answer.status_code >= 400:
        if code in BAD_CODES or not response.status.field:
            return Verdict(case, code, f"HTTP {answer.status_code} {code} names no field: {response.status.message}")
        return Verdict(case, code)
    return Verdict(case, code, _judge_images(case, response))


@dataclass
class FuzzReport:
    verdicts: list[Verdict] = field(default_factory=list)

    @property
    def problems(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.problem]

    def codes(self) -> Counter:
        return Counter(f"{v.case.transport} {v.code}" for v in self.verdicts)

    def summary(self) -> str:
        lines = [f"{len(self.verdicts)} cases, {len(self.problems)} failing the criteria"]
        lines += [f"  {key}: {count}" for key, count in sorted(self.codes().items())]
        for verdict in self.problems[:20]:
            lines.append(f"  PROBLEM [{verdict.case.transport} {verdict.case.kind}] {verdict.problem}")
        return "\n".join(lines)


def send_all(cases_: list[Case], grpc_target: str, rest_url: str, concurrency: int = 4,
             timeout_s: float = 60.0) -> FuzzReport:
    """Sends every case (``concurrency`` at a time) and judges each answer."""
    channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_receive_message_length", 256 * 2 ** 20)])
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_connections=concurrency, pool_maxsize=concurrency)
    session.mount("http://", adapter)

    def one(case: Case) -> Verdict:
        if case.transport == "grpc":
            return judge_grpc(case, channel, timeout_s)
        return judge_rest(case, session, rest_url, timeout_s)

    try:
        with ThreadPoolExecutor(concurrency) as pool:
            return FuzzReport(list(pool.map(one, cases_)))
    finally:
        channel.close()
        session.close()
