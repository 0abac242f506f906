"""What a client asks for and what it knows about the model, independent of the transport.

``ExplainSettings`` is built once (e.g. from the command line), validated, and converted to the engine's
``ExplainOptions`` for ``--local`` or to the ``galore.v1`` proto for a server. ``ModelSummary`` resolves class
names to ids with a clear error.

Example:
    >>> summary = ModelSummary(name="m", labels=("tabby", "tiger cat", "lynx"))
    >>> summary.class_id("lynx"), summary.class_id("1"), summary.class_id(0)
    (2, 1, 0)
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass

KINDS = ("attributive", "self_aware", "deliberative", "counterfactual")
ATTRIBUTIONS = ("gradient_x_activation", "integrated_gradients", "grad_cam", "gradient_hessian")
SCORES = ("softmax", "certainty", "easiness")
TARGETS = ("logit", "probability")


class UnknownClass(ValueError):
    """A class name or id that the model does not have; the message says which field and suggests labels."""

    def __init__(self, field: str, value: object, suggestions: list[str], num_classes: int):
        hint = f"; did you mean {', '.join(repr(s) for s in suggestions)}?" if suggestions else ""
        super().__init__(f"{field}: unknown class {value!r} (the model has {num_classes} classes, ids 0.."
                         f"{num_classes - 1}){hint}")
        self.field = field
        self.value = value


@dataclass(frozen=True)
class ModelSummary:
    """The served (or local) model as the client sees it. Sizes in pixels; grid in feature cells."""

    name: str
    labels: tuple[str, ...] = ()
    architecture: str = ""
    layer: str = ""
    feature_grid: tuple[int, int] = (0, 0)  # (h, w)
    input_size: int = 0  # side of the centre crop the model sees
    scores: tuple[str, ...] = ()
    attributions: tuple[str, ...] = ()
    exemplar_class_ids: tuple[int, ...] = ()
    has_hardness_predictor: bool = False
    max_images_per_request: int = 0  # 0: unknown / no limit
    max_batch_size: int = 0

    def class_id(self, value: int | str, field: str = "counter_classes") -> int:
        """Exact label, id, or id written as digits -> id; UnknownClass (naming ``field``) otherwise."""
        n = len(self.labels)
        if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
            class_id = int(value)
            if 0 <= class_id < n:
                return class_id
            raise UnknownClass(field, value, [], n)
        if value in self.labels:
            return self.labels.index(value)
        folded = [label.lower() for label in self.labels]
        if value.lower() in folded and folded.count(value.lower()) == 1:
            return folded.index(value.lower())
        suggestions = difflib.get_close_matches(value.lower(), folded, n=3, cutoff=0.6)
        raise UnknownClass(field, value, [self.labels[folded.index(s)] for s in suggestions], n)

    def label(self, class_id: int) -> str:
        return self.labels[class_id] if 0 <= class_id < len(self.labels) else str(class_id)


@dataclass(frozen=True)
class ExplainSettings:
    """Options for every image of one call. None / empty means the service default (stated per field).

    kinds: subset of KINDS; empty = all four. prediction_only: no explanation at all (kinds must be empty).
    attribution / score / target: names from ATTRIBUTIONS / SCORES / TARGETS; None = gradient_x_activation /
        softmax / logit.
    top_e: E (default 5); dims: V values (default (2,)); max_insecurities: Q per V (default 5); top_k (default 5).
    counter_classes: class ids, or labels for the service to resolve; empty = the runner-up class.
    coverage / absolute: at most one; neither = coverage 0.1.
    include_heatmaps: send each region's feature-grid map (needed for heatmap overlays).
    """

    kinds: tuple[str, ...] = ()
    prediction_only: bool = False
    attribution: str | None = None
    score: str | None = None
    target: str | None = None
    top_e: int | None = None
    dims: tuple[int, ...] = ()
    max_insecurities: int | None = None
    top_k: int | None = None
    counter_classes: tuple[int | str, ...] = ()
    coverage: float | None = None
    absolute: float | None = None
    include_heatmaps: bool = True
    ig_steps: int | None = None

    def __post_init__(self):
        for kind in self.kinds:
            _check_choice("kinds", kind, KINDS)
        if self.prediction_only and self.kinds:
            raise ValueError("kinds: set either prediction_only or kinds, not both")
        for field, value, choices in (("attribution", self.attribution, ATTRIBUTIONS),
                                      ("score", self.score, SCORES), ("target", self.target, TARGETS)):
            if value is not None:
                _check_choice(field, value, choices)
        if len(set(self.counter_classes)) != len(self.counter_classes):
            raise ValueError(f"counter_classes: repeated class in {list(self.counter_classes)}")
        if self.coverage is not None and self.absolute is not None:
            raise ValueError("threshold: set at most one of coverage or absolute")
        for field in ("top_e", "max_insecurities", "top_k", "ig_steps"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise ValueError(f"{field}: must be >= 1, got {value}")

    def to_engine_options(self):
        """-> ``galore.options.ExplainOptions`` (raises galore.errors.InvalidArgument naming the field)."""
        from galore.options import Attribution, ExplainOptions, Kind, Score, Target, Threshold

        defaults = ExplainOptions()
        if self.prediction_only:
            kinds = frozenset()
        else:
            kinds = frozenset(Kind(k) for k in self.kinds) if self.kinds else frozenset(Kind)
        threshold = Threshold()
        if self.coverage is not None:
            threshold = Threshold(coverage=self.coverage, absolute=None)
        elif self.absolute is not None:
            threshold = Threshold(coverage=None, absolute=self.absolute)
        return ExplainOptions(
            kinds=kinds,
            attribution=Attribution(self.attribution) if self.attribution else defaults.attribution,
            score=Score(self.score) if self.score else defaults.score,
            target=Target(self.target) if self.target else defaults.target,
            top_e=self.top_e or defaults.top_e,
            dims=tuple(sorted(set(self.dims))) or defaults.dims,
            max_insecurities=self.max_insecurities or defaults.max_insecurities,
            counter_classes=self.counter_classes,
            threshold=threshold,
            include_heatmaps=self.include_heatmaps,
            top_k=self.top_k or defaults.top_k,
            ig_steps=self.ig_steps or defaults.ig_steps,
        )


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{field}: unknown value {value!r}; choose from {', '.join(choices)}")
