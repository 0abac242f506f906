"""Builds the worker's engine from the service config, and loads the archive's exemplar bank once."""
from __future__ import annotations

import logging
from pathlib import Path

from galore.errors import InvalidArgument
from galore.labels import read_labels
from galore.pixels import IMAGE_SUFFIXES

from .config import HandlerConfig
from .decode import DRAFT_OVERSAMPLE, decode_image

logger = logging.getLogger(__name__)


def build_engine(config: HandlerConfig, device: str):
    """``galore.Engine`` for ``config.model``: an ImageNet EfficientNet-Lite (``galore.zoo.LITE_MODELS``; the
    default is Lite0) or a torchvision classifier."""
    from galore import Engine
    from galore.zoo import LITE_MODELS

    if config.model in LITE_MODELS and config.state_dict is None:
        engine = Engine.lite(config.model, device=device, working_grid=config.working_grid,
                             precision=config.precision)
    else:
        if config.labels is None:
            raise InvalidArgument("handler.labels", f"a label file is required for {config.model}")
        engine = Engine.from_torchvision(
            config.model, state_dict=config.state_dict, labels=read_labels(config.labels, "handler.labels"),
            layer=config.layer,
            hardness_arch=config.hardness_arch, hardness_state_dict=config.hardness_state_dict, device=device,
            working_grid=config.working_grid, precision=config.precision)
    if config.exemplar_bank:
        load_exemplar_bank(engine, Path(config.exemplar_bank), config)
    from galore.regions import COMPILED
    if not COMPILED:  # a warning, so that a console showing warnings (make serve) shows it
        logger.warning("galore._regions is not built (no C compiler when the package was installed): the regions "
                       "stage runs its torch path, same results, about 2x slower on the CPU")
    return engine


def load_exemplar_bank(engine, folder: Path, config: HandlerConfig) -> int:
    """Adds every ``folder/class_name/*.jpg`` to the engine's bank (the engine caches their features)."""
    count = 0
    for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
        class_id = engine.class_id(class_dir.name)
        for image_path in sorted(class_dir.iterdir()):
            if image_path.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            key = f"bank/{class_dir.name}/{image_path.name}"
            image, original = decode_image(image_path.read_bytes(), key, config.limits,
                                           DRAFT_OVERSAMPLE * engine.preprocess.resize)
            engine.add_exemplar(class_id, image, key=key, original_size=original)
            count += 1
    logger.info("exemplar bank: %d images from %s", count, folder)
    return count
