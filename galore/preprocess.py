"""Image -> network input, and the exact inverse geometry for masks (resize shorter side, centre crop).

Example:
    >>> import torch
    >>> prep = Preprocess(resize=256, crop=224, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    >>> x, geo = prep(torch.zeros(3, 300, 451, dtype=torch.uint8))
    >>> x.shape, geo.crop_box_original()[0] > 0
    (torch.Size([3, 224, 224]), True)
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF

from .device import to_device
from .errors import InvalidArgument


@dataclass(frozen=True)
class Geometry:
    """Where the network's crop lies in the original image.

    The crop's pixel (u, v) (0 <= u, v < crop) covers original x in [(left + u) / scale, (left + u + 1) / scale),
    y likewise with ``top``; ``scale`` = resized / original size.
    """

    height: int  # H0, original image
    width: int  # W0
    scale_y: float  # resized height / H0
    scale_x: float
    top: int  # crop offset inside the resized image
    left: int
    crop: int

    def crop_box_original(self) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the crop in original pixel coordinates (continuous)."""
        return (self.left / self.scale_x, self.top / self.scale_y,
                (self.left + self.crop) / self.scale_x, (self.top + self.crop) / self.scale_y)

    def sample_grid(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """For each original pixel centre, its position in the crop as grid_sample coordinates in [-1, 1].

        Returns grid (H0, W0, 2) (x, y order) and inside (H0, W0) bool: the pixel centre lies in the crop.
        """
        ys = (torch.arange(self.height, device=device, dtype=torch.float32) + 0.5) * self.scale_y - self.top
        xs = (torch.arange(self.width, device=device, dtype=torch.float32) + 0.5) * self.scale_x - self.left
        gy = ys / self.crop * 2 - 1  # (H0,)
        gx = xs / self.crop * 2 - 1  # (W0,)
        grid = torch.stack(torch.meshgrid(gx, gy, indexing="xy"), dim=-1)  # (H0, W0, 2)
        inside = (gy.abs() <= 1)[:, None] & (gx.abs() <= 1)[None, :]
        return grid, inside


MAX_ASPECT = 20.0  # longer side / shorter side; beyond it the crop would see a sliver of the photo


@dataclass(frozen=True)
class Preprocess:
    """Resize the shorter side to ``resize`` (bilinear, antialiased), centre-crop ``crop``, normalise."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __call__(self, image: torch.Tensor, original_size: tuple[int, int] | None = None,
                 field: str = "image") -> tuple[torch.Tensor, Geometry]:
        """image (3, H, W) uint8 RGB -> ((3, crop, crop) float32 normalised, Geometry of the ORIGINAL image):
        ``crop`` then ``normalize``. Errors as ``crop``'s."""
        x, geo = self.crop_uint8(image, original_size, field)
        return self.normalize(x), geo

    def crop_uint8(self, image: torch.Tensor, original_size: tuple[int, int] | None = None,
                   field: str = "image") -> tuple[torch.Tensor, Geometry]:
        """image (3, H, W) uint8 RGB -> ((3, crop, crop) uint8, Geometry of the ORIGINAL image): resized and cropped,
        not yet normalised, so it crosses to the device at a quarter of float32's bytes (``normalize`` there).

        original_size: (H0, W0) when ``image`` is a reduced decode of a larger original (JPEG DCT scaling): the
        resize target and the Geometry follow the original, so masks stay exact in original pixels. Errors name
        ``field``: a non-uint8 or non-RGB tensor, an empty image, or an aspect ratio beyond MAX_ASPECT.
        """
        if not isinstance(image, torch.Tensor) or image.dtype != torch.uint8:
            raise InvalidArgument(field, f"expected a torch.uint8 tensor, got {getattr(image, 'dtype', type(image))}")
        if image.ndim != 3 or image.shape[0] != 3:
            raise InvalidArgument(field, f"expected shape (3, H, W) RGB, got {tuple(image.shape)}")
        h0, w0 = original_size if original_size is not None else tuple(image.shape[1:])
        if min(h0, w0, *image.shape[1:]) < 1:
            raise InvalidArgument(field, f"empty image {w0}x{h0}")
        if max(h0, w0) / min(h0, w0) > MAX_ASPECT:
            raise InvalidArgument(field, f"aspect ratio {w0}x{h0} is beyond {MAX_ASPECT:g}:1; the model's square "
                                         "centre crop would see a sliver of it (crop or pad the image first)")
        if h0 <= w0:
            rh, rw = self.resize, max(self.crop, int(self.resize * w0 / h0))
        else:
            rh, rw = max(self.crop, int(self.resize * h0 / w0)), self.resize
        resized = image if (rh, rw) == tuple(image.shape[1:]) else TF.resize(image, [rh, rw], antialias=True)
        top, left = int(round((rh - self.crop) / 2.0)), int(round((rw - self.crop) / 2.0))
        return resized[:, top:top + self.crop, left:left + self.crop], Geometry(h0, w0, rh / h0, rw / w0, top, left,
                                                                                self.crop)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (..., 3, S, S) -> float32 (x / 255 - mean) / std, on x's device (the same numbers on any; the same
        operations as torchvision's ``normalize``, whose mean and std would cross to the device with a wait)."""
        mean = to_device(self.mean, x.device, torch.float32)[:, None, None]  # (3, 1, 1)
        std = to_device(self.std, x.device, torch.float32)[:, None, None]
        return x.float().div_(255).sub_(mean).div_(std)


def _axis_weights(n_out: int, scale: float, offset: int, crop: int, n_grid: int, device) -> torch.Tensor:
    """(n_out, n_grid) bilinear weights (align_corners=False, border clamp) of original pixel centres along one axis;
    rows of pixels outside the crop are 0."""
    pos = (torch.arange(n_out, device=device, dtype=torch.float32) + 0.5) * scale - offset  # crop pixel coords
    u = (pos / crop * n_grid - 0.5).clamp(0, n_grid - 1)  # grid coords, clamped like padding_mode="border"
    i0 = u.floor().long()
    i1 = (i0 + 1).clamp(max=n_grid - 1)
    w1 = u - i0
    weights = torch.zeros(n_out, n_grid, device=device)
    weights.scatter_add_(1, i0[:, None], (1 - w1)[:, None])
    weights.scatter_add_(1, i1[:, None], w1[:, None])
    inside = (pos >= 0) & (pos < crop)
    return weights * inside[:, None]


def upsample_to_original(grid_maps: torch.Tensor, geo: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear upsampling of feature-grid maps to the ORIGINAL image.

    grid_maps (..., h, w) on the feature grid covering the crop -> (values (..., H0, W0), inside (H0, W0) bool);
    values outside the crop are 0. Bilinear interpolation is separable, so this is Ry @ map @ Rx^T with
    (H0, h) and (W0, w) weight matrices: the same numbers as ``grid_sample`` on ``geo.sample_grid``.
    """
    ry, rx = interpolation_weights(geo, *grid_maps.shape[-2:], grid_maps.device)
    values = ry @ grid_maps.float() @ rx.T  # (..., H0, W0)
    inside = (ry.sum(1) > 0)[:, None] & (rx.sum(1) > 0)[None, :]
    return values, inside


def interpolation_weights(geo: Geometry, h: int, w: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Separable bilinear weights from an (h, w) feature grid to original pixels: (H0, h) and (W0, w)."""
    return (_axis_weights(geo.height, geo.scale_y, geo.top, geo.crop, h, device),
            _axis_weights(geo.width, geo.scale_x, geo.left, geo.crop, w, device))
