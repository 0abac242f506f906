"""In-process explanations (``galore explain --local``): the service core itself, no server.

A call goes exactly the way a served one does, minus the network: ``ExplainSettings`` -> the galore.v1 request
(``typed.settings_to_proto``) -> a typed call to the service core's ``ExplainService.answer`` (decode, limits,
``convert.to_options``, the engine, ``convert.image_explanation``) -> response bytes ->
``typed.explanation_from_proto``. So local and served
results are built by the same converters, and the CLI and the report treat them alike. Imports torch and the
engine only when used.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from galore.options import DEFAULT_MODEL
from galore_api.v1 import explainer_pb2 as pb
from galore_client.client import build_request, checked, typed_explanation
from galore_client.results import Explanation
from galore_client.settings import ExplainSettings, ModelSummary
from galore_client.typed import settings_to_proto, summary_from_proto
from galore_wire.contract import MAX_ID_CHARS, Call

from .images import ImageFile


class LocalBackend:
    """The service core's ``ExplainService`` in this process, with the client's API: ``model_info``, ``explain``,
    ``close``.

    ``engine`` defaults to ``Engine.default(device)`` (EfficientNet-Lite0, weights from the installed package).
    Request-level problems raise ``GaloreClientError`` with the service's code; image-level ones become that
    image's ``Explanation.error``, as from a server.
    """

    def __init__(self, engine=None, device: str | None = None, name: str = DEFAULT_MODEL):
        from galore_service.config import HandlerConfig
        from galore_service.service import ExplainService

        if engine is None:
            from galore import Engine

            engine = Engine.default(device=device)
        self.engine = engine
        self.service = ExplainService(engine, HandlerConfig(), name)
        self._summary: ModelSummary | None = None

    def model_info(self) -> ModelSummary:
        if self._summary is None:
            self._summary = summary_from_proto(pb.ModelInfo.FromString(self._call(Call.MODEL_INFO, b"")))
        return self._summary

    def explain(self, images: Sequence[ImageFile], settings: ExplainSettings,
                exemplars: Mapping[int | str, ImageFile] | None = None) -> list[Explanation]:
        """One Explanation per image, in order; ``exemplars`` maps a counter class (as in
        ``settings.counter_classes``) -> its exemplar image, shared by every image."""
        options = settings_to_proto(settings, {key: ex.data for key, ex in (exemplars or {}).items()})
        request = build_request([img.data for img in images], options, [img.name[-MAX_ID_CHARS:] for img in images])
        response = pb.ExplainResponse.FromString(self._call(Call.EXPLAIN, request.SerializeToString()))
        checked(response, len(images))
        summary = self.model_info()
        return [typed_explanation(item, summary.labels, summary.input_size) for item in response.images]

    def _call(self, call: Call, body: bytes) -> bytes:
        from galore_service.calls import Request

        [answer] = self.service.answer([Request(rpc=call, body=body)])
        return answer.body

    def close(self) -> None:
        pass
