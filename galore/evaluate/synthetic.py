"""A part-annotated synthetic benchmark in the CUB-200-2011 layout: ground truth for the proxy protocol of GALORE
(TPAMI 2023 §VI-B) known by construction, in the spirit of FunnyBirds (Hesse et al., ICCV 2023).

Every image shows one "bird" made of CUB's 15 named parts (``PART_NAMES``: back, beak, ..., throat), each painted
from a table of part attributes (colour, pattern, shape; CUB's attribute group names, ``GROUPS``), on a cluttered
textured background, in varied pose (facing left or right, rotated), scale and position, and sometimes behind an
occluder. Per image, every attribute keeps its class value with probability 1 - ``attribute_noise`` (else another
value), and colours are jittered.

Classes come in families (``Design``): a family draws one base table; each of its classes changes the attributes of
``changed_types`` part types of the base (different types for different classes of the family). So two classes of
one family share every part they did not change (the ground-truth ambiguities) and differ in the parts either
changed (the ground-truth counterfactual regions); classes of different families share a part only by chance.
``ground_truth`` lists, for every class pair and triple, the parts shared by construction (every attribute group of
the part equal in all class tables) and the parts that differ.

The design (families, changed types, noise) is fixed before any explanation is measured and is never tuned to them
(EVALUATION.md, section 8). Output (``write_dataset``), ids 1-based as in CUB::

    images/<class folder>/<name>.jpg, images.txt, classes.txt, image_class_labels.txt, train_test_split.txt,
    parts/parts.txt, parts/part_locs.txt, attributes.txt, attributes/image_attribute_labels.txt,
    ground_truth.json (this module's side file), synthetic.json (the design and its parameters)

numpy and Pillow only. Deterministic: the same ``SyntheticConfig`` writes the same bytes.

Example::

    >>> d = design(SyntheticConfig(num_classes=4, family_size=2, seed=0))
    >>> d.table.shape, d.families
    ((4, 20), ((0, 1), (2, 3)))
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from itertools import combinations
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from galore.errors import InvalidArgument

# CUB-200-2011's parts, in its parts/parts.txt order (ids 1..15).
PART_NAMES = ("back", "beak", "belly", "breast", "crown", "forehead", "left eye", "left leg", "left wing", "nape",
              "right eye", "right leg", "right wing", "tail", "throat")
# The part type whose attributes paint a part: left and right eyes, legs and wings share theirs, as in CUB.
PART_TYPE = {name: name.split(" ")[-1] for name in PART_NAMES}
PART_TYPES = tuple(dict.fromkeys(PART_TYPE.values()))  # 12 types, in first-part order
COLORS: Mapping[str, tuple[int, int, int]] = {
    "black": (35, 35, 35), "white": (235, 235, 230), "red": (200, 40, 40), "yellow": (235, 210, 50),
    "blue": (45, 85, 205), "green": (50, 150, 60), "brown": (135, 85, 45), "grey": (130, 130, 135),
    "orange": (245, 140, 30), "purple": (130, 50, 155),
}
PATTERNS = ("solid", "spotted", "striped", "multi-colored")
SHAPES: Mapping[str, tuple[str, ...]] = {
    "has_bill_shape": ("cone", "needle", "hooked"),
    "has_wing_shape": ("rounded", "pointed", "broad"),
    "has_tail_shape": ("rounded", "forked", "pointed"),
}
# Attribute groups of each part type (CUB's names, so the protocol's default part mapping reads them unchanged).
TYPE_GROUPS: Mapping[str, tuple[str, ...]] = {
    "back": ("has_back_color", "has_back_pattern"),
    "beak": ("has_bill_color", "has_bill_shape"),
    "belly": ("has_belly_color", "has_belly_pattern"),
    "breast": ("has_breast_color", "has_breast_pattern"),
    "crown": ("has_crown_color",),
    "forehead": ("has_forehead_color",),
    "eye": ("has_eye_color",),
    "leg": ("has_leg_color",),
    "wing": ("has_wing_color", "has_wing_pattern", "has_wing_shape"),
    "nape": ("has_nape_color",),
    "tail": ("has_upper_tail_color", "has_tail_pattern", "has_tail_shape"),
    "throat": ("has_throat_color",),
}
GROUPS = tuple(g for t in PART_TYPES for g in TYPE_GROUPS[t])  # 20 groups


def group_values(group: str) -> tuple[str, ...]:
    """The values of an attribute group: colours, patterns or the group's shapes."""
    if group.endswith("_color"):
        return tuple(COLORS)
    if group.endswith("_pattern"):
        return PATTERNS
    return SHAPES[group]


