"""The one table that maps an error's code name (``galore.errors.GaloreError.code``) to wire codes, and the one
wording of a refused call. Stdlib only.

Example:
    >>> numbers("INVALID_ARGUMENT"), grpc_code_name(14), numbers("NO_SUCH_CODE")
    ((3, 400), 'UNAVAILABLE', (2, 500))
"""
from __future__ import annotations

# code name -> (gRPC status code number, HTTP status). gRPC numbers follow google.rpc.Code.
STATUS_TABLE: dict[str, tuple[int, int]] = {
    "OK": (0, 200),
    "CANCELLED": (1, 499),
    "UNKNOWN": (2, 500),
    "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504),
    "NOT_FOUND": (5, 404),
    "ALREADY_EXISTS": (6, 409),
    "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 413),
    "FAILED_PRECONDITION": (9, 412),
    "ABORTED": (10, 409),
    "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501),
    "INTERNAL": (13, 500),
    "UNAVAILABLE": (14, 503),
    "DATA_LOSS": (15, 500),
    "UNAUTHENTICATED": (16, 401),
    "UNSUPPORTED_MEDIA_TYPE": (3, 415),  # gRPC has no media types; a wrong one is an invalid argument there
}
# gRPC code number -> its canonical name (the name of grpc.StatusCode's member): a host that speaks gRPC turns a
# status's number into grpc's enum with ``grpc.StatusCode[grpc_code_name(number)]``.
_GRPC_NAMES: dict[int, str] = {}
for _name, (_number, _http) in STATUS_TABLE.items():
    _GRPC_NAMES.setdefault(_number, _name)

RETRY_HINT = "the call may be retried with backoff"


def numbers(code: str) -> tuple[int, int]:
    """(gRPC code number, HTTP status) of code name ``code``; an unknown name is UNKNOWN's."""
    return STATUS_TABLE.get(code, STATUS_TABLE["UNKNOWN"])


def grpc_code_name(number: int) -> str:
    """gRPC code number -> its canonical name ("UNKNOWN" for a number outside google.rpc.Code)."""
    return _GRPC_NAMES.get(number, "UNKNOWN")


def overloaded(detail: str) -> str:
    """The one wording of a shed call: the gateway's in-flight limit, TorchServe's or the KServe host's full queue."""
    return f"the service is overloaded ({detail}); {RETRY_HINT}"
