"""GALORE (Wang & Vasconcelos, TPAMI 2023): predictions plus attributive, self-aware, deliberative and
counterfactual explanations from one batched forward pass. Pure torch: no serving imports here.

The engine's terms (``galore.options``, ``galore.errors``) import neither torch nor grpc, so clients and the
gateway import them without loading the engine; the wire's terms live outside this package (``galore_wire``). Names of this package are resolved lazily
(PEP 562): ``from galore import Engine`` loads torch, ``import galore.options`` does not.
"""
from __future__ import annotations

import importlib

_HOMES = {
    "engine": ("Engine", "ImageRequest", "ModelInfo"),
    "errors": ("GaloreError", "InvalidArgument", "FailedPrecondition", "ResourceExhausted",
               "UnsupportedMediaType", "ModelError", "DeviceUnusable"),
    "options": ("Attribution", "ExemplarPolicy", "ExplainOptions", "Kind", "MaskEncoding", "Precision", "Score", "Target",
                "Threshold"),
    "results": ("Attributive", "ClassScore", "Counterfactual", "ExemplarSide", "ImageResult", "Insecurity",
                "Region"),
}
_HOME_OF = {name: module for module, names in _HOMES.items() for name in names}
__all__ = list(_HOME_OF)


def __getattr__(name: str):
    module = _HOME_OF.get(name)
    if module is None:
        raise AttributeError(f"module 'galore' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
