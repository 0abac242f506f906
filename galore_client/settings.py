"""What a client asks for and what it knows about the model, independent of the transport.

``ExplainSettings`` wraps the engine's ``galore.options.ExplainOptions`` (the one home of the options, their
defaults and validation; torch-free) and adds what only a client has: counter classes given by label. It is sent to
a server as the galore.v1 proto and to ``--local`` through the same proto. ``ModelSummary`` resolves class names to
ids with a clear error.

Example:
    >>> summary = ModelSummary(name="m", labels=("tabby", "tiger cat", "lynx"))
    >>> summary.class_id("lynx"), summary.class_id("1"), summary.class_id(0)
    (2, 1, 0)
    >>> settings = ExplainSettings(kinds=("deliberative",), dims=(2, 3), attribution="grad_cam")
    >>> settings.options.attribution, settings.top_e
    (<Attribution.GRAD_CAM: 'grad_cam'>, 5)
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, fields, replace

from galore.errors import InvalidArgument
from galore.options import ENUM_FIELDS, Attribution, ExplainOptions, Kind, Score, Target, Threshold, choices, member

KINDS = choices(Kind)
ATTRIBUTIONS = choices(Attribution)
SCORES = choices(Score)
TARGETS = choices(Target)
OPTION_FIELDS = tuple(f.name for f in fields(ExplainOptions))

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
    exemplars_per_class: tuple[tuple[int, int], ...] = ()  # (class id, bank exemplars), by class id
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


class ExplainSettings:
    """Options for every image of one call: ``options`` (an ``ExplainOptions``) plus ``counter_classes`` and
    ``explained_class`` as ids or labels (the service resolves labels). Frozen; compare with ==.

    Keywords are the ``ExplainOptions`` field names (enum fields also take their names, e.g. score="certainty";
    unset or None means the engine default), plus three conveniences: ``kinds`` empty means all kinds,
    ``prediction_only=True`` means none, and ``coverage`` / ``absolute`` build the threshold. Bad values raise
    ``galore.errors.InvalidArgument`` (a ValueError) naming the field. Reading ``settings.top_e`` etc. reads
    ``settings.options``.
    """

    __slots__ = ("options", "counter_classes", "explained")

    def __init__(self, options: ExplainOptions | None = None, *, counter_classes=(), kinds=(),
                 prediction_only: bool = False, coverage: float | None = None, absolute: float | None = None,
                 **values):
        unknown = sorted(set(values) - set(OPTION_FIELDS))
        if unknown:
            raise TypeError(f"ExplainSettings: unknown option(s) {unknown}; known: {', '.join(OPTION_FIELDS)}")
        counters = tuple(counter_classes)
        if len(set(counters)) != len(counters):
            raise InvalidArgument("counter_classes", f"repeated class in {list(counters)}")
        if prediction_only and kinds:
            raise InvalidArgument("kinds", "set either prediction_only or kinds, not both")
        if coverage is not None or absolute is not None:
            if "threshold" in values:
                raise InvalidArgument("threshold", "give threshold or coverage / absolute, not both")
            if coverage is not None and absolute is not None:
                raise InvalidArgument("threshold", "set at most one of coverage or absolute")
            values["threshold"] = Threshold(coverage=coverage, absolute=absolute)
        if prediction_only:
            values["kinds"] = frozenset()
        elif kinds:
            values["kinds"] = frozenset(member(Kind, k, "kinds") for k in _names(kinds))
        for name, enum_type in ENUM_FIELDS.items():
            if values.get(name) is not None:
                values[name] = member(enum_type, values[name], name)
        if "dims" in values:
            values["dims"] = tuple(sorted(values["dims"] or ()))  # the service enumerates V in increasing order
        values = {k: v for k, v in values.items() if v is not None}
        if all(isinstance(c, int) for c in counters):
            values["counter_classes"] = counters  # ids: validated by the engine's own rules too
        explained = values.pop("explained_class", None)
        if isinstance(explained, str) and explained.strip().isdigit():
            explained = int(explained)
        if isinstance(explained, int) and not isinstance(explained, bool):
            values["explained_class"] = explained
        elif explained is not None and (not isinstance(explained, str) or not explained.strip()):
            raise InvalidArgument("explained_class", f"expected a class id or label, got {explained!r}")
        base = options or ExplainOptions()
        object.__setattr__(self, "options", replace(base, **values) if values else base)
        object.__setattr__(self, "counter_classes", counters or tuple(self.options.counter_classes))
        object.__setattr__(self, "explained", explained if explained is not None else self.options.explained_class)

    def __getattr__(self, name: str):
        if name in OPTION_FIELDS:
            return getattr(self.options, name)
        raise AttributeError(f"ExplainSettings has no attribute {name!r}")

    def __setattr__(self, name, value):
        raise AttributeError("ExplainSettings is frozen")

    def __eq__(self, other) -> bool:
        return isinstance(other, ExplainSettings) and (self.options, self.counter_classes, self.explained) == \
            (other.options, other.counter_classes, other.explained)

    def __hash__(self) -> int:
        return hash((self.options, self.counter_classes, self.explained))

    def __reduce__(self):  # copy, deepcopy and pickle rebuild through __init__ (it validates)
        return _rebuild, (self.options, self.counter_classes, self.explained)

    def __repr__(self) -> str:
        return (f"ExplainSettings(options={self.options!r}, counter_classes={self.counter_classes!r}, "
                f"explained_class={self.explained!r})")

    @property
    def prediction_only(self) -> bool:
        return not self.options.kinds


def _rebuild(options: ExplainOptions, counter_classes: tuple, explained=None) -> ExplainSettings:
    return ExplainSettings(options, counter_classes=counter_classes, explained_class=explained)


def _names(kinds) -> list:
    return [kinds] if isinstance(kinds, (str, Kind)) else list(kinds)
