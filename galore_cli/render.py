"""Pixel-level drawing on plain numpy images: heatmap overlays, highlighted regions, captioned panel rows.

Images are ``(H, W, 3)`` uint8 RGB; masks ``(H, W)`` bool in the same pixels; heatmaps ``(h, w)`` float on a
feature grid covering ``crop_box`` = (x0, y0, x1, y1) of the image. Nothing here knows about GALORE; see
``galore_cli.report`` for the paper-style figures built from these pieces.

Example:
    >>> img = np.full((40, 60, 3), 128, np.uint8); mask = np.zeros((40, 60), bool); mask[10:30, 20:40] = True
    >>> out = highlight(img, mask, color=(255, 0, 0))
    >>> out[20, 30].tolist(), out[0, 0].tolist()  # inside kept, outside dimmed
    ([128, 128, 128], [45, 45, 45])
"""
from __future__ import annotations

import io
import textwrap
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

PAD = 10  # px around and between panels
TITLE_HEIGHT = 26  # px of the figure title band (only when a title is given)
LINE_HEIGHT = 17  # px per caption line
MAX_SIDE = 384  # panels are scaled down so their longer side is at most this many px
DIM = 0.35  # brightness kept outside a highlighted region
OUTLINE = 3  # px width of a region's outline, drawn on the inside of its mask
BACKGROUND = (255, 255, 255)
TEXT = (20, 20, 20)
CAPTION_CHARS = 40  # caption lines wrap at this many characters (narrower panels wrap earlier)

# Distinct outline colours for ranked regions (first = strongest).
PALETTE: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
    (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
)

# Heat colour ramp: value in [0, 1] -> RGB, linear between stops (dark blue, blue, cyan, yellow, red).
_HEAT_STOPS = np.array([0.0, 0.25, 0.5, 0.75, 1.0])
_HEAT_COLORS = np.array([[0, 0, 128], [0, 64, 255], [0, 230, 230], [255, 230, 0], [220, 0, 0]], dtype=np.float64)


@dataclass(frozen=True)
class Panel:
    """One picture of a figure row with its caption lines."""

    picture: np.ndarray  # (H, W, 3) uint8, already at display size
    caption: tuple[str, ...] = ()


@dataclass(frozen=True)
class Figure:
    """A rendered figure and where each panel's picture sits in it, as (x0, y0, x1, y1) half-open boxes."""

    image: Image.Image
    panel_boxes: tuple[tuple[int, int, int, int], ...]

    def png_bytes(self) -> bytes:
        buffer = io.BytesIO()
        self.image.save(buffer, format="PNG", optimize=True)
        return buffer.getvalue()

    def save(self, path) -> None:
        self.image.save(path, format="PNG", optimize=True)


