"""What every faithfulness metric shares: settings to compare, photos, the model as a scorer, maps for fixed
classes, baselines, pixel orders and rank statistics. Pure torch + numpy.

Everything happens on the model's input, the (3, S, S) normalised centre crop: a map of the feature grid (h, w)
is upsampled to S x S with the engine's own bilinear rule (``regions.WorkingGrid``), and a region's working-grid
cells are resized to S x S pixels, so "removing a region" removes exactly the pixels the model saw there.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ..combiner import combine
from ..kinds import TABLE_I
from ..errors import InvalidArgument
from ..pixels import IMAGE_SUFFIXES, to_rgb
from ..exemplars import Features
from ..model import SplitModel
from ..options import Attribution, ExplainOptions, Kind, Score, Target
from ..preprocess import Preprocess
from ..regions import WorkingGrid
from ..rows import Row, RowMaps, attribute_rows, group_of

SAMPLE_PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera")  # skimage.data photos shipped in its wheel
BATCH = 16  # perturbed inputs per forward


class Baseline(enum.Enum):
    """What replaces removed pixels (RISE, Petsiuk et al. 2018): a blurred copy or the image's mean colour."""

    BLUR = "blur"
    MEAN = "mean"


BLUR_KERNEL, BLUR_SIGMA = 11, 5.0  # RISE's insertion blur, at 224 px


@dataclass(frozen=True)
class Setting:
    """A named attribution setting: the ExplainOptions fields that change maps (``rows.group_of``)."""

    name: str
    options: ExplainOptions

    @staticmethod
    def of(attribution: Attribution = Attribution.GRADIENT_X_ACTIVATION, target: Target = Target.LOGIT,
           clip_negative: bool = True, normalize: bool = False, score: Score = Score.SOFTMAX,
           ig_steps: int = 50) -> "Setting":
        options = ExplainOptions(attribution=attribution, target=target, clip_negative=clip_negative,
                                 normalize=normalize, score=score, ig_steps=ig_steps)
        return Setting(setting_name(options), options)

    def with_kinds(self, *kinds: Kind, **changes) -> ExplainOptions:
        return replace(self.options, kinds=frozenset(kinds), **changes)


def setting_name(o: ExplainOptions) -> str:
    """e.g. 'gradient_x_activation/logit/clip/softmax' or '.../probability/minmax/softmax'."""
    post = "+".join(p for p, on in (("clip", o.clip_negative), ("minmax", o.normalize)) if on) or "raw"
    return f"{o.attribution.value}/{o.target.value}/{post}/{o.score.value}"


DEFAULT_SETTING = Setting(setting_name(ExplainOptions()), ExplainOptions())


@dataclass(frozen=True)
class Photo:
    name: str
    image: torch.Tensor  # (3, H, W) uint8 RGB


def sample_photos(names: Sequence[str] = SAMPLE_PHOTOS) -> list[Photo]:
    """Real photos from scikit-image's wheel (no download)."""
    from skimage import data
    return [Photo(n, rgb_tensor(getattr(data, n)())) for n in names]


def folder_photos(folder: str | Path, limit: int | None = None) -> list[Photo]:
    """Every image file of ``folder`` (sorted by name), as RGB; InvalidArgument for a missing or empty folder."""
    from PIL import Image

    path = Path(folder)
    if not path.is_dir():
        raise InvalidArgument("photos", f"{str(path)!r} is not a folder")
    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)[:limit]
    if not files:
        raise InvalidArgument("photos", f"no image files ({', '.join(IMAGE_SUFFIXES)}) in {str(path)!r}")
    photos = []
    for f in files:
        try:
            with Image.open(f) as im:
                photos.append(Photo(f.stem, rgb_tensor(np.asarray(to_rgb(im, "photos")))))
        except (OSError, InvalidArgument) as exc:
            raise InvalidArgument("photos", f"cannot read {str(f)!r}: {getattr(exc, 'message', exc)}") from exc
    return photos


