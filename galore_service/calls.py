"""The service core's typed calls and answers: what every host hands to ``ExplainService.answer`` and gets back.

A host (the TorchServe handler, the KServe host, ``--local``) maps its own request shape to a ``Request`` and
sends the ``Answer`` as its own response; the service core knows no host's rows, contexts or headers.

Example:
    >>> from galore_wire.contract import Call
    >>> Request(rpc=Call.MODEL_INFO).rpc_name, Request(body=b"...", content_type="image/jpeg").rpc_name
    ('GetModelInfo', None)
"""
from __future__ import annotations

from dataclasses import dataclass

from galore_wire.contract import Call


@dataclass(frozen=True)
class Request:
    """One call to the service.

    ``rpc``: the galore.v1 call the gateway names (``Call``, or its name as the host received it: an unknown name is
    answered INVALID_ARGUMENT naming the rpc key); with an rpc the body is the serialized galore.v1 request and the
    answer is serialized protobuf. ``None``: a REST call, read by ``content_type`` (protobuf, proto3 JSON as bytes,
    str or a decoded dict, or an image / octet-stream / none: a raw image with default options) and answered in
    ``accept`` when it names a supported type, else in the request's own format (JSON for raw images).
    ``body``: None when the host received none. ``deadline``: the caller's deadline, Unix seconds (wall clock), None
    for none. ``request_id``: the host's id of the call, for logs. ``prediction_only``: the route asks for the
    prediction only (KServe v1 ``:predict``): the request's kinds are dropped, whatever the body says.
    """

    rpc: Call | str | None = None
    body: bytes | str | dict | None = None
    content_type: str = ""
    accept: str = ""
    deadline: float | None = None
    request_id: str = ""
    prediction_only: bool = False

    @property
    def rpc_name(self) -> str | None:
        return self.rpc.value if isinstance(self.rpc, Call) else self.rpc


@dataclass(frozen=True)
class Answer:
    """The answer to one Request: bytes, media type, HTTP status and status code name (``phrase``);
    ``retry_after``: the ``Retry-After`` seconds of a refused request (galore_wire.backpressure), "" for none."""

    body: bytes
    media_type: str
    http_status: int
    phrase: str
    retry_after: str = ""
