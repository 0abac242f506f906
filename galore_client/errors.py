"""The client's one exception type: the status code name, the server's message and the offending field.

Raised for request-level failures whatever the transport (gRPC, REST, in-process engine) and for a server that
cannot be reached (code UNAVAILABLE) or answers too late (DEADLINE_EXCEEDED). A failure of one image in a batch
is not raised: it is that image's ``Explanation.error``.

Example:
    >>> err = GaloreClientError("INVALID_ARGUMENT", "V=6 exceeds top_e (E)=5", field="options.dims")
    >>> str(err), err.grpc_code, err.http_status
    ('INVALID_ARGUMENT: options.dims: V=6 exceeds top_e (E)=5', 3, 400)
"""
from __future__ import annotations

# Same numbers as galore.errors.STATUS_TABLE (the service's table); repeated here so the client needs no torch.
_CODES: dict[str, tuple[int, int]] = {
    "OK": (0, 200), "CANCELLED": (1, 499), "UNKNOWN": (2, 500), "INVALID_ARGUMENT": (3, 400),
    "DEADLINE_EXCEEDED": (4, 504), "NOT_FOUND": (5, 404), "ALREADY_EXISTS": (6, 409), "PERMISSION_DENIED": (7, 403),
    "RESOURCE_EXHAUSTED": (8, 413), "FAILED_PRECONDITION": (9, 412), "ABORTED": (10, 409), "OUT_OF_RANGE": (11, 400),
    "UNIMPLEMENTED": (12, 501), "INTERNAL": (13, 500), "UNAVAILABLE": (14, 503), "DATA_LOSS": (15, 500),
    "UNAUTHENTICATED": (16, 401), "UNSUPPORTED_MEDIA_TYPE": (3, 415),
}


class GaloreClientError(Exception):
    """A failed call. ``code``: status code name (e.g. "UNAVAILABLE"); ``message``: the server's words;
    ``field``: dotted request field it concerns, or ""; ``http_status``: the HTTP status when known."""

    def __init__(self, code: str, message: str, field: str = "", http_status: int | None = None):
        where = f"{field}: " if field and not message.startswith(field) else ""
        super().__init__(f"{code}: {where}{message}")
        self.code = code
        self.message = message
        self.field = field
        self._http_status = http_status

    @property
    def grpc_code(self) -> int:
        return _CODES.get(self.code, (2, 500))[0]

    @property
    def http_status(self) -> int:
        return self._http_status or _CODES.get(self.code, (2, 500))[1]

    @property
    def retryable(self) -> bool:
        return self.code == "UNAVAILABLE"
