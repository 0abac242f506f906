"""Wire formats of one TorchServe request: which call, which encoding in and out.

Inputs per request (one dict of TorchServe's batch):
  * from the gateway: ``{"galore-rpc": b"Explain" | b"GetModelInfo", "body": serialized protobuf}``;
  * REST: ``body`` with Content-Type ``application/x-protobuf`` (serialized ExplainRequest), ``application/json``
    (its proto3 JSON mapping, images base64) or an image type / ``application/octet-stream`` / none (raw image,
    all explanation kinds with default options).
The answer uses the Accept header when it names a supported type, else the request's own format (JSON for raw images).
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from galore.contract import DEADLINE_KEY, RPC_KEY, Call
from galore.errors import InvalidArgument, UnsupportedMediaType
from galore_api.v1 import explainer_pb2 as pb

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Set by a host on a request whose route asks for the prediction only (KServe v1 ``:predict``): the request's
# kinds are dropped and ``prediction_only`` is set, whatever the body says.
PREDICTION_ONLY_KEY = "galore-prediction-only"


@dataclass(frozen=True)
class WireRequest:
    """One parsed TorchServe request: the call, its message (None for MODEL_INFO) and the answer's media type."""

    call: Call
    message: pb.ExplainRequest | None
    response_type: str


def _headers(context, idx: int) -> dict[str, object]:
    try:
        return {str(k).lower(): v for k, v in (context.get_all_request_header(idx) or {}).items()}
    except (AttributeError, IndexError, TypeError):
        return {}


def _media_type(value: object) -> str:
    return str(value or "").split(";", 1)[0].strip().lower()


def _accepted(headers: dict[str, object], default: str) -> str:
    """The first supported type in the Accept header, else ``default``."""
    for part in str(headers.get("accept") or "").split(","):
        media = _media_type(part)
        if media in (PROTOBUF, JSON):
            return media
    return default


def _body(row: dict) -> object:
    for key in ("body", "data"):
        if key in row:
            return row[key]
    raise InvalidArgument("body", "request has no body")


def parse_explain_json(body: object) -> pb.ExplainRequest:
    """Proto3 JSON (bytes, str or an already decoded dict) -> ExplainRequest; errors name the field."""
    message = pb.ExplainRequest()
    try:
        if isinstance(body, (bytes, bytearray)):
            body = bytes(body).decode("utf-8")
        if isinstance(body, str):
            json_format.Parse(body, message)
        else:
            json_format.ParseDict(body, message)
    except (json_format.ParseError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidArgument(json_error_field(str(exc)), f"malformed JSON ExplainRequest: {exc}") from None
    return message


def json_error_field(message: str) -> str:
    """The JSON field path a protobuf ParseError names (e.g. "options.score"), else "body"."""
    located = re.search(r" at ExplainRequest\.([\w.\[\]]+?)\.*$", message.strip())
    if located:
        return located.group(1)
    chain = re.findall(r"Failed to parse (\w+) field", message)
    return ".".join(chain) if chain else "body"


def parse_explain_proto(body: object) -> pb.ExplainRequest:
    if not isinstance(body, (bytes, bytearray)):
        raise InvalidArgument("body", "expected serialized protobuf bytes")
    message = pb.ExplainRequest()
    try:
        message.ParseFromString(bytes(body))
    except DecodeError as exc:
        raise InvalidArgument("body", f"malformed protobuf ExplainRequest: {exc}") from None
    return message


def raw_image_request(body: object) -> pb.ExplainRequest:
    if not isinstance(body, (bytes, bytearray)):
        raise UnsupportedMediaType("Content-Type", "a raw image body must be sent as bytes")
    return pb.ExplainRequest(images=[pb.Image(data=bytes(body))])


def read_request(row: dict, context, idx: int) -> WireRequest:
    """Classifies and parses one request. Raises InvalidArgument / UnsupportedMediaType naming the field."""
    if RPC_KEY in row:
        rpc = bytes(row[RPC_KEY]).decode("utf-8", "replace")
        if rpc == Call.MODEL_INFO.value:
            return WireRequest(Call.MODEL_INFO, None, PROTOBUF)
        if rpc == Call.EXPLAIN.value:
            return WireRequest(Call.EXPLAIN, parse_explain_proto(_body(row)), PROTOBUF)
        raise InvalidArgument(RPC_KEY, f"unknown call {rpc!r}; expected {' or '.join(c.value for c in Call)}")
    headers = _headers(context, idx)
    body_headers = headers.get("body") if isinstance(headers.get("body"), dict) else {}
    content_type = _media_type(headers.get("content-type") or body_headers.get("content-type"))
    body = _body(row)
    if content_type == PROTOBUF:
        return WireRequest(Call.EXPLAIN, parse_explain_proto(body), _accepted(headers, PROTOBUF))
    if content_type == JSON:
        return WireRequest(Call.EXPLAIN, parse_explain_json(body), _accepted(headers, JSON))
    if content_type in ("", "application/octet-stream") or content_type.startswith("image/"):
        return WireRequest(Call.EXPLAIN, raw_image_request(body), _accepted(headers, JSON))
    raise UnsupportedMediaType(
        "Content-Type", f"unsupported {content_type!r}; send {PROTOBUF}, {JSON} or an image (image/*)")


def deadline(row: dict, context, idx: int) -> float | None:
    """The request's deadline in Unix seconds (wall clock), or None when it has none or it is unreadable.

    The gateway passes it as an input next to ``galore-rpc``; a REST caller may send the ``galore-deadline``
    header. A malformed value is ignored (the request is served as if it had no deadline)."""
    value = row.get(DEADLINE_KEY)
    if value is None:
        value = _headers(context, idx).get(DEADLINE_KEY)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


def response_type_for_error(context, idx: int, row: dict) -> str:
    """Media type for an answer when the request itself could not be parsed: Accept, else the request's type."""
    if RPC_KEY in row:
        return PROTOBUF
    headers = _headers(context, idx)
    sent = PROTOBUF if _media_type(headers.get("content-type")) == PROTOBUF else JSON
    return _accepted(headers, sent)


def encode(message: Message, media_type: str) -> bytes:
    """Serializes in the answer's media type (proto3 JSON keeps camelCase names and base64 bytes)."""
    if media_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode("utf-8")
