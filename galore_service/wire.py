"""Wire formats of one call: which galore.v1 call, which encoding in and out (a ``calls.Request`` -> its message).

  * from the gateway: ``rpc`` = "Explain" | "GetModelInfo", ``body`` = the serialized galore.v1 request;
  * REST: ``body`` with content type ``application/x-protobuf`` (serialized ExplainRequest), ``application/json``
    (its proto3 JSON mapping, images base64) or an image type / ``application/octet-stream`` / none (raw image,
    all explanation kinds with default options).
The answer uses the Accept type when it names a supported one, else the request's own format (JSON for raw images).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message

from galore.errors import InvalidArgument, UnsupportedMediaType
from galore_api.v1 import explainer_pb2 as pb
from galore_wire.contract import JSON, PROTOBUF, RPC_KEY, Call

from .calls import Request


@dataclass(frozen=True)
class WireRequest:
    """One parsed call: the rpc, its message (None for MODEL_INFO) and the answer's media type."""

    call: Call
    message: pb.ExplainRequest | None
    response_type: str


def media_type(value: object) -> str:
    """A Content-Type or Accept item without its parameters, in lower case ("Application/JSON; q=1" ->
    "application/json")."""
    return str(value or "").split(";", 1)[0].strip().lower()


def _accepted(accept: str, default: str) -> str:
    """The first supported type in the Accept value, else ``default``."""
    for part in str(accept or "").split(","):
        media = media_type(part)
        if media in (PROTOBUF, JSON):
            return media
    return default


def _body(request: Request) -> object:
    if request.body is None:
        raise InvalidArgument("body", "request has no body")
    return request.body


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


def read_request(request: Request) -> WireRequest:
    """Classifies and parses one call. Raises InvalidArgument / UnsupportedMediaType naming the field."""
    rpc = request.rpc_name
    if rpc is not None:
        if rpc == Call.MODEL_INFO.value:
            return WireRequest(Call.MODEL_INFO, None, PROTOBUF)
        if rpc == Call.EXPLAIN.value:
            return WireRequest(Call.EXPLAIN, parse_explain_proto(_body(request)), PROTOBUF)
        raise InvalidArgument(RPC_KEY, f"unknown call {rpc!r}; expected {' or '.join(c.value for c in Call)}")
    content_type = media_type(request.content_type)
    body = _body(request)
    if content_type == PROTOBUF:
        return WireRequest(Call.EXPLAIN, parse_explain_proto(body), _accepted(request.accept, PROTOBUF))
    if content_type == JSON:
        return WireRequest(Call.EXPLAIN, parse_explain_json(body), _accepted(request.accept, JSON))
    if content_type in ("", "application/octet-stream") or content_type.startswith("image/"):
        return WireRequest(Call.EXPLAIN, raw_image_request(body), _accepted(request.accept, JSON))
    raise UnsupportedMediaType(
        "Content-Type", f"unsupported {content_type!r}; send {PROTOBUF}, {JSON} or an image (image/*)")


def response_type_for_error(request: Request) -> str:
    """Media type for an answer when the call itself could not be parsed: Accept, else the request's type."""
    if request.rpc is not None:
        return PROTOBUF
    sent = PROTOBUF if media_type(request.content_type) == PROTOBUF else JSON
    return _accepted(request.accept, sent)


def encode(message: Message, media_type: str) -> bytes:
    """Serializes in the answer's media type (proto3 JSON keeps camelCase names and base64 bytes)."""
    if media_type == PROTOBUF:
        return message.SerializeToString()
    return json_format.MessageToJson(message, indent=None).encode("utf-8")
