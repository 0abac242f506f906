"""What one image's caller asks for: typed, frozen, validated once.

The engine reads only these objects; transports (handler, CLI) build them from their own formats.

Example:
    >>> opts = ExplainOptions(kinds=frozenset({Kind.DELIBERATIVE}), top_e=5, dims=(2, 3))
    >>> opts.threshold.coverage
    0.1
"""
from __future__ import annotations

import enum
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import TypeVar

from .errors import InvalidArgument

E = TypeVar("E", bound=enum.Enum)


class Kind(enum.Enum):
    """Explanation types of Table I. Multi-class forms are selected by ``dims`` (V) and ``counter_classes``.

    A kind's value is also the name of its result everywhere: the field of ``galore.results.ImageResult``, of the
    galore.v1 ``ImageExplanation`` and of the client's ``Explanation``; its ``Shape`` says what that result is.
    Each kind's computation is its unit in ``galore.kinds.UNITS``."""

    ATTRIBUTIVE = "attributive"  # eq. (3)
    SELF_AWARE = "self_aware"  # eq. (4)
    DELIBERATIVE = "deliberative"  # eqs. (5), (12)
    COUNTERFACTUAL = "counterfactual"  # eqs. (7)-(11), (13)-(14)

    @property
    def shape(self) -> "Shape":
        return SHAPES[self]


class Shape(enum.Enum):
    """What a kind answers with; transports convert, and reports draw, by shape, so a new kind of a known shape
    needs no new conversion or drawing."""

    CLASS_REGION = "class_region"  # one class, its probability and its region (Attributive)
    INSECURITIES = "insecurities"  # V -> insecurities, each a class tuple and its region (Insecurity)
    COUNTERFACTUAL = "counterfactual"  # a query region and one region per counter class's exemplar (Counterfactual)


SHAPES: dict[Kind, Shape] = {Kind.ATTRIBUTIVE: Shape.CLASS_REGION, Kind.SELF_AWARE: Shape.CLASS_REGION,
                             Kind.DELIBERATIVE: Shape.INSECURITIES, Kind.COUNTERFACTUAL: Shape.COUNTERFACTUAL}


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


class ExemplarPolicy(enum.Enum):
    """Which exemplar of the model's bank a counter class gets when the request brings none (eq. 13)."""

    RANDOM = "random"  # the paper's draw from the counter class (Fig. 5), seeded by the query image and class
    MOST_CONFIDENT = "most_confident"  # the bank image the model classifies as that class with the highest h_c


class Precision(enum.Enum):
    """Number format of the backbone's forward (image -> F); the head and every gradient are always fp32."""

    FP32 = "fp32"  # IEEE fp32: TensorFloat-32 is off (cuDNN would otherwise use it for CUDA convolutions)
    BF16 = "bf16"  # CPUs with AVX512_BF16 or AMX, CUDA GPUs that support it natively
    FP16 = "fp16"  # CUDA only
    TF32 = "tf32"  # CUDA compute capability 8.0+ only: fp32 tensors, TensorFloat-32 convolutions and matmuls
    AUTO = "auto"  # bf16 where the hardware supports it, else fp32 (galore.precision.resolve)


DEFAULT_MODEL = "efficientnet_lite0"  # the model `make archive` builds and every tool targets by default
DEFAULT_PRECISION = Precision.FP32  # see BENCHMARKS.md "Reduced precision" for the measurements behind it


class MaskEncoding(enum.Enum):
    """How masks travel on the wire (the engine itself keeps them on the working grid)."""

    RLE = "rle"  # COCO run lengths: a few KB per mask at any photo size
    BITS = "bits"  # one bit per original pixel


@dataclass(frozen=True)
class Threshold:
    """How a heatmap becomes a mask (eqs. 6, 8, 9): at most one of the two is given; neither means coverage 0.1.

    coverage: fraction in (0, 1] of the working grid's cells kept (the top ones), as in the authors' evaluation.
    absolute: T in [0, 1): a cell is kept when its value exceeds T times the largest value of all the maps of the
    same explanation of the same image (every insecurity of the image with the same V for deliberation; the query and exemplar
    sides for a counterfactual; the map itself for attributive and self-aware), so a weak map keeps fewer cells
    than a strong one, or none (eqs. 6, 8, 9).
    """

    coverage: float | None = None
    absolute: float | None = None

    def __post_init__(self):
        if self.coverage is None and self.absolute is None:
            object.__setattr__(self, "coverage", 0.1)
        elif self.coverage is not None and self.absolute is not None:
            raise InvalidArgument("options.threshold", "set only one of coverage or absolute")
        if self.coverage is not None and not (0.0 < self.coverage <= 1.0):
            raise InvalidArgument("options.threshold.coverage", f"must be in (0, 1], got {self.coverage}")
        if self.absolute is not None and not (0.0 <= self.absolute < 1.0):
            raise InvalidArgument("options.threshold.absolute", f"must be in [0, 1), got {self.absolute}")


