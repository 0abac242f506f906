"""What one image's caller asks for: typed, frozen, validated once.

The engine reads only these objects; transports (handler, CLI) build them from their own formats.

Example:
    >>> opts = ExplainOptions(kinds=frozenset({Kind.DELIBERATIVE}), top_e=5, dims=(2, 3))
    >>> opts.threshold.coverage
    0.1
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field

from .errors import InvalidArgument


class Kind(enum.Enum):
    """Explanation types of Table I. Multi-class forms are selected by ``dims`` (V) and ``counter_classes``."""

    ATTRIBUTIVE = "attributive"  # eq. (3)
    SELF_AWARE = "self_aware"  # eq. (4)
    DELIBERATIVE = "deliberative"  # eqs. (5), (12)
    COUNTERFACTUAL = "counterfactual"  # eqs. (7)-(11), (13)-(14)


class Attribution(enum.Enum):
    """Attribution functions a(.) over the feature map F (§V-A)."""

    GRADIENT_X_ACTIVATION = "gradient_x_activation"  # eq. (18)
    INTEGRATED_GRADIENTS = "integrated_gradients"  # eq. (19)
    GRAD_CAM = "grad_cam"  # eq. (20)
    GRADIENT_HESSIAN = "gradient_hessian"  # NeurIPS 2019 eq. (2)


class Score(enum.Enum):
    """Confidence scores s(x) (§V-B)."""

    SOFTMAX = "softmax"  # eq. (21)
    CERTAINTY = "certainty"  # eq. (22)
    EASINESS = "easiness"  # eq. (23), needs a hardness predictor


class Target(enum.Enum):
    """Which class output is attributed: the logit (authors' code, default) or the probability h_y (paper text)."""

    LOGIT = "logit"
    PROBABILITY = "probability"


@dataclass(frozen=True)
class Threshold:
    """How a heatmap becomes a mask (eqs. 6, 8, 9): at most one of the two is given; neither means coverage 0.1.

    coverage: fraction in (0, 1] of the image's pixels kept (the top ones), as in the authors' evaluation.
    absolute: T in [0, 1), applied to the map divided by its own maximum.
    """

    coverage: float | None = None
    absolute: float | None = None

    def __post_init__(self):
        if self.coverage is None and self.absolute is None:
            object.__setattr__(self, "coverage", 0.1)
        elif self.coverage is not None and self.absolute is not None:
            raise InvalidArgument("threshold", "set only one of coverage or absolute")
        if self.coverage is not None and not (0.0 < self.coverage <= 1.0):
            raise InvalidArgument("threshold.coverage", f"must be in (0, 1], got {self.coverage}")
        if self.absolute is not None and not (0.0 <= self.absolute < 1.0):
            raise InvalidArgument("threshold.absolute", f"must be in [0, 1), got {self.absolute}")


@dataclass(frozen=True)
class ExplainOptions:
    """One image's request. Class ids are indices into the model's classes.

    kinds: explanation types wanted; empty means prediction only.
    top_e: E, the number of top classes deliberation draws from (>= every V in dims).
    dims: the ambiguity dimensions V to enumerate, each in [2, top_e]; (2, 3) gives pairs and triples.
    max_insecurities: Q, insecurities returned per V, strongest first.
    counter_classes: counter classes y^c for the counterfactual; empty means the runner-up class. More than one
        gives the multi-class counterfactual (eq. 13).
    exemplar_keys: for each counter class with an exemplar, the key of that exemplar in the request's or the
        model's exemplar bank (see ``Engine.explain``).
    top_k: how many top classes to report.
    """

    kinds: frozenset[Kind] = frozenset(Kind)
    attribution: Attribution = Attribution.GRADIENT_X_ACTIVATION
    score: Score = Score.SOFTMAX
    target: Target = Target.LOGIT
    clip_negative: bool = True
    normalize: bool = False  # per-map min-max as in §V-A
    top_e: int = 5
    dims: tuple[int, ...] = (2,)
    max_insecurities: int = 5
    counter_classes: tuple[int, ...] = ()
    threshold: Threshold = field(default_factory=Threshold)
    include_heatmaps: bool = False
    top_k: int = 5
    ig_steps: int = 50

    def __post_init__(self):
        if self.top_k < 1:
            raise InvalidArgument("options.top_k", f"must be >= 1, got {self.top_k}")
        if self.max_insecurities < 1:
            raise InvalidArgument("options.max_insecurities", f"must be >= 1, got {self.max_insecurities}")
        if self.ig_steps < 1:
            raise InvalidArgument("options.ig_steps", f"must be >= 1, got {self.ig_steps}")
        if Kind.DELIBERATIVE in self.kinds:
            if not self.dims:
                raise InvalidArgument("options.dims", "deliberative explanations need at least one V")
            if len(set(self.dims)) != len(self.dims):
                raise InvalidArgument("options.dims", f"repeated V in {list(self.dims)}")
            for v in self.dims:
                if v < 2:
                    raise InvalidArgument("options.dims", f"V must be >= 2, got {v}")
                if v > self.top_e:
                    raise InvalidArgument("options.dims", f"V={v} exceeds top_e (E)={self.top_e}")
        if len(set(self.counter_classes)) != len(self.counter_classes):
            raise InvalidArgument("options.counter_classes", f"repeated class in {list(self.counter_classes)}")
