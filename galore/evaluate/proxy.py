"""The paper's proxy localisation protocol on part-annotated data (GALORE TPAMI 2023 §VI-B, §VII-A/D;
NeurIPS 2019 §4): explanation regions scored against ground truth built from part attributes.

Ground truth (class level, from the attribute annotations):
  * part descriptor phi_c^k: for each attribute group g of part k (e.g. ``has_bill_color`` for the beak), the
    distribution over the group's values of their presence in the images of class c, with additive smoothing;
  * similarity of classes a, b under part k: alpha_ab^k = mean over the groups of k of
    gamma = exp(-(KL(phi_a || phi_b) + KL(phi_b || phi_a)));  for a V-tuple, eta = min over its pairs;
  * ground-truth insecurities G^d: the ``fraction`` (20 %) of (part, class V-tuple) triplets of largest
    similarity, over all parts and V-tuples of classes (ties at the cut go in); counterfactual ground truth G^c:
    the remaining (part, pair) triplets. A multi-class counterfactual of a against V wants the parts in G^c for
    (a, b) for every b in V; attributive and self-aware maps of y* are scored as that, against L random classes
    (§VI-B-3).
Metrics, for a region r explaining classes (a, ...) of an image whose visible part points the model sees are S
(``geometry`` "resize", the default: the whole image squeezed to the crop, every visible part; "crop": the
engine's resize + centre crop, points outside it never seen nor counted):
  * precision P = |GT parts in r| / |parts in r|, recall R = |GT parts in r| / |GT parts in S|; a segment with
    no GT part in S has P = R = NaN at every level (the authors skip it), P is NaN where r holds no part; NaN
    leaves the means. Curves over the threshold: each map keeps its top ``coverage`` share of working-grid cells
    (``COVERAGE_PRESETS``; default 0.5 %, 1 %..90 %). A counterfactual's curve is its query side's (SCOUT); the
    exemplar side is reported apart;
  * PIoU (eq. 24) of a counterfactual's query and exemplar regions, SCOUT's rules: IoU of the part ids each
    contains among the parts visible in both images, NaN unless both regions hold one;
  * Table II: the Pearson correlation (and two-sided p-value) between strength and precision, one point per
    segment at the reference coverage (the options' threshold), or pooled: one point per coverage level.
Ground truth uses the authors' part-to-attribute mapping by default (``AUTHORS_PART_GROUPS``). With a second
model (``student``), only the images it gets wrong and the engine gets right are explained, against its guesses.

Everything runs the real engine in process; regions at every coverage come from the same feature-grid maps the
engine thresholds (its region at the reference coverage is reproduced exactly). Pure torch + numpy.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field, replace
from itertools import chain, combinations
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from galore.errors import InvalidArgument
from galore.options import ExplainOptions, Kind

from .cub import Cub, PartPoints

DEFAULT_FRACTION = 0.2  # share of (part, class tuple) triplets that are ground-truth insecurities (§VII-A)
# Coverage sweeps. The default: 0.5 % (one receptive-field unit of VGG16 at 14 x 14, Table III) then 1 %..90 %.
# The authors' scripts sweep 1 %..99 % (NeurIPS 2019) and 0.5 %, 1 %..49 % (SCOUT); Table III explains with
# regions of one receptive-field unit: 0.5 % of the image for VGG16, 2 % for ResNet-50 (7 x 7).
DEFAULT_COVERAGES = (0.005,) + tuple(round(0.01 * i, 2) for i in range(1, 91))
COVERAGE_PRESETS: Mapping[str, tuple[float, ...]] = {
    "default": DEFAULT_COVERAGES,
    "neurips2019": tuple(round(0.01 * i, 2) for i in range(1, 100)),
    "scout": (0.005,) + tuple(round(0.01 * i, 2) for i in range(1, 50)),
    "table3-vgg16": (0.005,),
    "table3-resnet50": (0.02,),
}
MAX_EXACT_TUPLES = 2_000_000  # class V-tuples enumerated for the ground-truth cut; beyond, a seeded sample

# Attribute groups of each CUB-200-2011 part (Wah et al. 2011). A part missing here uses every group whose name
# holds the part's name (e.g. part "crest" -> "has_crest_color"); a part with no group never is ground truth.
# AUTHORS_PART_GROUPS (the default) is the authors' mapping: the attribute column ranges of each part in
# ``create_similarityMatrix_cls_part_cub.py`` (Deliberative-explanation), by group name. OUR_PART_GROUPS is the
# earlier mapping of this project (upperparts / underparts colour describe back / belly; eyes and throat without
# the head pattern; crown without the forehead colour), kept as an option (``--part-mapping ours``).
AUTHORS_PART_GROUPS: Mapping[str, tuple[str, ...]] = {
    "back": ("has_back_color", "has_back_pattern"),
    "beak": ("has_bill_shape", "has_bill_length", "has_bill_color"),
    "belly": ("has_belly_color", "has_belly_pattern"),
    "breast": ("has_breast_pattern", "has_breast_color"),
    "crown": ("has_head_pattern", "has_forehead_color", "has_crown_color"),
    "forehead": ("has_head_pattern", "has_forehead_color"),
    "left eye": ("has_eye_color", "has_head_pattern"),
    "right eye": ("has_eye_color", "has_head_pattern"),
    "left leg": ("has_leg_color",),
    "right leg": ("has_leg_color",),
    "left wing": ("has_wing_color", "has_wing_shape", "has_wing_pattern"),
    "right wing": ("has_wing_color", "has_wing_shape", "has_wing_pattern"),
    "nape": ("has_nape_color",),
    "tail": ("has_tail_shape", "has_upper_tail_color", "has_under_tail_color", "has_tail_pattern"),
    "throat": ("has_head_pattern", "has_throat_color"),
}
OUR_PART_GROUPS: Mapping[str, tuple[str, ...]] = {
    "back": ("has_back_color", "has_back_pattern", "has_upperparts_color"),
    "beak": ("has_bill_shape", "has_bill_length", "has_bill_color"),
    "belly": ("has_belly_color", "has_belly_pattern", "has_underparts_color"),
    "breast": ("has_breast_color", "has_breast_pattern"),
    "crown": ("has_crown_color", "has_head_pattern"),
    "forehead": ("has_forehead_color", "has_head_pattern"),
    "left eye": ("has_eye_color",),
    "right eye": ("has_eye_color",),
    "left leg": ("has_leg_color",),
    "right leg": ("has_leg_color",),
    "left wing": ("has_wing_color", "has_wing_shape", "has_wing_pattern"),
    "right wing": ("has_wing_color", "has_wing_shape", "has_wing_pattern"),
    "nape": ("has_nape_color",),
    "tail": ("has_tail_shape", "has_upper_tail_color", "has_under_tail_color", "has_tail_pattern"),
    "throat": ("has_throat_color",),
}
PART_MAPPINGS: Mapping[str, Mapping[str, tuple[str, ...]]] = {"authors": AUTHORS_PART_GROUPS, "ours": OUR_PART_GROUPS}
CUB_PART_GROUPS = AUTHORS_PART_GROUPS  # the default


class CounterUser(enum.Enum):
    """How counter classes are chosen (§VI-B-2): the paper simulates an expert with a second network's guess and
    a beginner with a random class. Here the expert takes the classifier's next most likely classes."""

    RUNNER_UP = "runner_up"
    RANDOM = "random"


