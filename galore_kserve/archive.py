"""Reads a model archive (``make archive``'s ``.mar``) for the KServe host: the same file TorchServe loads.

The archive is a zip: MAR-INF/MANIFEST.json names the model-config yaml, whose ``handler:`` section is
``galore_service.config.HandlerConfig`` and whose ``batchSize`` / ``maxBatchDelay`` are the dynamic-batching settings.
"""
from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from galore.errors import InvalidArgument
from galore_service.config import HandlerConfig


@dataclass(frozen=True)
class Batching:
    """At most ``max_batch_size`` requests per engine call, gathered for at most ``max_delay_s`` after the first."""

    max_batch_size: int = 4
    max_delay_s: float = 0.020

    def __post_init__(self):
        if not isinstance(self.max_batch_size, int) or self.max_batch_size < 1:
            raise InvalidArgument("batchSize", f"must be an integer >= 1, got {self.max_batch_size!r}")
        if self.max_delay_s < 0:
            raise InvalidArgument("maxBatchDelay", f"must be >= 0 ms, got {self.max_delay_s * 1000:g}")


@dataclass(frozen=True)
class Archive:
    config: HandlerConfig
    batching: Batching
    model_dir: Path
    workers: int = 1  # the model config's minWorkers: engines, as TorchServe starts worker processes


def open_archive(path: Path, into: Path) -> Archive:
    """Extracts ``path`` into ``into`` (a directory this process owns) and parses its model config."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found; run `make archive`")
    into.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path) as mar:
        for member in mar.namelist():
            target = (into / member).resolve()
            if into.resolve() not in target.parents and target != into.resolve():
                raise InvalidArgument("archive", f"{path}: member {member!r} escapes the archive")
        mar.extractall(into)
    manifest = json.loads((into / "MAR-INF" / "MANIFEST.json").read_text(encoding="utf-8"))
    config_file = manifest.get("model", {}).get("configFile")
    model_yaml = yaml.safe_load((into / config_file).read_text(encoding="utf-8")) if config_file else {}
    model_yaml = model_yaml or {}
    batching = Batching(max_batch_size=int(model_yaml.get("batchSize", 1)),
                        max_delay_s=float(model_yaml.get("maxBatchDelay", 0)) / 1000.0)
    return Archive(HandlerConfig.from_model_yaml(model_yaml, str(into)), batching, into,
                   workers=int(model_yaml.get("minWorkers", 1)))
