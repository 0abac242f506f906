"""Reading image files for the client: bytes to send, and the (H0, W0, 3) uint8 pixels the masks refer to.

EXIF orientation is applied and samples become 8-bit RGB by the service's own rule (``galore.pixels.to_rgb``), so
masks and pixels share one frame and one look.
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from galore.errors import InvalidArgument
from galore.pixels import IMAGE_SUFFIXES, to_rgb


class ImageFileError(ValueError):
    """An image argument cannot be used; the message names the file (``path``) and the ``reason``."""

    def __init__(self, path: object, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ImageFile:
    """One input image: its display name, encoded bytes (sent as is) and decoded RGB pixels (H0, W0, 3) uint8."""

    name: str
    data: bytes
    pixels: np.ndarray


def decode(data: bytes, name: str = "image") -> np.ndarray:
    """Encoded bytes -> (H0, W0, 3) uint8 RGB after EXIF orientation; ImageFileError when undecodable."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return np.asarray(to_rgb(ImageOps.exif_transpose(img), name))
    except InvalidArgument as exc:
        raise ImageFileError(name, exc.message) from None
    except UnidentifiedImageError:
        raise ImageFileError(name, "not a readable image (unknown or corrupt format)") from None
    except (OSError, ValueError) as exc:
        raise ImageFileError(name, f"not a readable image ({exc})") from None


def read_image(path: str | Path) -> ImageFile:
    """Reads and decodes one image file; ImageFileError for a missing, unreadable or non-image file."""
    path = Path(path)
    if not path.exists():
        raise ImageFileError(path, "no such file")
    if not path.is_file():
        raise ImageFileError(path, "not a file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ImageFileError(path, f"cannot read ({exc.strerror})") from None
    return ImageFile(name=str(path), data=data, pixels=decode(data, str(path)))


def expand_paths(arguments: list[str]) -> list[Path]:
    """Image arguments -> files: a folder stands for its image files (sorted, not recursive).

    Raises ImageFileError for a missing path or a folder without images.
    """
    paths: list[Path] = []
    for argument in arguments:
        path = Path(argument)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageFileError(path, f"folder has no images ({', '.join(IMAGE_SUFFIXES)})")
            paths.extend(found)
        elif not path.exists():
            raise ImageFileError(path, "no such file")
        else:
            paths.append(path)
    return paths