# ---- ground truth -------------------------------------------------------------------------------------------------
def part_groups(cub: Cub, mapping: Mapping[str, Sequence[str]] = CUB_PART_GROUPS) -> list[tuple[str, ...]]:
    """The attribute groups describing each part of ``cub`` (in part order); unknown groups are dropped."""
    known = set(cub.attribute_groups)
    out = []
    for name in cub.parts:
        groups = mapping.get(name)
        if groups is None:
            token = name.replace(" ", "_")
            groups = tuple(g for g in dict.fromkeys(cub.attribute_groups) if token in g)
        out.append(tuple(g for g in groups if g in known))
    return out


def group_descriptors(cub: Cub, smoothing: float = 1.0) -> dict[str, np.ndarray]:
    """phi per attribute group: (C, D_g) rows summing to 1, (presence count of each value in the class's images
    + ``smoothing``) normalised over the group's D_g values."""
    if smoothing <= 0:
        raise InvalidArgument("smoothing", f"must be > 0 (KL needs non-zero probabilities), got {smoothing}")
    classes = np.array([cub.labels[i] for i in cub.image_ids])
    counts = np.zeros((cub.num_classes, cub.attribute_present.shape[1]))
    np.add.at(counts, classes, cub.attribute_present.astype(np.float64))
    out = {}
    for group in dict.fromkeys(cub.attribute_groups):
        cols = [a for a, g in enumerate(cub.attribute_groups) if g == group]
        phi = counts[:, cols] + smoothing
        out[group] = phi / phi.sum(1, keepdims=True)
    return out


def gamma(phi: np.ndarray) -> np.ndarray:
    """(C, D) distributions -> (C, C) exp(-(KL(a||b) + KL(b||a))) = exp(-sum_d (p_a - p_b)(log p_a - log p_b))."""
    log = np.log(phi)
    sym = ((phi[:, None, :] - phi[None, :, :]) * (log[:, None, :] - log[None, :, :])).sum(-1)
    return np.exp(-sym)


