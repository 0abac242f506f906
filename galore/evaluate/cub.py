"""Reading a dataset in the CUB-200-2011 layout (Wah et al. 2011): images, labels, split, part points, attributes.

Files read, relative to the dataset root (ids are 1-based in every file, as in CUB):
    images.txt                              <image_id> <relative path under images/>
    image_class_labels.txt                  <image_id> <class_id>
    train_test_split.txt                    <image_id> <is_training_image 0|1>
    parts/parts.txt                         <part_id> <part name>            (names the K parts)
    parts/part_locs.txt                     <image_id> <part_id> <x> <y> <visible 0|1>   (original pixels)
    attributes.txt                          <attribute_id> <group>::<value>, e.g. has_bill_shape::hooked
        (also read from attributes/attributes.txt, or next to the root, where the CUB archive unpacks it)
    attributes/image_attribute_labels.txt   <image_id> <attribute_id> <is_present 0|1> ...   (extra columns ignored)
    classes.txt                             <class_id> <name>   (optional: class names for reports)

A malformed file raises ``CubFormatError`` naming the file and line. numpy, torch and Pillow only.

Example (needs the dataset, so it is not a doctest; tests/evaluate_proxy builds a small layout)::

    cub = read_cub("CUB_200_2011")
    cub.num_classes, cub.parts[:2], cub.test_ids[:3]    # (200, ('back', 'beak'), (2, 3, 5))
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from galore.errors import InvalidArgument

GROUP_SEPARATOR = "::"


class CubFormatError(InvalidArgument):
    """A dataset file is missing or malformed; ``field`` names the file (and line)."""


@dataclass(frozen=True, eq=False)
class PartPoints:
    """The part points of one image: xy (K, 2) float original-pixel coordinates, visible (K,) bool."""

    xy: np.ndarray
    visible: np.ndarray


@dataclass(frozen=True, eq=False)
class Cub:
    """One dataset in the CUB-200-2011 layout. Classes are 0-based indices (CUB id - 1), the model's outputs.

    attribute_present: (n_images, n_attributes) bool, row i for ``image_ids[i]``; attribute_groups[a] and
    attribute_values[a] split attribute a's name at '::'.
    """

    root: Path
    image_ids: tuple[int, ...]
    paths: dict[int, str]
    labels: dict[int, int]
    is_train: dict[int, bool]
    parts: tuple[str, ...]
    part_points: dict[int, PartPoints]
    attribute_groups: tuple[str, ...]
    attribute_values: tuple[str, ...]
    attribute_present: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def train_ids(self) -> tuple[int, ...]:
        return tuple(i for i in self.image_ids if self.is_train[i])

    @property
    def test_ids(self) -> tuple[int, ...]:
        return tuple(i for i in self.image_ids if not self.is_train[i])

    def ids_of_class(self, class_index: int, train: bool | None = None) -> tuple[int, ...]:
        return tuple(i for i in self.image_ids
                     if self.labels[i] == class_index and (train is None or self.is_train[i] == train))

    def image(self, image_id: int) -> torch.Tensor:
        """(3, H, W) uint8 RGB of ``image_id``, decoded at full size (part points are in these pixels)."""
        from PIL import Image, UnidentifiedImageError

        from ..pixels import to_rgb

        path = self.root / "images" / self.paths[image_id]
        if not path.is_file():
            raise CubFormatError("images.txt", f"image {image_id}: {path} does not exist")
        try:
            with Image.open(path) as img:
                rgb = np.asarray(to_rgb(img))
        except (OSError, UnidentifiedImageError, InvalidArgument) as exc:
            raise CubFormatError("images.txt", f"image {image_id}: {path} cannot be decoded ({exc})") from None
        return torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous()


def _rows(path: Path, columns: int, name: str) -> Iterator[tuple[int, list[str]]]:
    """(line number, the first ``columns`` whitespace-separated fields) of each non-empty line, streamed."""
    if not path.is_file():
        raise CubFormatError(name, f"{path} does not exist")
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            fields = line.split(maxsplit=columns - 1) if columns == 2 else line.split()
            if not fields:
                continue
            if len(fields) < columns:
                raise CubFormatError(f"{name}:{number}", f"expected {columns} fields, got {len(fields)}")
            yield number, fields[:columns]


def _int(text: str, where: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise CubFormatError(where, f"expected an integer, got {text!r}") from None


def _float(text: str, where: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise CubFormatError(where, f"expected a number, got {text!r}") from None


def _id_map(path: Path, name: str) -> dict[int, str]:
    return {_int(f[0], f"{name}:{n}"): f[1].strip() for n, f in _rows(path, 2, name)}


def read_cub(root: str | Path) -> Cub:
    """Reads the annotation files of a CUB-layout dataset at ``root`` (images are decoded on demand)."""
    root = Path(root)
    if not root.is_dir():
        raise CubFormatError("root", f"{root} is not a folder")
    paths = _id_map(root / "images.txt", "images.txt")
    image_ids = tuple(sorted(paths))
    if not image_ids:
        raise CubFormatError("images.txt", "no images listed")
    raw_labels = {k: _int(v, f"image_class_labels.txt (image {k})")
                  for k, v in _id_map(root / "image_class_labels.txt", "image_class_labels.txt").items()}
    split = {k: _int(v, f"train_test_split.txt (image {k})")
             for k, v in _id_map(root / "train_test_split.txt", "train_test_split.txt").items()}
    for name, table in (("image_class_labels.txt", raw_labels), ("train_test_split.txt", split)):
        missing = [i for i in image_ids if i not in table]
        if missing:
            raise CubFormatError(name, f"no entry for image {missing[0]} ({len(missing)} missing)")
    if any(v < 1 for v in raw_labels.values()):
        raise CubFormatError("image_class_labels.txt", "class ids start at 1")
    parts = _id_map(root / "parts" / "parts.txt", "parts/parts.txt")
    if sorted(parts) != list(range(1, len(parts) + 1)):
        raise CubFormatError("parts/parts.txt", "part ids must be 1..K")
    part_names = tuple(parts[k] for k in range(1, len(parts) + 1))
    points = _part_points(root / "parts" / "part_locs.txt", image_ids, len(part_names))
    candidates = [root / "attributes.txt", root / "attributes" / "attributes.txt", root.parent / "attributes.txt"]
    attributes_file = next((c for c in candidates if c.is_file()), candidates[0])
    attributes = _id_map(attributes_file, "attributes.txt")
    if sorted(attributes) != list(range(1, len(attributes) + 1)):
        raise CubFormatError("attributes.txt", "attribute ids must be 1..A")
    groups, values = [], []
    for a in range(1, len(attributes) + 1):
        group, sep, value = attributes[a].partition(GROUP_SEPARATOR)
        if not sep or not group or not value:
            raise CubFormatError("attributes.txt", f"attribute {a} {attributes[a]!r} is not <group>::<value>")
        groups.append(group)
        values.append(value)
    present = _attribute_labels(root / "attributes" / "image_attribute_labels.txt", image_ids, len(groups))
    num_classes = max(raw_labels.values())
    names = [str(c) for c in range(1, num_classes + 1)]
    if (root / "classes.txt").is_file():
        for cid, name in _id_map(root / "classes.txt", "classes.txt").items():
            if 1 <= cid <= num_classes:
                names[cid - 1] = name
    return Cub(root, image_ids, paths, {i: raw_labels[i] - 1 for i in image_ids},
               {i: split[i] == 1 for i in image_ids}, part_names, points, tuple(groups), tuple(values), present,
               tuple(names))


def _part_points(path: Path, image_ids: tuple[int, ...], num_parts: int) -> dict[int, PartPoints]:
    name = "parts/part_locs.txt"
    xy = {i: np.zeros((num_parts, 2)) for i in image_ids}
    visible = {i: np.zeros(num_parts, dtype=bool) for i in image_ids}
    for number, f in _rows(path, 5, name):
        where = f"{name}:{number}"
        image, part = _int(f[0], where), _int(f[1], where)
        if image not in xy:
            raise CubFormatError(where, f"unknown image id {image}")
        if not 1 <= part <= num_parts:
            raise CubFormatError(where, f"part id {part} out of range [1, {num_parts}]")
        xy[image][part - 1] = (_float(f[2], where), _float(f[3], where))
        visible[image][part - 1] = _int(f[4], where) == 1
    return {i: PartPoints(xy[i], visible[i]) for i in image_ids}


def _attribute_labels(path: Path, image_ids: tuple[int, ...], num_attributes: int) -> np.ndarray:
    name = "attributes/image_attribute_labels.txt"
    row = {image: r for r, image in enumerate(image_ids)}
    present = np.zeros((len(image_ids), num_attributes), dtype=bool)
    for number, f in _rows(path, 3, name):
        where = f"{name}:{number}"
        image, attribute = _int(f[0], where), _int(f[1], where)
        if image not in row:
            raise CubFormatError(where, f"unknown image id {image}")
        if not 1 <= attribute <= num_attributes:
            raise CubFormatError(where, f"attribute id {attribute} out of range [1, {num_attributes}]")
        present[row[image], attribute - 1] = _int(f[2], where) == 1
    return present


ANNOTATION_FILES = ("images.txt", "image_class_labels.txt", "train_test_split.txt", "classes.txt", "parts/parts.txt",
                    "parts/part_locs.txt", "attributes.txt", "attributes/image_attribute_labels.txt")


def fingerprint(cub: Cub) -> str:
    """sha256 (hex) of a CUB-layout dataset's bytes: the annotation files present (``ANNOTATION_FILES``), then every
    image file in image-id order. Two copies match only when they are byte for byte the same, so a report that
    gives it tells whether two runs saw the same data."""
    digest = hashlib.sha256()
    for name in ANNOTATION_FILES:
        path = cub.root / name
        if path.is_file():
            digest.update(name.encode() + b"\0" + path.read_bytes())
    for i in cub.image_ids:
        digest.update(cub.paths[i].encode() + b"\0" + (cub.root / "images" / cub.paths[i]).read_bytes())
    return digest.hexdigest()
