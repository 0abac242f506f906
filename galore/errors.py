"""One error hierarchy for the whole service, and the single table that maps it to wire codes.

The core raises these; the TorchServe handler turns them into a per-image status, and the gateway and REST
layer read the code *name* from that status, so no transport keeps its own mapping.

Example:
    >>> err = InvalidArgument("options.top_e", "must be >= dim (V), got top_e=2, dim=3")
    >>> err.code, err.http_status, str(err)
    ('INVALID_ARGUMENT', 400, 'options.top_e: must be >= dim (V), got top_e=2, dim=3')
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


RETRY_HINT = "the call may be retried with backoff"


def overloaded(detail: str) -> str:
    """The one wording of a shed call: the gateway's in-flight limit, TorchServe's or the KServe host's full queue."""
    return f"the service is overloaded ({detail}); {RETRY_HINT}"


class GaloreError(Exception):
    """Base of every error the project raises on purpose. ``field`` names the offending request field."""

    code = "INTERNAL"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    @property
    def grpc_code(self) -> int:
        return STATUS_TABLE.get(self.code, STATUS_TABLE["UNKNOWN"])[0]

    @property
    def http_status(self) -> int:
        return STATUS_TABLE.get(self.code, STATUS_TABLE["UNKNOWN"])[1]


class InvalidArgument(GaloreError, ValueError):
    """The request itself is wrong: bad shape or dtype, unknown class, V > E, bad threshold, bad enum."""

    code = "INVALID_ARGUMENT"


class UnsupportedMediaType(GaloreError):
    """The request's content type is not one the service reads."""

    code = "UNSUPPORTED_MEDIA_TYPE"


class FailedPrecondition(GaloreError):
    """The request is well formed but the model cannot serve it (easiness without a hardness predictor)."""

    code = "FAILED_PRECONDITION"


class ResourceExhausted(GaloreError):
    """Too many pixels, bytes, images or targets for the configured limits."""

    code = "RESOURCE_EXHAUSTED"


class Unavailable(GaloreError):
    """The service cannot take the request now (its queue is full); the caller may retry with backoff."""

    code = "UNAVAILABLE"


class DeadlineExceeded(GaloreError):
    """The caller's deadline passed before the work started; the request is dropped, not computed."""

    code = "DEADLINE_EXCEEDED"


class ModelError(GaloreError):
    """The model cannot be split or loaded as configured (bad layer name, unsupported architecture)."""

    code = "FAILED_PRECONDITION"


class DeviceUnusable(Exception):
    """The accelerator's context is broken: a sticky CUDA error (an illegal memory access, a device-side assert)
    makes every later call on it fail too. Not a status of one image, and never answered: the worker process must
    exit so that its supervisor (TorchServe, the KServe pod's restart policy) starts a fresh one."""
