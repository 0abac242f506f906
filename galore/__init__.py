"""GALORE (Wang & Vasconcelos, TPAMI 2023): predictions plus attributive, self-aware, deliberative and
counterfactual explanations from one batched forward pass. Pure torch: no serving imports here."""
from .engine import Engine, ImageRequest, ModelInfo
from .errors import (STATUS_TABLE, FailedPrecondition, GaloreError, InvalidArgument, ModelError,
                     ResourceExhausted, UnsupportedMediaType)
from .options import Attribution, ExplainOptions, Kind, Score, Target, Threshold
from .results import (Attributive, ClassScore, Counterfactual, ExemplarSide, ImageResult, Insecurity, Region)

__all__ = [
    "Engine", "ImageRequest", "ModelInfo", "STATUS_TABLE", "GaloreError", "InvalidArgument", "FailedPrecondition",
    "ResourceExhausted", "UnsupportedMediaType", "ModelError", "Attribution", "ExplainOptions", "Kind", "Score",
    "Target", "Threshold", "Attributive", "ClassScore", "Counterfactual", "ExemplarSide", "ImageResult",
    "Insecurity", "Region",
]