MAX_IG_STEPS = 1000  # integrated-gradients steps at most: each step is one more head backward per image


def described(default=MISSING, help: str = "", symbol: str = "", default_factory=MISSING):
    """A dataclass field with its one-line ``help`` (and the paper's ``symbol``), read by the CLI and the docs."""
    return field(default=default, default_factory=default_factory, metadata={"help": help, "symbol": symbol})


@dataclass(frozen=True)
class ExplainOptions:
    """One image's request; the defaults here are the service's defaults everywhere (proto 0 / unset, client,
    CLI, load tester). Class ids are indices into the model's classes; each field's help is in its metadata.

    An empty ``kinds`` means prediction only. ``counter_classes``: empty means the runner-up class; more than one
    gives the multi-class counterfactual (eq. 13). Validation raises InvalidArgument naming ``options.<field>``.
    Every option is validated here and nowhere else: on construction what needs no model, in ``check_classes``
    what needs the model's class count (the engine calls it for every image, the service for every request).
    """

    kinds: frozenset[Kind] = described(frozenset(Kind), "explanation kinds wanted (Table I); none: prediction only")
    attribution: Attribution = described(Attribution.GRADIENT_X_ACTIVATION, "attribution function a(.) (§V-A)")
    score: Score = described(Score.SOFTMAX, "confidence score s(x) (§V-B)")
    target: Target = described(Target.LOGIT, "attributed output of a class: its logit or its probability")
    clip_negative: bool = described(True, "clip negative attributions to ~0 before combining (authors' code)")
    normalize: bool = described(False, "min-max normalise each attribution map (§V-A)")
    top_e: int = described(5, "classes deliberation draws from (>= every V)", "E")
    dims: tuple[int, ...] = described((2,), "ambiguity dimensions V, each in [2, E]: 2 pairs, 3 triples", "V")
    max_insecurities: int = described(5, "insecurities returned per V, strongest first", "Q")
    counter_classes: tuple[int, ...] = described((), "counter classes y^c of the counterfactual (none: "
                                                     "the runner-up class)", "CLASS")
    threshold: Threshold = described(help="how a map becomes a mask: coverage fraction or absolute T",
                                     default_factory=Threshold)
    include_heatmaps: bool = described(False, "send each region's feature-grid heatmap (h*w floats per region)")
    top_k: int = described(5, "top classes reported", "K")
    ig_steps: int = described(50, f"integrated-gradients steps, 1..{MAX_IG_STEPS}", "STEPS")
    explained_class: int | None = described(None, "class the attributive and self-aware maps explain (none: the "
                                                  "prediction y*)", "CLASS")
    exemplar_policy: ExemplarPolicy = described(ExemplarPolicy.RANDOM, "bank exemplar of a counter class: random "
                                                "(seeded by the image) or most_confident")
    mask_encoding: MaskEncoding = described(MaskEncoding.RLE, "mask encoding in responses: rle (COCO run "
                                                               "lengths, KBs) or bits (1 bit per pixel)")

    def __post_init__(self):
        for name in ("top_k", "top_e", "max_insecurities", "ig_steps"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidArgument(f"options.{name}", f"must be >= 1, got {value!r}")
        if self.ig_steps > MAX_IG_STEPS:
            raise InvalidArgument("options.ig_steps", f"must be <= {MAX_IG_STEPS}, got {self.ig_steps}")
        for name, enum_type in ENUM_FIELDS.items():
            if not isinstance(getattr(self, name), enum_type):
                raise InvalidArgument(f"options.{name}", f"expected a {enum_type.__name__}, got "
                                                         f"{getattr(self, name)!r}")
        if Kind.DELIBERATIVE in self.kinds:
            if not self.dims:
                raise InvalidArgument("options.dims", "deliberative explanations need at least one V")
            if len(set(self.dims)) != len(self.dims):
                raise InvalidArgument("options.dims", f"repeated V in {list(self.dims)}")
            for i, v in enumerate(self.dims):
                if not isinstance(v, int) or isinstance(v, bool) or v < 2:
                    raise InvalidArgument(f"options.dims[{i}]", f"V must be >= 2, got {v!r}")
                if v > self.top_e:
                    raise InvalidArgument(f"options.dims[{i}]", f"V={v} exceeds top_e={self.top_e} (E)")
        if self.explained_class is not None and (not isinstance(self.explained_class, int)
                                                 or isinstance(self.explained_class, bool)
                                                 or self.explained_class < 0):
            raise InvalidArgument("options.explained_class", f"expected a class id >= 0, got "
                                                             f"{self.explained_class!r}")
        if len(set(self.counter_classes)) != len(self.counter_classes):
            raise InvalidArgument("options.counter_classes", f"repeated class in {list(self.counter_classes)}")

    @classmethod
    def defaults_for(cls, num_classes: int) -> "ExplainOptions":
        """The defaults for a model of ``num_classes`` classes: E and K shrink to C where it has fewer classes than
        their defaults (a 3-class model deliberates over its 3 classes and reports 3), everything else as the
        defaults. What an image with no options gets (``ImageRequest(options=None)``); the service's unset fields
        shrink the same way (``default_count``). A model of one class cannot take the default V = 2: that raises
        InvalidArgument naming ``options.dims[0]``.

        Example:
            >>> o = ExplainOptions.defaults_for(3)
            >>> o.top_e, o.top_k, o.dims
            (3, 3, (2,))
        """
        return replace(cls(), top_e=default_count("top_e", num_classes), top_k=default_count("top_k", num_classes))

    def check_classes(self, num_classes: int, counts: bool = False) -> None:
        """The rules that need the model's class count C: the explained and counter classes are ids in [0, C), and
        deliberation draws its E classes from the C. ``counts`` (the service, whose defaults already shrink to C):
        top_e and top_k are at most C whatever the kinds."""
        if (counts or Kind.DELIBERATIVE in self.kinds) and self.top_e > num_classes:
            raise InvalidArgument("options.top_e", f"E={self.top_e} exceeds the model's {num_classes} classes")
        if counts and self.top_k > num_classes:
            raise InvalidArgument("options.top_k", f"K={self.top_k} exceeds the model's {num_classes} classes")
        if self.explained_class is not None:
            class_in_range(self.explained_class, num_classes, "options.explained_class")
        for c in self.counter_classes:
            class_in_range(c, num_classes, "options.counter_classes")


def default_count(name: str, num_classes: int) -> int:
    """The default of a class count option (``top_e`` or ``top_k``) for a model of ``num_classes`` classes: the
    dataclass default, at most C."""
    if name not in ("top_e", "top_k"):
        raise ValueError(f"default_count: {name!r} is not a class count (top_e or top_k)")
    return min(ExplainOptions.__dataclass_fields__[name].default, num_classes)


def class_in_range(class_id: object, num_classes: int, field_name: str) -> int:
    """``class_id`` if it is an id of a model with ``num_classes`` classes; InvalidArgument naming ``field_name``."""
    if not isinstance(class_id, int) or isinstance(class_id, bool) or not 0 <= class_id < num_classes:
        raise InvalidArgument(field_name, f"class id {class_id!r} out of range [0, {num_classes})")
    return class_id


ENUM_FIELDS: dict[str, type[enum.Enum]] = {  # single-valued enum options: name -> enum
    f.name: type(f.default) for f in fields(ExplainOptions) if isinstance(f.default, enum.Enum)}


def member(enum_type: type[E], value: E | str, field_name: str) -> E:
    """An enum member from itself, its value ('grad_cam') or its name ('GRAD_CAM'); InvalidArgument naming
    ``field_name`` and the choices otherwise."""
    if isinstance(value, enum_type):
        return value
    for candidate in enum_type:
        if value in (candidate.value, candidate.name):
            return candidate
    raise InvalidArgument(field_name, f"unknown value {value!r}; choose from {', '.join(choices(enum_type))}")


def choices(enum_type: type[enum.Enum]) -> tuple[str, ...]:
    """The names callers write for ``enum_type`` (its values), in definition order."""
    return tuple(m.value for m in enum_type)
