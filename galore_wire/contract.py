"""The wire's shared names: default addresses and ports, the calls and their keys, the Open Inference Protocol
layout, message and id limits, and how the engine's enums are spelled in the galore.v1 proto. Stdlib and the
engine's terms only, so client, gateway, hosts and CLI import these without torch or grpc; the options and their
defaults (and the default model) live in ``galore.options``, the errors in ``galore.errors``, the status table in
``galore_wire.status``.

The proto enum spelling lives here, not in the service core: the torch-free client (``galore_client.typed``)
needs it as much as the service does, and it is a fact of the wire (the galore.v1 value names), not of the engine.

Example:
    >>> from galore.options import Kind
    >>> proto_value_name(Kind.SELF_AWARE), DEFAULT_SERVER, parse_deadline(b"12.5"), parse_deadline("soon")
    ('EXPLANATION_KIND_SELF_AWARE', 'grpc://127.0.0.1:50051', 12.5, None)
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass

from galore.options import Attribution, ExemplarPolicy, Kind, MaskEncoding, Precision, Score, Target

HOST = "127.0.0.1"  # local deployments listen on loopback only


@dataclass(frozen=True)
class Ports:
    """Loopback ports of one local deployment (``make serve``); the defaults are the service's default ports."""

    grpc: int = 50051  # gateway galore.v1.Explainer
    gateway_metrics: int = 9091
    rest: int = 8080  # TorchServe inference REST
    management: int = 8081
    metrics: int = 8082  # TorchServe Prometheus metrics
    ts_grpc: int = 7070
    ts_grpc_management: int = 7071


DEFAULT_PORTS = Ports()


@dataclass(frozen=True)
class KServePorts:
    """Ports of the KServe host (``python -m galore_kserve``); KServe's defaults."""

    http: int = 8080  # v1 and OIP v2 REST, health, /metrics
    grpc: int = 8081  # OIP v2 gRPC


KSERVE_PORTS = KServePorts()
DEFAULT_GRPC_ADDRESS = f"{HOST}:{DEFAULT_PORTS.grpc}"
DEFAULT_REST_ADDRESS = f"{HOST}:{DEFAULT_PORTS.rest}"
DEFAULT_SERVER = f"grpc://{DEFAULT_GRPC_ADDRESS}"  # the client's and CLI's default server URL
DEFAULT_TIMEOUT_S = 120.0  # per-call deadline of the CLI, the load tester and the gateway's TorchServe call
# Largest gRPC / REST message either way when the archive does not say (its handler.max_request_bytes):
# deploy/torchserve/config.properties max_request_size / max_response_size.
MAX_MESSAGE_BYTES = 100 * 1024 * 1024
MAX_ID_CHARS = 256  # an image's id (galore.v1 Image.id) has at most this many characters

PROTOBUF = "application/x-protobuf"  # a serialized galore.v1 message
JSON = "application/json"  # its proto3 JSON mapping (images base64)

# The key that names the galore.v1 call of a host request (a TorchServe input, a KServe v1 header or OIP v2
# parameter; sent by the gateway and by REST model-info calls); its values are the names of ``Call``.
RPC_KEY = "galore-rpc"
DEADLINE_KEY = "galore-deadline"  # the caller's deadline, Unix seconds (gateway input key or REST header)
# The gateway's trailing metadata on a failed call: the status's field and code name (galore.v1 Status).
FIELD_TRAILER = "galore-field"
CODE_TRAILER = "galore-code"


def parse_deadline(value: object) -> float | None:
    """A ``DEADLINE_KEY`` value (bytes, str or number) -> Unix seconds, or None when absent or unreadable (a
    malformed deadline is ignored: the request is served as if it had none)."""
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("ascii", "replace")
    try:
        seconds = float(value) if value is not None else None
    except (TypeError, ValueError):
        return None
    return seconds if seconds is not None and math.isfinite(seconds) else None


# The Open Inference Protocol (v2) layout of the KServe host (README "Serve", OIP v2): tensor and parameter names.
OIP_IMAGES = "images"  # input, BYTES [N]: encoded images (JSON: base64 strings)
OIP_IMAGE_IDS = "image_ids"  # optional input, BYTES [N]: the images' ids
OIP_OPTIONS = "options"  # optional request parameter: ExplainOptions in proto3 JSON
OIP_RESPONSE = "explain_response"  # output, BYTES [1]: ExplainResponse in proto3 JSON (or protobuf, see below)
# The gateway's call: request parameter RPC_KEY (and DEADLINE_KEY), input OIP_REQUEST = the serialized galore.v1
# request, output OIP_RESPONSE = the serialized galore.v1 answer (ExplainResponse or ModelInfo).
OIP_REQUEST = "galore_request"


class Call(enum.Enum):
    """The galore.v1.Explainer RPCs, by their proto method names."""

    EXPLAIN = "Explain"
    MODEL_INFO = "GetModelInfo"


# engine enum -> (proto enum type name, prefix of its value names); the value names after the prefix are the
# engine members' names, and 0 is always <PREFIX>UNSPECIFIED (the server default).
PROTO_ENUMS: dict[type[enum.Enum], tuple[str, str]] = {
    Kind: ("ExplanationKind", "EXPLANATION_KIND_"),
    Attribution: ("AttributionFunction", "ATTRIBUTION_FUNCTION_"),
    Score: ("ConfidenceScore", "CONFIDENCE_SCORE_"),
    Target: ("AttributionTarget", "ATTRIBUTION_TARGET_"),
    MaskEncoding: ("MaskEncoding", "MASK_ENCODING_"),
    ExemplarPolicy: ("ExemplarPolicy", "EXEMPLAR_POLICY_"),
    Precision: ("BackbonePrecision", "BACKBONE_PRECISION_"),
}


def proto_value_name(member: enum.Enum) -> str:
    """Kind.DELIBERATIVE -> 'EXPLANATION_KIND_DELIBERATIVE'."""
    return PROTO_ENUMS[type(member)][1] + member.name


def proto_number(file_descriptor, member: enum.Enum) -> int:
    """Engine enum member -> its number in the proto (``file_descriptor``: the generated module's DESCRIPTOR)."""
    type_name = PROTO_ENUMS[type(member)][0]
    return file_descriptor.enum_types_by_name[type_name].values_by_name[proto_value_name(member)].number


def engine_member(file_descriptor, enum_type: type[enum.Enum], number: int) -> enum.Enum | None:
    """Proto enum number -> engine member; None for 0 (UNSPECIFIED); KeyError naming the number if unknown."""
    type_name, prefix = PROTO_ENUMS[enum_type]
    if number == 0:
        return None
    value = file_descriptor.enum_types_by_name[type_name].values_by_number.get(number)
    if value is None:
        raise KeyError(f"unknown {type_name} value {number}")
    return enum_type[value.name.removeprefix(prefix)]
