"""One error hierarchy for the whole service. Each error has a code *name* (``code``, e.g. "INVALID_ARGUMENT");
the wire's numbers for it (gRPC code, HTTP status) live in the one table ``galore_wire.status.STATUS_TABLE``,
outside the engine package. The service core turns these into a per-image or per-call status.

Example:
    >>> err = InvalidArgument("options.top_e", "must be >= dim (V), got top_e=2, dim=3")
    >>> err.code, str(err)
    ('INVALID_ARGUMENT', 'options.top_e: must be >= dim (V), got top_e=2, dim=3')
"""
from __future__ import annotations


class GaloreError(Exception):
    """Base of every error the project raises on purpose. ``field`` names the offending request field."""

    code = "INTERNAL"

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message

    def __reduce__(self):  # pickles whole (a worker process raises it, the caller re-raises it)
        return self.__class__, (self.field, self.message)


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
