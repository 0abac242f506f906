"""The service's configuration, read once from the archive's model-config yaml (its ``handler:`` section), by
either host.

Example yaml (see model_store/build.py, which writes it)::

    handler:
      model: efficientnet_lite0      # efficientnet_lite0/1/2 (galore.zoo.LITE_MODELS) or a torchvision arch
      state_dict: weights.pt          # torchvision only: file in the archive, loaded with weights_only=True
      labels: labels.txt              # torchvision only: one label per line, in class-id order
      layer: null                     # feature layer F; null: the engine's default for the architecture
      hardness_arch: null             # optional hardness predictor (torchvision architecture)
      hardness_state_dict: null
      exemplar_bank: null             # folder in the archive: class_name/*.jpg
      working_grid: null              # side G of the grid regions are thresholded on; null: the model's crop
      precision: fp32                 # backbone: fp32 (TF32 off), bf16, fp16 (CUDA), tf32 (CUDA 8.0+), auto
      limits: {max_image_bytes: 20971520, max_pixels: 40000000, max_images_per_request: 16}
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

from galore.errors import InvalidArgument
from galore.options import DEFAULT_MODEL
from galore.options import DEFAULT_PRECISION, Precision


@dataclass(frozen=True)
class Limits:
    """Per-request limits. Bytes are encoded-image bytes; pixels are decoded width x height."""

    max_image_bytes: int = 20 * 1024 * 1024
    max_pixels: int = 40_000_000
    max_images_per_request: int = 16  # images + counter-class exemplars of one request

    def __post_init__(self):
        for name in ("max_image_bytes", "max_pixels", "max_images_per_request"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise InvalidArgument(f"handler.limits.{name}", f"must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class HandlerConfig:
    """Which model the worker serves and with which limits. Paths are absolute (resolved in the model dir)."""

    model: str = DEFAULT_MODEL
    state_dict: str | None = None
    labels: str | None = None
    layer: str | None = None
    hardness_arch: str | None = None
    hardness_state_dict: str | None = None
    exemplar_bank: str | None = None
    working_grid: int | None = None  # None: the model's input crop side
    precision: Precision = DEFAULT_PRECISION  # the backbone's; the head and gradients are always fp32
    limits: Limits = field(default_factory=Limits)
    batch_size: int = 1
    max_request_bytes: int = 0  # 0: unknown (TorchServe's max_request_size is set outside the archive)
    max_response_bytes: int = 0

    @classmethod
    def from_model_yaml(cls, model_yaml: dict | None, model_dir: str) -> "HandlerConfig":
        """Parses the archive's model-config dict (TorchServe's ``context.model_yaml_config``)."""
        model_yaml = model_yaml or {}
        section = dict(model_yaml.get("handler") or {})
        known = {"model", "state_dict", "labels", "layer", "hardness_arch", "hardness_state_dict",
                 "exemplar_bank", "working_grid", "precision", "limits", "max_request_bytes", "max_response_bytes"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise InvalidArgument("handler", f"unknown keys {unknown}; known: {sorted(known)}")
        limits = Limits(**dict(section.pop("limits", None) or {}))

        def in_model_dir(key: str) -> str | None:
            value = section.get(key)
            return None if value in (None, "") else os.path.join(model_dir, str(value))

        return cls(
            model=str(section.get("model") or DEFAULT_MODEL),
            state_dict=in_model_dir("state_dict"),
            labels=in_model_dir("labels"),
            layer=section.get("layer") or None,
            hardness_arch=section.get("hardness_arch") or None,
            hardness_state_dict=in_model_dir("hardness_state_dict"),
            exemplar_bank=in_model_dir("exemplar_bank"),
            working_grid=_working_grid(section.get("working_grid")),
            precision=_precision(section.get("precision")),
            limits=limits,
            batch_size=int(model_yaml.get("batchSize", 1)),
            max_request_bytes=int(section.get("max_request_bytes") or 0),
            max_response_bytes=int(section.get("max_response_bytes") or 0),
        )


def _working_grid(value) -> int | None:
    if value in (None, ""):
        return None
    if not isinstance(value, int) or not 8 <= value <= 1024:
        raise InvalidArgument("handler.working_grid", f"must be an integer in [8, 1024] or null, got {value!r}")
    return value


def _precision(value) -> Precision:
    if value in (None, ""):
        return DEFAULT_PRECISION
    try:
        return Precision(value)
    except ValueError:
        raise InvalidArgument("handler.precision", f"must be one of {[p.value for p in Precision]}, "
                                                   f"got {value!r}") from None
