"""The service contract's shared names: default model and addresses, the handler's call key, and how the
engine's enums are spelled in the galore.v1 proto. Stdlib only, so client, gateway, handler and CLI import these
without torch or grpc; the options and their defaults live in ``galore.options``, the errors in ``galore.errors``.

Example:
    >>> from galore.options import Kind
    >>> proto_value_name(Kind.SELF_AWARE), DEFAULT_SERVER
    ('EXPLANATION_KIND_SELF_AWARE', 'grpc://127.0.0.1:50051')
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

from .options import Attribution, ExemplarPolicy, Kind, MaskEncoding, Precision, Score, Target

DEFAULT_MODEL = "efficientnet_lite0"  # the model `make archive` builds and every tool targets by default
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

# The field of a TorchServe request that names the galore.v1 call (sent by the gateway and by REST model-info
# calls, read by handlers/wire.py); its values are the names of ``Call``.
RPC_KEY = "galore-rpc"
DEADLINE_KEY = "galore-deadline"  # the caller's deadline, Unix seconds (gateway input key or REST header)


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