def check_image(image: np.ndarray) -> np.ndarray:
    """Returns ``image`` as a contiguous (H, W, 3) uint8 array or raises ValueError naming what is wrong."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape} dtype {image.dtype}")
    return np.ascontiguousarray(image)


def display_scale(width: int, height: int, max_side: int = MAX_SIDE) -> float:
    """Factor that brings the longer side down to ``max_side`` (never enlarges)."""
    return min(1.0, max_side / max(width, height))


def fit(image: np.ndarray, mask: np.ndarray | None = None, max_side: int = MAX_SIDE):
    """Scales an image (bilinear) and optionally its mask (nearest) for display; returns (image, mask)."""
    image = check_image(image)
    height, width = image.shape[:2]
    scale = display_scale(width, height, max_side)
    if mask is not None and mask.shape != (height, width):
        raise ValueError(f"mask shape {mask.shape} does not match image {(height, width)}")
    if scale == 1.0:
        return image, mask
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    small = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    if mask is not None:
        mask = np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize(size, Image.NEAREST)) > 127
    return small, mask


def heat_colors(values: np.ndarray) -> np.ndarray:
    """Maps values in [0, 1] (clipped) to RGB uint8 on a blue-cyan-yellow-red ramp; shape (..., 3)."""
    values = np.clip(np.nan_to_num(values, nan=0.0), 0.0, 1.0)
    channels = [np.interp(values, _HEAT_STOPS, _HEAT_COLORS[:, c]) for c in range(3)]
    return np.stack(channels, axis=-1).round().astype(np.uint8)


def normalize(heatmap: np.ndarray) -> np.ndarray:
    """Min-max scales a map to [0, 1]; a constant map becomes all zeros."""
    heatmap = np.asarray(heatmap, dtype=np.float64)
    low, high = float(np.min(heatmap)), float(np.max(heatmap))
    return np.zeros_like(heatmap) if high <= low else (heatmap - low) / (high - low)


def upsample(heatmap: np.ndarray, crop_box: tuple[int, int, int, int], width: int, height: int) -> np.ndarray:
    """Bilinear upsampling of an (h, w) map onto ``crop_box`` of a ``width`` x ``height`` image.

    Returns (height, width) float32 normalised to [0, 1] inside the box and NaN outside it.
    """
    x0, y0, x1, y1 = crop_box
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"crop_box {crop_box} is not inside a {width}x{height} image")
    scaled = Image.fromarray(normalize(heatmap).astype(np.float32), mode="F").resize((x1 - x0, y1 - y0),
                                                                                     Image.BILINEAR)
    out = np.full((height, width), np.nan, dtype=np.float32)
    out[y0:y1, x0:x1] = np.clip(np.asarray(scaled), 0.0, 1.0)
    return out


def overlay(image: np.ndarray, heatmap: np.ndarray, crop_box: tuple[int, int, int, int] | None = None,
            alpha: float = 0.5) -> np.ndarray:
    """Blends a heat-coloured map over ``image`` inside ``crop_box`` (whole image when None); outside the box
    the image is dimmed. ``alpha`` is the weight of the heat colour."""
    image = check_image(image)
    height, width = image.shape[:2]
    values = upsample(heatmap, crop_box or (0, 0, width, height), width, height)
    inside = ~np.isnan(values)
    out = image.astype(np.float64) * DIM
    blend = (1.0 - alpha) * image.astype(np.float64) + alpha * heat_colors(values).astype(np.float64)
    out[inside] = blend[inside]
    return out.round().astype(np.uint8)


def inner_outline(mask: np.ndarray, width: int = OUTLINE) -> np.ndarray:
    """Pixels of ``mask`` within ``width`` px (4-connected steps) of its edge or of the image border."""
    mask = np.asarray(mask, dtype=bool)
    core = mask.copy()
    for _ in range(width):
        padded = np.pad(core, 1, constant_values=False)
        core = (core & padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:])
    return mask & ~core


def highlight(image: np.ndarray, mask: np.ndarray, color: Sequence[int] = PALETTE[0],
              outline: int = OUTLINE) -> np.ndarray:
    """Keeps the pixels of ``mask`` as they are, dims everything else to ``DIM`` brightness, and outlines the
    region in ``color`` on the inside of its edge."""
    image = check_image(image)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != image.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image {image.shape[:2]}")
    out = np.where(mask[..., None], image.astype(np.float64), image.astype(np.float64) * DIM)
    out = out.round().astype(np.uint8)
    out[inner_outline(mask, outline)] = np.asarray(color, dtype=np.uint8)
    return out


def draw_outline(picture: np.ndarray, mask: np.ndarray, color: Sequence[int], outline: int = OUTLINE) -> np.ndarray:
    """Copy of ``picture`` with the inner outline of ``mask`` painted in ``color``."""
    out = check_image(picture).copy()
    out[inner_outline(mask, outline)] = np.asarray(color, dtype=np.uint8)
    return out


def placeholder(width: int, height: int, text: str) -> np.ndarray:
    """A light grey (height, width, 3) picture with ``text`` wrapped in it, for something the client lacks."""
    canvas = Image.new("RGB", (width, height), (225, 225, 225))
    draw = ImageDraw.Draw(canvas)
    font = _font()
    chars = max(8, width // 8)
    for i, line in enumerate(textwrap.wrap(text, chars)):
        draw.text((8, 8 + i * LINE_HEIGHT), line, fill=TEXT, font=font)
    return np.asarray(canvas)


def compose(panels: Sequence[Panel], title: str = "", columns: int = 3) -> Figure:
    """Lays panels out in rows of at most ``columns``, left to right, top-aligned, captions under each, with an
    optional title band on top.

    One row: width = sum(panel widths) + PAD * (n + 1); height = [TITLE_HEIGHT] + PAD + max panel height + PAD
    + LINE_HEIGHT * (most caption lines, after wrapping) + PAD. More rows stack below, each sized the same way
    without the title; the figure is as wide as its widest row.
    """
    if not panels:
        raise ValueError("a figure needs at least one panel")
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    pictures = [check_image(panel.picture) for panel in panels]
    wrapped = [_wrap(panel.caption, picture.shape[1]) for panel, picture in zip(panels, pictures)]
    rows = [range(i, min(i + columns, len(panels))) for i in range(0, len(panels), columns)]
    row_sizes = []  # (width, picture height, caption height) per row
    for row in rows:
        row_sizes.append((sum(pictures[i].shape[1] for i in row) + PAD * (len(row) + 1),
                          max(pictures[i].shape[0] for i in row),
                          LINE_HEIGHT * max(len(wrapped[i]) for i in row)))
    top = (TITLE_HEIGHT if title else 0) + PAD
    height = top + sum(pic + PAD + cap + PAD for _, pic, cap in row_sizes)
    canvas = Image.new("RGB", (max(width for width, _, _ in row_sizes), height), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    font = _font()
    if title:
        draw.text((PAD, 6), title, fill=TEXT, font=_font(15))
    boxes = []
    y = top
    for row, (_, row_height, caption_height) in zip(rows, row_sizes):
        x = PAD
        for i in row:
            picture = pictures[i]
            canvas.paste(Image.fromarray(picture), (x, y))
            boxes.append((x, y, x + picture.shape[1], y + picture.shape[0]))
            for k, line in enumerate(wrapped[i]):
                draw.text((x, y + row_height + PAD // 2 + k * LINE_HEIGHT), line, fill=TEXT, font=font)
            x += picture.shape[1] + PAD
        y += row_height + PAD + caption_height + PAD
    return Figure(image=canvas, panel_boxes=tuple(boxes))


def _wrap(caption: Sequence[str], width_px: int) -> list[str]:
    chars = max(10, min(CAPTION_CHARS, width_px // 7))
    return [piece for line in caption for piece in (textwrap.wrap(line, chars) or [""])]


def _font(size: int = 13):
    return ImageFont.load_default(size=size)
