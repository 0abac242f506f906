"""A decoded Pillow image -> 8-bit RGB, as a viewer shows it: the one rule for the service, the client and the
evaluation's readers, so that every one of them sees the same pixels. numpy and Pillow only (no torch).

- 16-bit greyscale (PNG, TIFF, JPEG 2000; a 16-bit PGM reads as 32-bit integers) is scaled from 0..65535 to
  0..255. Pillow's own ``convert("RGB")`` clips it instead, which turns a 16-bit photo white.
- Transparency (an alpha channel or a transparent palette entry) is composited over ``BACKGROUND``; dropping the
  alpha channel would show whatever colour the transparent pixels happen to store.
- Samples without an agreed 8-bit scale (floating point; 32-bit integers outside 0..65535) raise InvalidArgument.

Example:
    >>> import numpy as np
    >>> from PIL import Image
    >>> grey16 = Image.fromarray(np.array([[0, 32896, 65535]], dtype=np.uint16))   # mode I;16
    >>> np.asarray(to_rgb(grey16))[0, :, 0].tolist()
    [0, 128, 255]
"""
from __future__ import annotations

import numpy as np
from PIL import Image

from .errors import InvalidArgument

# Files a folder of images contributes (an exemplar bank, a photo folder, an ImageFolder, a load test): formats
# Pillow reads, by suffix, lower-cased
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
BACKGROUND = (255, 255, 255)  # what transparent pixels show: a viewer's white page
_SIXTEEN_BIT = ("I;16", "I;16L", "I;16B", "I;16N")  # Pillow's 16-bit greyscale modes
_ALPHA = ("RGBA", "LA", "PA", "RGBa", "La")


def to_rgb(image: Image.Image, field: str = "image") -> Image.Image:
    """``image`` in any Pillow mode -> a mode "RGB" image of the same size (rules above); InvalidArgument naming
    ``field`` for samples without an 8-bit scale."""
    if image.mode in _SIXTEEN_BIT or image.mode == "I":
        samples = np.asarray(image).astype(np.int32)  # (H, W); x 255 stays inside int32
        if image.mode == "I" and samples.size and (samples.min() < 0 or samples.max() > 65535):
            raise InvalidArgument(field, "32-bit integer samples outside 0..65535 have no agreed 8-bit scale; send "
                                         "an 8- or 16-bit image")
        return Image.fromarray(((samples * 255 + 32767) // 65535).astype(np.uint8)).convert("RGB")
    if image.mode == "F":
        raise InvalidArgument(field, "floating-point samples have no agreed 8-bit scale; send an 8- or 16-bit image")
    if image.mode in _ALPHA or "transparency" in image.info:
        under = Image.new("RGBA", image.size, BACKGROUND + (255,))
        return Image.alpha_composite(under, image.convert("RGBA")).convert("RGB")
    return image.convert("RGB")