@dataclass(frozen=True)
class SyntheticConfig:
    """num_classes = families x family_size; changed_types: part types each class changes from its family's base
    (family_size x changed_types <= 12); train_per_class / test_per_class images; size: image side in pixels
    (>= 224); attribute_noise: per-image probability that an attribute takes another value than its class's;
    occlusion: probability of an occluder; seed: everything (design and images)."""

    num_classes: int = 30
    family_size: int = 5
    changed_types: int = 2
    train_per_class: int = 60
    test_per_class: int = 20
    size: int = 224
    attribute_noise: float = 0.08
    occlusion: float = 0.4
    seed: int = 0

    def __post_init__(self):
        for name in ("num_classes", "family_size", "changed_types", "train_per_class", "test_per_class"):
            if getattr(self, name) < 1:
                raise InvalidArgument(name, f"must be >= 1, got {getattr(self, name)}")
        if self.num_classes < 2 or self.num_classes % self.family_size:
            raise InvalidArgument("num_classes", f"must be >= 2 and a multiple of family_size "
                                                 f"({self.family_size}), got {self.num_classes}")
        if self.family_size * self.changed_types > len(PART_TYPES):
            raise InvalidArgument("changed_types", f"family_size x changed_types must be <= {len(PART_TYPES)} part "
                                                   f"types, got {self.family_size} x {self.changed_types}")
        if self.size < 224:
            raise InvalidArgument("size", f"must be >= 224 pixels, got {self.size}")
        for name in ("attribute_noise", "occlusion"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise InvalidArgument(name, f"must be in [0, 1), got {getattr(self, name)}")


@dataclass(frozen=True, eq=False)
class Design:
    """table (C, G) int: class c's value index of attribute group GROUPS[g]; families: class indices of each
    family; changed: per class, the part types it changed from its family's base."""

    table: np.ndarray
    families: tuple[tuple[int, ...], ...]
    changed: tuple[tuple[str, ...], ...]

    @property
    def num_classes(self) -> int:
        return self.table.shape[0]

    def family_of(self, c: int) -> int:
        return next(f for f, members in enumerate(self.families) if c in members)

    def shared_parts(self, classes) -> np.ndarray:
        """(K,) bool over PART_NAMES: every attribute group of the part's type equal in all ``classes``' tables."""
        rows = self.table[list(classes)]  # (V, G)
        same_group = (rows == rows[0]).all(0)  # (G,)
        same_type = {t: all(same_group[GROUPS.index(g)] for g in TYPE_GROUPS[t]) for t in PART_TYPES}
        return np.array([same_type[PART_TYPE[p]] for p in PART_NAMES])


def design(config: SyntheticConfig) -> Design:
    """The class tables: per family a random base; class j of a family changes the part types
    perm[j * changed_types:(j + 1) * changed_types] of a family-wise random permutation, each of their groups to
    another value than the base's."""
    rng = np.random.default_rng([config.seed, 0])
    sizes = np.array([len(group_values(g)) for g in GROUPS])  # (G,)
    table, families, changed = [], [], []
    for f in range(config.num_classes // config.family_size):
        base = rng.integers(0, sizes)  # (G,)
        order = [PART_TYPES[i] for i in rng.permutation(len(PART_TYPES))]
        members = []
        for j in range(config.family_size):
            row = base.copy()
            types = tuple(sorted(order[j * config.changed_types:(j + 1) * config.changed_types]))
            for t in types:
                for g in TYPE_GROUPS[t]:
                    i = GROUPS.index(g)
                    row[i] = (base[i] + rng.integers(1, sizes[i])) % sizes[i]  # any value but the base's
            members.append(len(table))
            table.append(row)
            changed.append(types)
        families.append(tuple(members))
    return Design(np.array(table), tuple(families), tuple(changed))


def ground_truth(d: Design) -> dict:
    """The side file: for every class pair and triple (0-based class indices, as the model's outputs), the parts
    shared by construction and the parts that differ; with the families and each class's changed types."""
    tuples = {}
    for v in (2, 3):
        for classes in combinations(range(d.num_classes), v):
            shared = d.shared_parts(classes)
            tuples[",".join(map(str, classes))] = {
                "shared": [p for p, s in zip(PART_NAMES, shared) if s],
                "differ": [p for p, s in zip(PART_NAMES, shared) if not s],
                "same_family": len({d.family_of(c) for c in classes}) == 1,
            }
    return {"parts": list(PART_NAMES), "families": [list(f) for f in d.families],
            "changed_types": [list(t) for t in d.changed], "tuples": tuples}


# ---- rendering ----------------------------------------------------------------------------------------------------
CANVAS = 256  # side of the canonical frame the bird is drawn in, facing right
BODY = (112.0, 132.0, 56.0, 32.0)  # centre x, y, radii x, y
HEAD = (172.0, 96.0, 23.0)  # centre x, y, radius
# Drawing order (back to front); a part's annotation point is on its own visible pixels (see _anchor).
Z_ORDER = ("far wing", "far leg", "tail", "back", "belly", "breast", "near leg", "nape", "crown", "forehead",
           "throat", "beak", "near eye", "near wing")


def _polygon_mask(points) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (CANVAS, CANVAS), 0)
    ImageDraw.Draw(img).polygon([(float(x), float(y)) for x, y in points], fill=255)
    return np.asarray(img) > 0


def _ellipse(cx, cy, rx, ry, angle=0.0) -> np.ndarray:
    """(CANVAS, CANVAS) bool: inside the ellipse centred (cx, cy) with radii rx, ry rotated by angle (radians)."""
    y, x = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    c, s = math.cos(angle), math.sin(angle)
    u, v = (x - cx) * c + (y - cy) * s, -(x - cx) * s + (y - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


@lru_cache(maxsize=None)
def _shapes(bill: str, wing: str, tail: str) -> dict[str, np.ndarray]:
    """The geometric mask of each drawn part in the canonical frame (before overlaps); cached, never modified."""
    cx, cy, rx, ry = BODY
    hx, hy, hr = HEAD
    y, x = np.mgrid[0:CANVAS, 0:CANVAS] + 0.5
    body = _ellipse(cx, cy, rx, ry)
    head = _ellipse(hx, hy, hr, hr)
    breast = body & (x > cx + 12) & (y > cy - 14)
    belly = body & ~breast & (y > cy + 8)
    neck = _polygon_mask([(hx - 18, hy + 6), (hx + 6, hy + 18), (cx + 50, cy - 2), (cx + 28, cy - 26)])
    beak = {"cone": [(hx + 19, hy - 8), (hx + 19, hy + 5), (hx + 40, hy - 1)],
            "needle": [(hx + 19, hy - 5), (hx + 19, hy + 2), (hx + 54, hy - 1)],
            "hooked": [(hx + 19, hy - 9), (hx + 36, hy - 7), (hx + 42, hy + 5), (hx + 34, hy + 1), (hx + 19, hy + 5)],
            }[bill]

    def wing_mask(dx, dy):
        if wing == "pointed":
            return _polygon_mask([(cx + 24 + dx, cy - 16 + dy), (cx + 22 + dx, cy + 8 + dy),
                                  (cx - 62 + dx, cy + 8 + dy)])
        rx_, ry_ = (38, 16) if wing == "rounded" else (44, 23)
        return _ellipse(cx - 10 + dx, cy - 2 + dy, rx_, ry_, -0.12)

    tx, ty = cx - 50, cy - 6  # where the tail meets the body
    tail_points = {"rounded": [(tx + 4, ty - 9), (tx - 30, ty - 16), (tx - 50, ty - 2), (tx - 50, ty + 10),
                               (tx - 30, ty + 22), (tx + 4, ty + 11)],
                   "forked": [(tx + 4, ty - 8), (tx - 52, ty - 22), (tx - 30, ty + 2), (tx - 52, ty + 26),
                              (tx + 4, ty + 10)],
                   "pointed": [(tx + 4, ty - 9), (tx - 58, ty + 2), (tx + 4, ty + 11)]}[tail]

    def leg(x0, x1):
        return _polygon_mask([(x0 - 3, cy + 22), (x0 + 3, cy + 22), (x1 + 3, cy + 66), (x1 + 12, cy + 68),
                              (x1 + 12, cy + 72), (x1 - 3, cy + 72)])

    return {
        "far wing": wing_mask(-4, -15), "far leg": leg(cx - 14, cx - 20), "tail": _polygon_mask(tail_points),
        "back": body & ~breast & ~belly, "belly": belly, "breast": breast, "near leg": leg(cx + 4, cx + 2),
        "nape": head | neck, "crown": head & (y < hy - 10), "forehead": head & (x > hx + 8) & (y < hy - 2) & (
            y >= hy - 10), "throat": head & (y > hy + 8) & (x > hx - 8), "beak": _polygon_mask(beak),
        "near eye": _ellipse(hx + 7, hy - 3, 5, 5), "near wing": wing_mask(0, 0),
    }


def _drawn_to_part(facing_right: bool) -> dict[str, str]:
    """Which CUB part each drawn shape is: facing right, the bird shows its right side (near = right)."""
    near, far = ("right", "left") if facing_right else ("left", "right")
    out = {n: n for n in Z_ORDER if not n.startswith(("near", "far"))}
    for kind in ("wing", "leg", "eye"):
        out[f"near {kind}"] = f"{near} {kind}"
        out[f"far {kind}"] = f"{far} {kind}"
    return out


def _jitter(rgb, rng) -> np.ndarray:
    """A colour as painted in one image: brightness x U(0.85, 1.15) + N(0, 8) per channel."""
    return np.clip(np.asarray(rgb, float) * rng.uniform(0.85, 1.15) + rng.normal(0, 8, 3), 0, 255)


def _fill(mask: np.ndarray, color: np.ndarray, pattern: str, rng) -> np.ndarray:
    """(N, 3) paint of one part's N mask pixels (np.nonzero order): its colour with the pattern's marks (dark
    stripes, dark spots, or a light lower half for multi-coloured)."""
    ys, xs = np.nonzero(mask)  # (N,)
    paint = np.broadcast_to(color, (len(ys), 3)).copy()
    if not len(ys):
        return paint
    if pattern == "striped":
        marks = ((xs + ys + int(rng.integers(0, 8))) // 4) % 2 == 0
    elif pattern == "spotted":
        centres = rng.integers(0, len(ys), size=max(3, len(ys) // 60))
        marks = ((xs[:, None] - xs[centres]) ** 2 + (ys[:, None] - ys[centres]) ** 2 <= 5).any(1)
    elif pattern == "multi-colored":
        lower = ys > ys.mean()
        paint[lower] = 0.4 * color + 0.6 * np.array([250.0, 250, 240])
        return paint
    else:
        return paint
    paint[marks] = color * 0.35
    return paint


def _anchor(mask: np.ndarray) -> tuple[float, float] | None:
    """The part's annotation point: the visible pixel nearest its visible pixels' centroid, or None."""
    ys, xs = np.nonzero(mask)
    if not len(ys):
        return None
    i = int(np.argmin((xs - xs.mean()) ** 2 + (ys - ys.mean()) ** 2))
    return float(xs[i]) + 0.5, float(ys[i]) + 0.5


def _background(size: int, rng) -> np.ndarray:
    """(size, size, 3) float: low-frequency coloured noise, fine grain, and 12-30 clutter shapes (ellipses, bars,
    branches) in colours drawn from the same palette as the birds."""
    from PIL import Image, ImageDraw

    coarse = rng.uniform(40, 200, size=(6, 6, 3)).astype(np.uint8)
    base = np.asarray(Image.fromarray(coarse).resize((size, size), Image.BICUBIC), float)
    img = Image.fromarray(np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    palette = list(COLORS.values())
    for _ in range(int(rng.integers(12, 31))):
        color = tuple(int(c) for c in _jitter(palette[int(rng.integers(len(palette)))], rng) * 0.8)
        x, y = rng.uniform(0, size, 2)
        w, h = rng.uniform(4, size / 6, 2)
        kind = rng.integers(3)
        if kind == 0:
            draw.ellipse([x - w, y - h / 2, x + w, y + h / 2], fill=color)
        elif kind == 1:
            draw.rectangle([x - w / 3, y - h, x + w / 3, y + h], fill=color)
        else:
            x2, y2 = rng.uniform(0, size, 2)
            draw.line([(x, y), (x2, y2)], fill=color, width=int(rng.integers(2, 7)))
    return np.asarray(img, float)


@dataclass(frozen=True)
class Pose:
    """Where the canonical bird goes: facing right (else mirrored), rotated by angle (degrees, about the canonical
    centre), scaled by scale (image pixels per canonical pixel), its canonical centre at ``centre`` (x, y)."""

    facing_right: bool
    angle: float
    scale: float
    centre: tuple[float, float]


@dataclass(frozen=True, eq=False)
class Sample:
    """One rendered image: rgb (S, S, 3) uint8; points (K, 2) x, y in its pixels and visible (K,) bool, in
    PART_NAMES order; values (G,) the attribute values painted (indices into group_values)."""

    rgb: np.ndarray
    points: np.ndarray
    visible: np.ndarray
    values: np.ndarray


def render(d: Design, c: int, config: SyntheticConfig, image_seed: int, pose: Pose | None = None) -> Sample:
    """Renders one image of class ``c``: per-image attribute noise, pose, background, occluder (module docstring).
    ``pose``: instead of the random one (the random draws still happen, so everything else stays the same)."""
    from PIL import Image

    rng = np.random.default_rng([config.seed, 1, image_seed])
    values = d.table[c].copy()
    for g, group in enumerate(GROUPS):
        n = len(group_values(group))
        if rng.random() < config.attribute_noise:
            values[g] = (values[g] + rng.integers(1, n)) % n
    value = {group: group_values(group)[values[g]] for g, group in enumerate(GROUPS)}
    shapes = _shapes(value["has_bill_shape"], value["has_wing_shape"], value["has_tail_shape"])
    facing_right = bool(rng.random() < 0.5) if pose is None else pose.facing_right
    names = _drawn_to_part(facing_right)
    canvas = np.zeros((CANVAS, CANVAS, 3))
    owner = np.full((CANVAS, CANVAS), -1)  # index into Z_ORDER of the shape on top
    for z, drawn in enumerate(Z_ORDER):
        t = PART_TYPE[names[drawn]]
        color_group = next(g for g in TYPE_GROUPS[t] if g.endswith("_color"))
        pattern_group = next((g for g in TYPE_GROUPS[t] if g.endswith("_pattern")), None)
        mask = shapes[drawn]
        color = _jitter(COLORS[value[color_group]], rng)
        paint = _fill(mask, color, value[pattern_group] if pattern_group else "solid", rng)
        canvas[mask] = paint
        owner[mask] = z
        if drawn == "near eye":  # pupil, painted as part of the eye
            pupil = _ellipse(HEAD[0] + 9, HEAD[1] - 4, 1.5, 1.5)
            canvas[pupil] = 20
    anchors = {names[drawn]: _anchor(owner == z) for z, drawn in enumerate(Z_ORDER)}
    # canonical -> image: mirror, rotate about the canvas centre, scale, translate
    size = config.size
    angle = math.radians(rng.uniform(-25, 25))
    scale = rng.uniform(0.6, 1.0) * size / CANVAS
    centre = rng.uniform(0.4 * size, 0.6 * size, 2)
    if pose is not None:
        angle, scale, centre = math.radians(pose.angle), pose.scale, np.array(pose.centre, float)
    flip = 1.0 if facing_right else -1.0
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    forward = np.array([[cos * flip, -sin], [sin * flip, cos]])  # (2, 2): canonical offset -> image offset
    half = CANVAS / 2
    inverse = np.linalg.inv(forward)
    offset = np.array([half, half]) - inverse @ centre
    layer = Image.fromarray(np.dstack([canvas, (owner >= 0) * 255.0]).astype(np.uint8), "RGBA")
    layer = layer.transform((size, size), Image.AFFINE, (*inverse[0], offset[0], *inverse[1], offset[1]),
                            resample=Image.BILINEAR)
    bird = np.asarray(layer, float)
    alpha = bird[..., 3:] / 255.0
    image = _background(size, rng) * (1 - alpha) + bird[..., :3] * alpha
    occluded = np.zeros((size, size), bool)
    if rng.random() < config.occlusion:  # a leafy occluder over 10-30 % of the bird's box
        ys, xs = np.nonzero(alpha[..., 0] > 0.5)
        area = rng.uniform(0.1, 0.3) * (np.ptp(xs) + 1) * (np.ptp(ys) + 1)
        w = math.sqrt(area * rng.uniform(0.5, 2.0))
        h = area / w
        ox, oy = rng.uniform(xs.min(), xs.max()), rng.uniform(ys.min(), ys.max())
        yy, xx = np.mgrid[0:size, 0:size] + 0.5
        occluded = ((xx - ox) / (w / 2)) ** 2 + ((yy - oy) / (h / 2)) ** 2 <= 1.0
        leaf = _jitter(COLORS["green"] if rng.random() < 0.5 else COLORS["brown"], rng)
        image[occluded] = leaf * (0.8 + 0.2 * ((xx[occluded] + yy[occluded]) // 5 % 2))[:, None]
    points = np.zeros((len(PART_NAMES), 2))
    visible = np.zeros(len(PART_NAMES), bool)
    for k, part in enumerate(PART_NAMES):
        a = anchors.get(part)
        if a is None:  # the far eye is never drawn; a hidden far wing has no pixel on top
            continue
        xy = forward @ (np.array(a) - half) + centre
        inside = 0 <= xy[0] < size and 0 <= xy[1] < size
        if inside and not occluded[int(xy[1]), int(xy[0])]:
            points[k], visible[k] = xy, True
    return Sample(np.clip(image, 0, 255).astype(np.uint8), points, visible, values)


# ---- the CUB layout -------------------------------------------------------------------------------------------------
def write_dataset(config: SyntheticConfig, root: str | Path,
                  progress: Callable[[int], None] | None = None) -> Design:
    """Renders every image of ``config`` and writes the CUB-200-2011 layout under ``root`` (module docstring).
    Per class, the first train_per_class images (by id) are training images. ``progress(1)`` after each image."""
    from PIL import Image

    root = Path(root)
    d = design(config)
    names = [f"{c + 1:03d}.Synth_F{d.family_of(c) + 1}_{d.families[d.family_of(c)].index(c) + 1}"
             for c in range(d.num_classes)]
    (root / "parts").mkdir(parents=True, exist_ok=True)
    (root / "attributes").mkdir(parents=True, exist_ok=True)
    attributes = [(g, v) for g in GROUPS for v in group_values(g)]
    first = {g: next(i for i, (h, _) in enumerate(attributes) if h == g) for g in GROUPS}  # 0-based column
    images, labels, split, locs, attr = [], [], [], [], []
    per_class = config.train_per_class + config.test_per_class
    image_id = 0
    for c in range(d.num_classes):
        folder = root / "images" / names[c]
        folder.mkdir(parents=True, exist_ok=True)
        for n in range(per_class):
            image_id += 1
            sample = render(d, c, config, image_id)
            path = f"{names[c]}/{names[c].split('.', 1)[1]}_{n + 1:04d}.jpg"
            Image.fromarray(sample.rgb).save(root / "images" / path, quality=92)
            images.append(f"{image_id} {path}")
            labels.append(f"{image_id} {c + 1}")
            split.append(f"{image_id} {int(n < config.train_per_class)}")
            for k in range(len(PART_NAMES)):
                x, y = sample.points[k]
                locs.append(f"{image_id} {k + 1} {x:.1f} {y:.1f} {int(sample.visible[k])}")
            present = {first[g] + int(sample.values[i]) for i, g in enumerate(GROUPS)}
            attr.extend(f"{image_id} {a + 1} {int(a in present)} 4 0.0" for a in range(len(attributes)))
            if progress:
                progress(1)

    def lines(path: Path, rows) -> None:
        path.write_text("".join(f"{r}\n" for r in rows), encoding="utf-8")

    lines(root / "images.txt", images)
    lines(root / "image_class_labels.txt", labels)
    lines(root / "train_test_split.txt", split)
    lines(root / "classes.txt", (f"{c + 1} {n}" for c, n in enumerate(names)))
    lines(root / "parts" / "parts.txt", (f"{k + 1} {p}" for k, p in enumerate(PART_NAMES)))
    lines(root / "parts" / "part_locs.txt", locs)
    lines(root / "attributes.txt", (f"{a + 1} {g}::{v}" for a, (g, v) in enumerate(attributes)))
    lines(root / "attributes" / "image_attribute_labels.txt", attr)
    (root / "ground_truth.json").write_text(json.dumps(ground_truth(d)) + "\n", encoding="utf-8")
    (root / "synthetic.json").write_text(json.dumps({"config": asdict(config), "class_names": names,
                                                     "table": d.table.tolist()}, indent=1) + "\n", encoding="utf-8")
    return d
