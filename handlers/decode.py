"""Encoded image bytes -> ``(3, H, W)`` uint8 RGB tensor at the original resolution (EXIF orientation applied)."""
from __future__ import annotations

import io
import warnings

import numpy as np
import torch
from PIL import Image, ImageOps

from galore.errors import InvalidArgument, ResourceExhausted

from .config import Limits


def decode_image(data: bytes, field: str, limits: Limits) -> torch.Tensor:
    """Decodes JPEG/PNG/WebP (anything Pillow reads). Raises with ``field`` naming the offending request field.

    Returns a ``(3, H, W)`` ``torch.uint8`` tensor. Too many bytes or pixels -> ResourceExhausted; empty or
    undecodable bytes -> InvalidArgument. Pixels are checked from the header before any decoding.
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
            image = ImageOps.exif_transpose(image).convert("RGB")
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ResourceExhausted(field, f"image is too large to decode safely: {exc}") from None
    except ResourceExhausted:
        raise
    except Exception as exc:  # Pillow raises many types for corrupt data
        raise InvalidArgument(field, f"cannot decode image ({type(exc).__name__}: {exc})") from None
    array = np.asarray(image, dtype=np.uint8)  # (H, W, 3)
    return torch.from_numpy(array.copy()).permute(2, 0, 1).contiguous()