def part_similarity(cub: Cub, mapping: Mapping[str, Sequence[str]] = CUB_PART_GROUPS,
                    smoothing: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """alpha (K, C, C): the mean gamma over each part's attribute groups, and described (K,) bool: parts that
    have at least one group (the others get alpha 0 and are never ground truth)."""
    phis = group_descriptors(cub, smoothing)
    gammas = {g: gamma(phi) for g, phi in phis.items()}
    groups = part_groups(cub, mapping)
    alpha = np.zeros((len(cub.parts), cub.num_classes, cub.num_classes))
    for k, gs in enumerate(groups):
        if gs:
            alpha[k] = np.mean([gammas[g] for g in gs], axis=0)
    return alpha, np.array([bool(gs) for gs in groups])


class GroundTruth:
    """G^d and G^c over ``alpha`` (K, C, C) (see module docstring); cuts are computed once per V."""

    def __init__(self, alpha: np.ndarray, described: np.ndarray, fraction: float = DEFAULT_FRACTION, seed: int = 0):
        if not 0.0 < fraction < 1.0:
            raise InvalidArgument("fraction", f"must be in (0, 1), got {fraction}")
        self.alpha, self.described, self.fraction, self.seed = alpha, described, fraction, seed
        self._cuts: dict[int, float] = {}

    @classmethod
    def of(cls, cub: Cub, fraction: float = DEFAULT_FRACTION, smoothing: float = 1.0,
           mapping: Mapping[str, Sequence[str]] = CUB_PART_GROUPS, seed: int = 0) -> "GroundTruth":
        return cls(*part_similarity(cub, mapping, smoothing), fraction, seed)

    @property
    def num_classes(self) -> int:
        return self.alpha.shape[1]

    def eta(self, classes: Sequence[int]) -> np.ndarray:
        """(K,) min over the pairs of ``classes`` of alpha."""
        return np.min([self.alpha[:, a, b] for a, b in combinations(classes, 2)], axis=0)

    def cut(self, v: int) -> float:
        """The similarity of the M-th strongest (part, V-tuple) triplet, M = ceil(fraction x all triplets)."""
        if v not in self._cuts:
            if not 2 <= v <= self.num_classes:
                raise InvalidArgument("dims", f"V={v} needs 2 <= V <= {self.num_classes} classes")
            tuples = _class_tuples(self.num_classes, v, self.seed)
            alpha = self.alpha[self.described]  # (K', C, C)
            eta = np.full((alpha.shape[0], len(tuples)), np.inf)
            for i, j in combinations(range(v), 2):
                eta = np.minimum(eta, alpha[:, tuples[:, i], tuples[:, j]])
            values = eta.ravel()
            m = max(1, math.ceil(self.fraction * len(values)))  # the M-th largest, without a full sort
            self._cuts[v] = float(np.partition(values, len(values) - m)[len(values) - m])
        return self._cuts[v]

    def insecure_parts(self, classes: Sequence[int]) -> np.ndarray:
        """(K,) bool: parts k with (k, classes) in G^d."""
        return self.described & (self.eta(classes) >= self.cut(len(classes)))

    def discriminant_parts(self, a: int, others: Iterable[int]) -> np.ndarray:
        """(K,) bool: parts k with (k, a, b) in G^c for every b in ``others``."""
        keep = self.described.copy()
        for b in others:
            keep &= self.alpha[:, a, b] < self.cut(2)
        return keep


def _class_tuples(n: int, v: int, seed: int) -> np.ndarray:
    """(T, v) class v-tuples: all of them, or MAX_EXACT_TUPLES seeded draws of v distinct classes when more."""
    total = math.comb(n, v)
    if total <= MAX_EXACT_TUPLES:
        flat = np.fromiter(chain.from_iterable(combinations(range(n), v)), dtype=np.int64, count=total * v)
        return flat.reshape(total, v)
    rng = np.random.default_rng(seed)
    out = np.zeros((0, v), dtype=np.int64)
    while len(out) < MAX_EXACT_TUPLES:  # rejection of draws with a repeated class (rare when v << n)
        draw = np.sort(rng.integers(0, n, size=(MAX_EXACT_TUPLES, v)), axis=1)
        out = np.concatenate([out, draw[(np.diff(draw, axis=1) > 0).all(1)]])
    return out[:MAX_EXACT_TUPLES]


# ---- regions at every coverage -------------------------------------------------------------------------------------
@dataclass(frozen=True, eq=False)
class Sweep:
    """One map thresholded at every coverage: ``inside`` (L, K) bool, part k's point in the region at level l
    (False for parts not seen); ``seen`` (K,) bool, visible parts inside the crop; ``strength`` (L,) eq. (15)."""

    inside: np.ndarray
    seen: np.ndarray
    strength: np.ndarray


def part_cells(points: PartPoints, frame) -> np.ndarray:
    """(K,) flat working-grid cell of each part point, -1 for parts not visible or outside the crop.
    ``frame``: the region's ``masks.CellFrame`` (which cell each original pixel falls in)."""
    rows, cols = frame.rows, frame.cols
    out = np.full(len(points.visible), -1, dtype=np.int64)
    for k, ((x, y), vis) in enumerate(zip(points.xy, points.visible)):
        r, c = int(math.floor(y)), int(math.floor(x))
        if vis and 0 <= r < len(rows) and 0 <= c < len(cols) and rows[r] >= 0 and cols[c] >= 0:
            out[k] = rows[r] * frame.side + cols[c]
    return out


def working_values(grid, heatmap: torch.Tensor) -> np.ndarray:
    """The feature-grid ``heatmap`` (h, w) on ``grid`` (regions.WorkingGrid), flat (G*G,), as the engine sees it."""
    return grid.upsample(heatmap[None].float())[0].flatten().double().cpu().numpy()


def coverage_counts(cells: int, coverages: Sequence[float]) -> np.ndarray:
    """(L,) cells kept per coverage, as the engine counts them: round(c x G^2)."""
    return np.array([int(round(c * cells)) for c in coverages], dtype=np.int64)


def shared_counts(wanted: np.ndarray, positives: Sequence[int]) -> list[np.ndarray]:
    """A counterfactual's sides keep the same number of cells (note under eq. 16), as the engine does: per level,
    the wanted count, no more than any side with evidence has; a side without positive cells keeps none.
    wanted (L,), positives: positive cells per side -> one (L,) count per side."""
    cap = min([p for p in positives if p > 0], default=0)
    common = np.minimum(wanted, cap)
    return [common if p > 0 else np.zeros_like(wanted) for p in positives]


def sweep(values: np.ndarray, cells: np.ndarray, counts: np.ndarray) -> Sweep:
    """Thresholds one map's working-grid ``values`` (G*G,) keeping ``counts`` (L,) cells per level, as the engine
    does (the top cells, positive ones only, ties at the cut kept), and reads which part ``cells`` (K,) fall in."""
    ranked = np.sort(values)[::-1]
    total = np.cumsum(ranked)
    floor = float(np.finfo(np.float32).tiny)
    tau = np.where(counts > 0, ranked[np.clip(counts - 1, 0, len(ranked) - 1)], np.inf)
    tau = np.where((counts > 0) & (tau <= 0), floor, tau)  # fewer positive cells than wanted: every positive one
    kept = np.searchsorted(-ranked, -tau, side="right")  # cells >= tau
    strength = np.where(kept > 0, total[np.maximum(kept - 1, 0)] / np.maximum(kept, 1), 0.0)
    seen = cells >= 0
    part_values = np.where(seen, values[np.maximum(cells, 0)], -np.inf)
    return Sweep(part_values[None, :] >= tau[:, None], seen, strength)


def precision_recall(inside: np.ndarray, gt: np.ndarray, seen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """inside (L, K), gt (K,), seen (K,) -> P (L,), R (L,); NaN where undefined. A segment with no ground-truth
    part it could see (gt & seen empty) has P = R = NaN at every level and leaves the means, as in the authors'
    code (``continue`` in the NeurIPS 2019 script, NaN in SCOUT), instead of P = 0; otherwise P is NaN only
    where the region holds no part."""
    hits = (inside & gt).sum(1).astype(np.float64)
    found = inside.sum(1)
    wanted = int((gt & seen).sum())
    if not wanted:
        return np.full(len(hits), np.nan), np.full(len(hits), np.nan)
    precision = np.where(found > 0, hits / np.maximum(found, 1), np.nan)
    return precision, hits / wanted


def part_iou(a: np.ndarray, b: np.ndarray, seen_a: np.ndarray | None = None, seen_b: np.ndarray | None = None
             ) -> np.ndarray:
    """Eq. (24) per level, with the authors' rules (SCOUT's ``cf_PIoU_*``): a, b (L, K) part ids in the query and
    exemplar regions; only parts visible in BOTH images count (seen_a & seen_b, (K,)); |a & b| / |a | b|, NaN
    unless both regions hold such a part."""
    both = np.ones(a.shape[-1], bool) if seen_a is None else seen_a & seen_b
    a, b = a & both, b & both
    union = (a | b).sum(1)
    defined = (a.sum(1) > 0) & (b.sum(1) > 0)
    return np.where(defined, (a & b).sum(1) / np.maximum(union, 1), np.nan)


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, int]:
    """Pearson r, its two-sided p-value (Student t, n - 2 degrees of freedom) and n; NaN when n < 3 or constant."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n = len(x)
    if n < 3 or x.std() == 0 or y.std() == 0:
        return math.nan, math.nan, n
    r = float(np.clip(np.corrcoef(x, y)[0, 1], -1.0, 1.0))
    if abs(r) == 1.0:
        return r, 0.0, n
    df = n - 2
    t2 = r * r * df / (1 - r * r)
    return r, _betainc(df / 2, 0.5, df / (df + t2)), n


def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b) by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):
        return 1.0 - _betainc(b, a, 1.0 - x)
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x)
                     + b * math.log1p(-x)) / a
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(0, 400):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -((a + m) * (a + b + m) * x) / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / c
        c = c if abs(c) > tiny else tiny
        f *= c * d
        if abs(1.0 - c * d) < 1e-12:
            break
    return front * (f - 1.0)


# ---- the protocol ------------------------------------------------------------------------------------------------
ESTIMATORS = ("reference", "pooled")
# Image geometry: "resize" squeezes the whole image to the model's crop side (crop x crop, as the authors'
# NeurIPS 2019 script, cv2.resize to 224 x 224: every part is seen; the engine must then resize to its crop side,
# Preprocess(resize=crop)); "crop" is the engine's own resize + centre crop (SCOUT's query side resizes to
# 255 x 255 then crops 224), where parts outside the crop are never seen.
GEOMETRIES = ("resize", "crop")
@dataclass(frozen=True)
class ProxySettings:
    """One run of the protocol. ``options``: the attribution settings under test (attribution, score, target,
    clipping, normalisation, top_e, dims = the deliberative V's); its threshold coverage is the reference level of
    the strength-precision correlation. counter_dims: numbers of counter classes (1 binary, 2 the paper's
    multi-class). attributive_classes: L. limit: at most this many images; hardest: the images of lowest s(x)
    among them (the paper explains the 100 hardest test images). split: "test", "train" or "all"."""

    options: ExplainOptions = field(default_factory=lambda: ExplainOptions(dims=(2, 3)))
    coverages: tuple[float, ...] = DEFAULT_COVERAGES
    counter_dims: tuple[int, ...] = (1, 2)
    counter_user: CounterUser = CounterUser.RUNNER_UP
    attributive_classes: int = 3
    fraction: float = DEFAULT_FRACTION
    smoothing: float = 1.0
    split: str = "test"
    limit: int | None = None
    hardest: int | None = None
    batch_size: int = 8
    seed: int = 0
    geometry: str = "resize"  # GEOMETRIES
    part_mapping: str = "authors"  # PART_MAPPINGS key
    estimator: str = "reference"  # Table II: "reference" (one point per segment at the reference coverage) or
    #                               "pooled" (one point per coverage level: mean strength, mean precision)

    def __post_init__(self):
        if self.part_mapping not in PART_MAPPINGS:
            raise InvalidArgument("part_mapping", f"choose {' or '.join(PART_MAPPINGS)}, got {self.part_mapping!r}")
        if self.geometry not in GEOMETRIES:
            raise InvalidArgument("geometry", f"choose {' or '.join(GEOMETRIES)}, got {self.geometry!r}")
        if self.estimator not in ESTIMATORS:
            raise InvalidArgument("estimator", f"choose {' or '.join(ESTIMATORS)}, got {self.estimator!r}")
        if not self.coverages or any(not 0.0 < c <= 1.0 for c in self.coverages):
            raise InvalidArgument("coverages", f"each must be in (0, 1], got {list(self.coverages)}")
        if not self.counter_dims or any(d < 1 for d in self.counter_dims):
            raise InvalidArgument("counter_dims", f"each must be >= 1, got {list(self.counter_dims)}")
        if self.attributive_classes < 1:
            raise InvalidArgument("attributive_classes", f"must be >= 1, got {self.attributive_classes}")
        if self.split not in ("test", "train", "all"):
            raise InvalidArgument("split", f"choose test, train or all, got {self.split!r}")
        for name in ("limit", "hardest", "batch_size"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InvalidArgument(name, f"must be >= 1, got {value}")
        if self.options.threshold.coverage is None:
            raise InvalidArgument("options.threshold", "the protocol sweeps coverages: give a coverage, not an "
                                                       "absolute threshold")
        if min(abs(c - self.reference) for c in self.coverages) > 1e-9:
            raise InvalidArgument("options.threshold.coverage", f"the reference coverage {self.reference} must be "
                                                                "one of the swept coverages")

    @property
    def reference(self) -> float:
        """The coverage of the strength-precision correlation (and of the engine's own regions)."""
        return self.options.threshold.coverage


@dataclass(frozen=True, eq=False)
class Segment:
    """One scored region. kind: attributive, self_aware, deliberative, counterfactual; dim: V (deliberative),
    counter classes (counterfactual), 1 otherwise; side: query or exemplar; classes: the explained class first."""

    kind: str
    dim: int
    image_id: int
    side: str
    classes: tuple[int, ...]
    precision: np.ndarray
    recall: np.ndarray
    strength: np.ndarray
    inside: np.ndarray
    pair: int = -1  # counterfactual: index of its explanation, shared by its sides
    seen: np.ndarray | None = None  # (K,) parts visible in the crop of this side's image
    cells: np.ndarray | None = None  # (K,) flat working-grid cell of each part point, -1 where not seen (baselines)


@dataclass
class ProxyReport:
    """Everything the run measured; ``summary()`` is what the CLI writes as JSON."""

    settings: ProxySettings
    images: list[int]
    segments: list[Segment]
    failures: dict[int, str]
    cut: dict[int, float]
    student: str | None = None  # the student model's name when the simulated user is a second network

    def groups(self) -> list[tuple[str, int]]:
        return sorted({(s.kind, s.dim) for s in self.segments}, key=lambda g: (_KIND_ORDER.index(g[0]), g[1]))

    def curve(self, kind: str, dim: int, side: str | None = None) -> dict[str, list]:
        """Mean P and R per coverage over the segments of (kind, dim); a counterfactual's sides apart: ``side``
        "query" (the default for counterfactuals, as SCOUT scores them) or "exemplar"."""
        if side is None and kind == "counterfactual":
            side = "query"
        segs = [s for s in self.segments if s.kind == kind and s.dim == dim and (side is None or s.side == side)]
        p = np.array([s.precision for s in segs]).reshape(len(segs), -1)
        r = np.array([s.recall for s in segs]).reshape(len(segs), -1)
        return {"precision": _nanmean(p), "recall": _nanmean(r), "segments": len(segs),
                "precision_defined": (~np.isnan(p)).sum(0).tolist(), "recall_defined": (~np.isnan(r)).sum(0).tolist()}

    def piou(self, dim: int) -> list[float | None]:
        """Mean PIoU per coverage over every (query, exemplar side) pair of the counterfactuals with ``dim``; the
        authors' rules (``part_iou``): parts visible in both images only, NaN (left out) unless both regions
        hold one."""
        by_pair: dict[int, list[Segment]] = {}
        for s in self.segments:
            if s.kind == "counterfactual" and s.dim == dim:
                by_pair.setdefault(s.pair, []).append(s)
        rows = [part_iou(q.inside, e.inside, q.seen, e.seen) for segs in by_pair.values()
                for q in segs if q.side == "query" for e in segs if e.side == "exemplar"]
        return _nanmean(np.array(rows).reshape(len(rows), len(self.settings.coverages)))

    def correlation(self, kind: str, dim: int, estimator: str | None = None) -> dict[str, float | int | None]:
        """Table II: Pearson r between strength and precision. ``reference`` (default): one point per segment at
        the reference coverage; ``pooled``: one point per coverage level, (mean strength, mean precision) over the
        segments (our reading of the authors' pooling: the paper's (r, p) pairs imply 13-16 points). A
        counterfactual is one explanation: its strength is eq. (16)/(17) (the mean over its sides), against the
        precision of its query side."""
        estimator = estimator or self.settings.estimator
        segs = [s for s in self.segments if s.kind == kind and s.dim == dim]
        if kind == "counterfactual":
            pairs: dict[int, list[Segment]] = {}
            for s in segs:
                pairs.setdefault(s.pair, []).append(s)
            strength = np.array([np.mean([s.strength for s in ss], axis=0) for ss in pairs.values()])
            precision = np.array([next(s.precision for s in ss if s.side == "query") for ss in pairs.values()])
        else:
            strength = np.array([s.strength for s in segs])
            precision = np.array([s.precision for s in segs])
        L = len(self.settings.coverages)
        strength, precision = strength.reshape(-1, L), precision.reshape(-1, L)
        if estimator == "pooled":
            defined = ~np.isnan(precision)
            levels = defined.any(0)
            xs = [float(strength[defined[:, l], l].mean()) for l in np.flatnonzero(levels)]
            ys = [float(precision[defined[:, l], l].mean()) for l in np.flatnonzero(levels)]
        else:
            level = _level(self.settings)
            keep = ~np.isnan(precision[:, level])
            xs, ys = strength[keep, level].tolist(), precision[keep, level].tolist()
        r, p, n = pearson(xs, ys)
        return {"pearson": _num(r), "p_value": _num(p), "n": n, "estimator": estimator}

    def summary(self) -> dict:
        s = self.settings
        users = (f"student {self.student} (teacher right, student wrong; y* the true class)" if self.student
                 else s.counter_user.value)
        out = {"settings": {"attribution": s.options.attribution.value, "score": s.options.score.value,
                            "target": s.options.target.value, "clip_negative": s.options.clip_negative,
                            "normalize": s.options.normalize, "top_e": s.options.top_e, "dims": list(s.options.dims),
                            "counter_dims": list(s.counter_dims), "counter_user": users,
                            "attributive_classes": s.attributive_classes, "fraction": s.fraction,
                            "smoothing": s.smoothing, "split": s.split, "limit": s.limit, "hardest": s.hardest,
                            "reference_coverage": s.reference, "seed": s.seed, "part_mapping": s.part_mapping,
                            "estimator": s.estimator, "geometry": s.geometry,
                            "rules": {"precision without a visible ground-truth part": "NaN (authors' code)",
                                      "PIoU": "parts visible in both images; NaN unless both regions hold one "
                                              "(SCOUT)",
                                      "counterfactual P/R": "query side; exemplar side apart (SCOUT)"}},
               "images": len(self.images), "failures": {str(k): v for k, v in self.failures.items()},
               "ground_truth_cut": {str(v): c for v, c in self.cut.items()},
               "coverages": list(s.coverages), "curves": {}, "piou": {}, "strength_precision": {}}
        for kind, dim in self.groups():
            key = f"{kind}/{dim}"
            out["curves"][key] = self.curve(kind, dim)
            if kind in ("deliberative", "counterfactual"):
                out["strength_precision"][key] = self.correlation(kind, dim)
            if kind == "counterfactual":
                out["piou"][key] = self.piou(dim)
                out["curves"][f"{key}/exemplar"] = self.curve(kind, dim, "exemplar")
        return out


_KIND_ORDER = ["attributive", "self_aware", "deliberative", "counterfactual"]


def _level(settings: ProxySettings) -> int:
    return int(np.argmin([abs(c - settings.reference) for c in settings.coverages]))


def _nanmean(a: np.ndarray) -> list[float | None]:
    if a.size == 0:
        return [None] * (a.shape[1] if a.ndim == 2 else 0)
    defined = ~np.isnan(a)
    sums = np.where(defined, a, 0.0).sum(0)
    counts = defined.sum(0)
    return [float(v) if n else None for v, n in zip(sums / np.maximum(counts, 1), counts)]


def _num(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


class View:
    """The images as the protocol shows them to the engine, with their part points in the same pixels."""

    def __init__(self, cub: Cub, preprocess, geometry: str):
        if geometry == "resize" and preprocess.resize != preprocess.crop:
            side = preprocess.crop
            raise InvalidArgument("geometry", f"whole-image resize needs an engine that resizes to its crop side "
                                              f"(Preprocess(resize={side}, crop={side})), this one resizes to "
                                              f"{preprocess.resize} and crops {side}: build it so (the CLI does) or "
                                              "use geometry 'crop'")
        self.cub, self.side, self.geometry = cub, preprocess.crop, geometry
        self._sizes: dict[int, tuple[int, int]] = {}  # image id -> original (H, W)

    def image(self, image_id: int) -> torch.Tensor:
        """(3, H, W) uint8: the original ("crop") or the whole image resized to side x side ("resize")."""
        image = self.cub.image(image_id)
        self._sizes[image_id] = tuple(image.shape[1:])
        if self.geometry == "crop":
            return image
        import torchvision.transforms.v2.functional as TF
        return TF.resize(image, [self.side, self.side], antialias=True)

    def points(self, image_id: int) -> PartPoints:
        """Part points in the pixels of ``image(image_id)``."""
        points = self.cub.part_points[image_id]
        if self.geometry == "crop":
            return points
        if image_id not in self._sizes:
            self.image(image_id)
        h, w = self._sizes[image_id]
        return PartPoints(points.xy * np.array([self.side / w, self.side / h]), points.visible)


def select_images(cub: Cub, settings: ProxySettings) -> list[int]:
    ids = {"test": cub.test_ids, "train": cub.train_ids, "all": cub.image_ids}[settings.split]
    return list(ids[:settings.limit] if settings.limit else ids)


def run_protocol(engine, cub: Cub, settings: ProxySettings = ProxySettings(),
                 progress: Callable[[int], None] | None = None, student=None) -> ProxyReport:
    """Explains the selected images of ``cub`` with ``engine`` (a galore.Engine whose class i is CUB class i + 1)
    and scores every region. ``progress(n)`` is called after every n images explained.

    ``student``: a second Engine, the simulated user of §VI-B-2 as the authors ran it (SCOUT): only the images the
    student misclassifies and ``engine`` (the teacher) classifies correctly are explained, y* is then the true
    class and the counter classes are the student's most likely classes (its prediction first)."""
    from galore.engine import ImageRequest

    for name, model in (("model", engine), ("student", student)):
        if model is not None and len(model.labels) != cub.num_classes:
            raise InvalidArgument(name, f"the {name} has {len(model.labels)} classes, the dataset "
                                        f"{cub.num_classes}: class i of the model must be CUB class i + 1")
    if max(settings.counter_dims) >= cub.num_classes:
        raise InvalidArgument("counter_dims", f"{max(settings.counter_dims)} counter classes need more than "
                                              f"{cub.num_classes} classes")
    view = View(cub, engine.preprocess, settings.geometry)
    gt = GroundTruth.of(cub, settings.fraction, settings.smoothing, PART_MAPPINGS[settings.part_mapping],
                        seed=settings.seed)
    base = replace(settings.options, include_heatmaps=True)
    ids = select_images(cub, settings)
    failures: dict[int, str] = {}
    ranks = min(cub.num_classes, max(base.top_e, max(settings.counter_dims) + 1))
    top = _predict(engine, view, ids, replace(base, kinds=frozenset(), top_k=ranks), settings.batch_size, failures)
    ids = [i for i in ids if i in top]
    if student is not None:  # the teacher right, the student wrong
        guess = _predict(student, view, ids, replace(base, kinds=frozenset(), top_k=ranks), settings.batch_size,
                         failures)
        ids = [i for i in ids if i in guess and top[i][0][0] == cub.labels[i] != guess[i][0][0]]
        top = {i: (top[i][0], top[i][1], [c for c in guess[i][0] if c != cub.labels[i]]) for i in ids}
    if settings.hardest:
        ids = sorted(ids, key=lambda i: (top[i][1], i))[:settings.hardest]
    segments: list[Segment] = []
    pair = 0
    for start in range(0, len(ids), settings.batch_size):
        batch = ids[start:start + settings.batch_size]
        images = {i: view.image(i) for i in batch}
        for n, dim in enumerate(settings.counter_dims):
            kinds = frozenset(Kind) if n == 0 else frozenset({Kind.COUNTERFACTUAL})
            requests, exemplar_ids = [], []
            for i in batch:
                ranked = top[i][0]
                counters = (tuple(top[i][2][:dim]) if student is not None else
                            _counter_classes(ranked, dim, settings, cub.num_classes, i))
                chosen = {c: _exemplar_id(cub, c, settings.seed, i) for c in counters}
                exemplar_ids.append(chosen)
                deliberation = max(math.comb(base.top_e, v) for v in base.dims)
                opts = replace(base, kinds=kinds, counter_classes=counters, max_insecurities=deliberation)
                requests.append(ImageRequest(images[i], opts, {c: view.image(e) for c, e in chosen.items()},
                                             tag=f"cub image {i}"))
            for i, chosen, result in zip(batch, exemplar_ids, engine.explain(requests)):
                if not result.ok:
                    failures[i] = f"{result.error.code}: {result.error}"
                    continue
                pair = _score(engine, view, gt, settings, i, chosen, result, dim, segments, pair)
        if progress:
            progress(len(batch))
    return ProxyReport(settings, ids, segments, failures,
                       {v: gt.cut(v) for v in sorted({2, *base.dims} & set(range(2, cub.num_classes + 1)))},
                       None if student is None else student.name)


def _predict(engine, view: "View", ids, opts, batch_size, failures) -> dict[int, tuple[list[int], float]]:
    """image id -> (classes ranked by probability, s(x)) from a prediction-only pass with ``opts``."""
    from galore.engine import ImageRequest

    out = {}
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        for i, res in zip(batch, engine.explain([ImageRequest(view.image(i), opts) for i in batch])):
            if res.ok:
                out[i] = ([c.class_id for c in res.top_classes], res.score)
            else:
                failures[i] = f"{res.error.code}: {res.error}"
    return out


def _counter_classes(ranked: list[int], dim: int, settings: ProxySettings, num_classes: int,
                     image_id: int) -> tuple[int, ...]:
    if dim >= num_classes:
        raise InvalidArgument("counter_dims", f"{dim} counter classes need more than {num_classes} classes")
    if settings.counter_user is CounterUser.RUNNER_UP:
        if dim < len(ranked):
            return tuple(ranked[1:dim + 1])
    rng = np.random.default_rng([settings.seed, image_id, dim])
    others = [c for c in range(num_classes) if c != ranked[0]]
    return tuple(int(c) for c in rng.choice(others, size=dim, replace=False))


def _exemplar_id(cub: Cub, class_index: int, seed: int, image_id: int) -> int:
    """A random training image of the counter class (any image of it when it has no training image)."""
    pool = cub.ids_of_class(class_index, train=True) or cub.ids_of_class(class_index)
    if not pool:
        raise InvalidArgument("counter_classes", f"class {class_index + 1} has no image to serve as exemplar")
    return int(pool[np.random.default_rng([seed, image_id, class_index]).integers(len(pool))])


def _score(engine, view: "View", gt: GroundTruth, settings: ProxySettings, image_id: int, chosen: dict[int, int],
           result, dim: int, segments: list[Segment], pair: int) -> int:
    """Appends the scored segments of one result; returns the next counterfactual pair index."""
    wanted = coverage_counts(engine.grid.cells, settings.coverages)
    cub = view.cub
    points = view.points(image_id)

    def add(kind, d, side, classes, region, gt_parts, where: PartPoints, counts=wanted, values=None, pair_id=-1):
        values = working_values(engine.grid, region.heatmap) if values is None else values
        cells = part_cells(where, region.frame)
        sw = sweep(values, cells, counts)
        p, r = precision_recall(sw.inside, gt_parts, sw.seen)
        segments.append(Segment(kind, d, image_id, side, tuple(classes), p, r, sw.strength, sw.inside, pair_id,
                                sw.seen, cells))

    y = result.top_classes[0].class_id
    for kind, att in (("attributive", result.attributive), ("self_aware", result.self_aware)):
        if att is not None:
            rng = np.random.default_rng([settings.seed, image_id, 7])
            others = [c for c in range(cub.num_classes) if c != att.class_id]
            label_set = rng.choice(others, size=min(settings.attributive_classes, len(others)), replace=False)
            add(kind, 1, "query", (att.class_id, *map(int, label_set)), att.region,
                gt.discriminant_parts(att.class_id, label_set), points)
    for v, insecurities in result.deliberative.items():
        for ins in insecurities:
            add("deliberative", v, "query", ins.class_ids, ins.region, gt.insecure_parts(ins.class_ids), points)
    cf = result.counterfactual
    if cf is not None:
        counters = list(cf.counter_ids)
        sides = [s for s in cf.exemplars if s.region is not None]
        values = [working_values(engine.grid, r.heatmap) for r in [cf.query] + [s.region for s in sides]]
        counts = shared_counts(wanted, [int((v > 0).sum()) for v in values])
        add("counterfactual", dim, "query", (y, *counters), cf.query, gt.discriminant_parts(y, counters), points,
            counts[0], values[0], pair)
        for side, side_values, side_counts in zip(sides, values[1:], counts[1:]):
            rivals = [c for c in counters if c != side.class_id] + [y]
            add("counterfactual", dim, "exemplar", (side.class_id, *rivals), side.region,
                gt.discriminant_parts(side.class_id, rivals), view.points(chosen[side.class_id]), side_counts,
                side_values, pair)
        pair += 1
    return pair
