"""The client's one exception type: the status code name, the server's message and the offending field.

Raised for request-level failures whatever the transport (gRPC, REST, in-process engine) and for a server that
cannot be reached (code UNAVAILABLE) or answers too late (DEADLINE_EXCEEDED). A failure of one image in a batch
is not raised: it is that image's ``Explanation.error``. It is part of the service's one error hierarchy
(``galore.errors``), and its numbers come from the one table, ``galore_wire.status.STATUS_TABLE`` (torch-free).

Example:
    >>> err = GaloreClientError("INVALID_ARGUMENT", "V=6 exceeds top_e (E)=5", field="options.dims")
    >>> str(err), err.grpc_code, err.http_status
    ('INVALID_ARGUMENT: options.dims: V=6 exceeds top_e (E)=5', 3, 400)
"""
from __future__ import annotations

from galore.errors import GaloreError
from galore_wire.status import numbers


class GaloreClientError(GaloreError):
    """A failed call. ``code``: status code name (e.g. "UNAVAILABLE"); ``message``: the server's words;
    ``field``: dotted request field it concerns, or ""; ``http_status``: the HTTP status when known."""

    def __init__(self, code: str, message: str, field: str = "", http_status: int | None = None):
        super().__init__(field, message)
        where = f"{field}: " if field and not message.startswith(field) else ""
        self.args = (f"{code}: {where}{message}",)
        self.code = code
        self._http_status = http_status

    def __reduce__(self):
        return self.__class__, (self.code, self.message, self.field, self._http_status)

    @property
    def grpc_code(self) -> int:
        return numbers(self.code)[0]

    @property
    def http_status(self) -> int:
        return self._http_status or numbers(self.code)[1]

    @property
    def retryable(self) -> bool:
        return self.code == "UNAVAILABLE"