def rgb_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W[, C]) uint8 array -> (3, H, W) uint8 tensor (gray repeated, alpha dropped)."""
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()


class Scorer:
    """The classifier as the metrics see it: photo -> network input x (3, S, S); inputs -> logits, no autograd."""

    def __init__(self, split: SplitModel, preprocess: Preprocess, hardness: SplitModel | None = None):
        self.split, self.preprocess, self.hardness = split, preprocess, hardness
        self.side = preprocess.crop
        self.device = next(split.head.parameters(), torch.zeros(0, device="cpu")).device

    @classmethod
    def of(cls, engine) -> "Scorer":
        return cls(engine.split, engine.preprocess, engine.hardness)

    def input(self, image: torch.Tensor) -> torch.Tensor:
        return self.preprocess(image)[0].to(self.device)

    @torch.no_grad()
    def logits(self, xs: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) -> (N, C) float32 on the CPU, in chunks of BATCH."""
        out = [self.split.head(self.split.backbone(xs[i:i + BATCH].to(self.device))).float().cpu()
               for i in range(0, len(xs), BATCH)]
        return torch.cat(out)

    def maps(self, x: torch.Tensor, classes: Sequence[int], options: ExplainOptions) -> RowMaps:
        """The engine's post-processed maps of ``classes`` for input x under ``options`` (same code path as
        Engine.explain: ``rows.attribute_rows``): class maps, a(s) and a(1 - s), on the feature grid."""
        with torch.no_grad():
            F = self.split.backbone(x[None].to(self.device)).float()
            Fs = self.hardness.backbone(x[None].to(self.device)).float() if self.hardness is not None else None
        if options.score is Score.EASINESS and Fs is None:
            raise InvalidArgument("options.score", "easiness needs a hardness predictor")
        feats = Features(F[0], None if Fs is None else Fs[0], None)
        group = group_of(options)
        out = attribute_rows(self.split, self.hardness, {group: {id(feats): Row(feats).need(classes)}}, None)
        return out[id(feats)][group]

    def upsample(self, maps: torch.Tensor) -> torch.Tensor:
        """Feature-grid maps (M, h, w) -> (M, S, S), the engine's bilinear rule."""
        return WorkingGrid(self.side, self.side).upsample(maps.detach().float().cpu())

    def pixels(self, cells: np.ndarray | torch.Tensor) -> torch.Tensor:
        """A region's working-grid cells (G, G) -> (S, S) bool mask of the crop's pixels."""
        cells = torch.as_tensor(np.asarray(cells), dtype=torch.float32, device="cpu")
        if cells.shape[-1] == self.side:
            return cells.bool()
        return torch.nn.functional.interpolate(cells[None, None], size=(self.side, self.side),
                                               mode="nearest")[0, 0].bool()


def kind_map(maps: RowMaps, kind: Kind, classes: Sequence[int]) -> torch.Tensor:
    """Eq. (2) with Table I for fixed classes: attributive / self-aware (y,), deliberative (a, b, ...),
    counterfactual (y*, c1, ...) -> (h, w)."""
    recipe = TABLE_I[kind]
    if kind is Kind.DELIBERATIVE:
        return combine(recipe, None, maps.of(classes), maps.score, maps.inverse_score)
    pred = maps.of(classes[:1])[0]
    rest = maps.of(classes[1:]) if kind is Kind.COUNTERFACTUAL else None
    return combine(recipe, pred, rest, maps.score, maps.inverse_score)


def baseline(x: torch.Tensor, kind: Baseline) -> torch.Tensor:
    """What removed pixels of x (3, S, S) become."""
    if kind is Baseline.MEAN:
        return x.mean(dim=(1, 2), keepdim=True).expand_as(x).clone()
    from torchvision.transforms.functional import gaussian_blur
    return gaussian_blur(x[None], [BLUR_KERNEL, BLUR_KERNEL], [BLUR_SIGMA, BLUR_SIGMA])[0]


def replaced(x: torch.Tensor, base: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """x with the pixels of each mask (M, S, S) bool taken from ``base``: (M, 3, S, S)."""
    m = masks[:, None].to(x.device, x.dtype)
    return x[None] * (1 - m) + base[None] * m


def pixel_order(values: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Pixel indices of an (S, S) map, highest value first; ties in random order (seeded)."""
    flat = values.flatten()
    perm = torch.randperm(flat.numel(), generator=generator, device="cpu")
    return perm[torch.argsort(flat[perm], descending=True, stable=True)]


def top_mask(values: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """The k highest pixels of an (S, S) map as a bool mask (ties broken at random, seeded)."""
    mask = torch.zeros(values.numel(), dtype=torch.bool, device="cpu")
    mask[pixel_order(values, generator)[:k]] = True
    return mask.view(values.shape)


def random_maps(n: int, grid: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """(n, h, w) uniform noise on the feature grid: once upsampled, random blobs of the maps' own smoothness."""
    return torch.rand((n,) + tuple(grid), generator=generator, device="cpu")


def seeded(*parts: object) -> torch.Generator:
    """A generator seeded from ``parts`` (e.g. the photo name and the metric), reproducible across runs."""
    import zlib
    return torch.Generator().manual_seed(zlib.crc32(repr(parts).encode()))


def ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties sharing their average rank."""
    values = np.asarray(values, dtype=np.float64).ravel()
    order = np.argsort(values, kind="stable")
    sorted_values = values[order]
    starts = np.r_[True, sorted_values[1:] != sorted_values[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    counts = np.diff(np.r_[first, len(values)])
    average = first + (counts + 1) / 2.0
    out = np.empty(len(values))
    out[order] = average[group]
    return out


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation; NaN when either side is constant or has fewer than 2 values."""
    a, b = np.asarray(a, dtype=np.float64).ravel(), np.asarray(b, dtype=np.float64).ravel()
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (Pearson of average ranks); NaN when undefined."""
    return pearson(ranks(a), ranks(b))


def mean(values: Sequence[float]) -> float:
    finite = [v for v in values if np.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


Progress = Callable[[str], None]


def quiet(_: str) -> None:
    """A progress callback that says nothing."""
