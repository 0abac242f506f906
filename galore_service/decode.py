"""Encoded image bytes -> ``(3, H, W)`` uint8 RGB tensor (EXIF orientation applied) and the original's size.

Samples become 8-bit RGB by ``galore.pixels.to_rgb`` (16-bit greyscale scaled, transparency over white, samples
without an 8-bit scale refused), the rule the client and the evaluation's readers share.

JPEGs are decoded at a reduced scale when the model needs fewer pixels: Pillow's ``draft`` lets libjpeg scale by
1/2, 1/4 or 1/8 in the DCT domain, far cheaper than decoding every pixel and resizing. The original's size (after
EXIF orientation) comes from the header, so masks stay exact in original pixels (``galore.ImageRequest``).
"""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from galore.errors import InvalidArgument, ResourceExhausted
from galore.pixels import to_rgb

from .config import Limits

_TRANSPOSED = (5, 6, 7, 8)  # EXIF orientations that swap width and height
# JPEGs decode with at least this many times the model's resize side: at 1x, top-5 probabilities moved by up to
# 0.042 against a full decode on real 3-12 MP photos, at 2x by up to 0.028, still 4-11x faster than a full decode
# (BENCHMARKS.md, "Reduced JPEG decoding").
DRAFT_OVERSAMPLE = 2


def decode_image(data: bytes, field: str, limits: Limits, min_side: int | None = None
                 ) -> tuple[torch.Tensor, tuple[int, int]]:
    """Decodes JPEG/PNG/WebP (anything Pillow reads). Raises with ``field`` naming the offending request field.

    Returns ``(image, (H0, W0))``: a ``(3, H, W)`` ``torch.uint8`` tensor and the original's height and width after
    EXIF orientation. With ``min_side``, a JPEG is decoded at the smallest DCT scale whose shorter side still has
    ``min_side`` pixels (then H <= H0, W <= W0); other formats decode in full. Too many bytes or pixels ->
    ResourceExhausted; empty or undecodable bytes -> InvalidArgument. Pixels are checked from the header first.
    """
    if len(data) == 0:
        raise InvalidArgument(field, "image is empty (0 bytes)")
    if len(data) > limits.max_image_bytes:
        raise ResourceExhausted(field, f"image has {len(data)} bytes, limit is {limits.max_image_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > limits.max_pixels:
                raise ResourceExhausted(
                    field, f"image is {width}x{height} = {width * height} pixels, limit is {limits.max_pixels}")
            orientation = image.getexif().get(0x0112, 1)
            original = (width, height) if orientation in _TRANSPOSED else (height, width)  # (H0, W0) as shown
            if min_side and image.format == "JPEG" and min(width, height) > 2 * min_side:
                scale = min(width, height) / min_side
                image.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
            image = to_rgb(ImageOps.exif_transpose(image), field)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ResourceExhausted(field, f"image is too large to decode safely: {exc}") from None
    except (ResourceExhausted, InvalidArgument):
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise InvalidArgument(field, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous(), original
