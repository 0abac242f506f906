"""`galore train-hardness`: train the hardness predictor the easiness score (eq. 23) needs, in this process.

    galore train-hardness DATA [--layout imagefolder|cub] [--arch resnet50 --state-dict w.pt --labels labels.txt]
        [--hardness-arch resnet18] [--epochs 10] [--held-out 0.2] --out DIR

DATA is an ImageFolder (one folder per class, named by the classifier's labels) or a CUB-200-2011 root (its
training split trains the predictor and its test split is held out, or ``--cub-train test``: part of the test
split trains it). The classifier is frozen: a torchvision ``--arch`` with ``--state-dict`` and ``--labels`` (as
for model_store/build.py), or the default EfficientNet-Lite0. Images go through the classifier's own
preprocessing, so the predictor sees what the engine gives it.

ARCH: one of {archs}.

Writes DIR/hardness.pt (load it with ``python -m model_store.build torchvision ... --hardness-arch ARCH
--hardness-state-dict DIR/hardness.pt``), DIR/checkpoint.pt every epoch (``--resume`` continues) and
DIR/report.json with the held-out Spearman correlations. Exit status: 0 done, 2 bad input.
"""
from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path

from galore.errors import GaloreError, InvalidArgument, ModelError
from galore.pixels import IMAGE_SUFFIXES

from .status import EXIT_BAD_INPUT, EXIT_OK, CliError, set_threads


def add_parser(commands) -> argparse.ArgumentParser:
    from galore.hardness_training import HardnessTraining
    from galore.zoo import TORCHVISION_ARCHS

    d = HardnessTraining()
    p = commands.add_parser("train-hardness", help="train a hardness predictor for the easiness score (eq. 23)",
                            description=__doc__.replace("{archs}", ", ".join(TORCHVISION_ARCHS)),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="DATA", help="an ImageFolder (class_label/*.jpg) or a CUB-200-2011 root")
    p.add_argument("--layout", choices=("imagefolder", "cub"), default="imagefolder",
                   help="how DATA is organised (default imagefolder)")
    p.add_argument("--arch", choices=TORCHVISION_ARCHS, metavar="ARCH",
                   help="the classifier's torchvision architecture (default: the built-in EfficientNet-Lite0)")
    p.add_argument("--state-dict", help="the classifier's weights (with --arch)")
    p.add_argument("--labels", help="the classifier's labels, one per line (with --arch; for --layout cub, "
                                    "default: the dataset's classes)")
    p.add_argument("--hardness-arch", choices=TORCHVISION_ARCHS, metavar="ARCH", default=d.arch,
                   help=f"the predictor's torchvision architecture, one sigmoid output (default {d.arch})")
    p.add_argument("--init", help="state dict of --hardness-arch with one output to start from (default random)")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"(default {d.epochs})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help=f"(default {d.batch_size})")
    p.add_argument("--lr", type=float, default=d.lr, help=f"Adam learning rate (default {d.lr:g})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay, help=f"(default {d.weight_decay:g})")
    p.add_argument("--no-flip", action="store_true", help="no random horizontal flips while training")
    p.add_argument("--held-out", type=float, default=0.2,
                   help="fraction of the images held out for the report: of DATA for an ImageFolder, of the test "
                        "split for --cub-train test (default 0.2)")
    p.add_argument("--cub-train", choices=("train", "test"), default="train",
                   help="CUB: the split the predictor trains on: train (the test split is held out) or test (for "
                        "a classifier that fits its training split: --held-out of the test split is held out) "
                        "(default train)")
    p.add_argument("--seed", type=int, default=d.seed, help=f"(default {d.seed})")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for hardness.pt, checkpoint.pt, report.json")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--device", help="torch device (default: CUDA if present, else CPU)")
    p.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice; 1 is "
                                               "fastest on a busy machine, see EVALUATION.md)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


class ImageFiles:
    """(x, class index) per image file: decoded to RGB, then the classifier's preprocessing."""

    def __init__(self, items: list[tuple[Path, int]], preprocess):
        self.items, self.preprocess = items, preprocess

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        import numpy as np
        import torch
        from PIL import Image

        from galore.pixels import to_rgb

        path, label = self.items[i]
        with Image.open(path) as img:
            rgb = torch.from_numpy(np.asarray(to_rgb(img, str(path))).copy()).permute(2, 0, 1).contiguous()
        x, _ = self.preprocess(rgb, field=str(path))
        return x, label


def image_folder(root: Path, labels: list[str]) -> list[tuple[Path, int]]:
    if not root.is_dir():
        raise InvalidArgument("data", f"{root} is not a folder")
    index = {label: i for i, label in enumerate(labels)}
    items = []
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in index:
            raise InvalidArgument("data", f"folder {folder.name!r} is not a label of the classifier")
        items += [(f, index[folder.name]) for f in sorted(folder.iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES]
    if not items:
        raise InvalidArgument("data", f"no class_label/*.jpg images under {root}")
    return items


def classifier_of(args, labels: list[str] | None):
    """(model, labels, preprocess) of the frozen classifier the flags name; a bad flag raises InvalidArgument
    naming it (e.g. "--labels")."""
    from galore import zoo
    from galore.labels import read_labels

    if args.arch is None:
        if args.state_dict or args.labels:
            raise InvalidArgument("--arch", "--state-dict and --labels need --arch")
        return zoo.efficientnet_lite0(), zoo.imagenet_labels(), zoo.LITE_PREPROCESS
    if args.labels:
        labels = list(read_labels(args.labels, "--labels"))
    if not labels:
        raise InvalidArgument("--labels", "--arch needs --labels (one label per line)")
    if args.state_dict and not Path(args.state_dict).is_file():
        raise InvalidArgument("--state-dict", f"{args.state_dict} does not exist")
    try:
        model = zoo.torchvision_classifier(args.arch, len(labels), args.state_dict)
    except ModelError as exc:
        raise InvalidArgument("--state-dict", exc.message) from None
    return model, labels, zoo.torchvision_preprocess(args.arch)


def run(args: argparse.Namespace) -> int:
    from galore.hardness_training import HardnessTraining, split_indices, train_hardness

    set_threads(args.threads)
    try:
        config = HardnessTraining(arch=args.hardness_arch, epochs=args.epochs, batch_size=args.batch_size,
                                  lr=args.lr, weight_decay=args.weight_decay, flip=not args.no_flip,
                                  seed=args.seed, init=args.init)
        root = Path(args.data)
        if args.layout == "cub":
            from galore.evaluate.cub import read_cub

            cub = read_cub(root)
            model, labels, prep = classifier_of(args, list(cub.class_names))
            if len(labels) != cub.num_classes:
                raise CliError(f"the classifier has {len(labels)} classes, the dataset {cub.num_classes}",
                               EXIT_BAD_INPUT)
            items = {i: (root / "images" / cub.paths[i], cub.labels[i]) for i in cub.image_ids}
            if args.cub_train == "train":
                train_ids, held_ids = cub.train_ids, cub.test_ids
            else:  # the test split, less --held-out of it
                t, h = split_indices(len(cub.test_ids), args.held_out, args.seed)
                train_ids, held_ids = [cub.test_ids[i] for i in t], [cub.test_ids[i] for i in h]
            train = ImageFiles([items[i] for i in train_ids], prep)
            held = ImageFiles([items[i] for i in held_ids], prep)
        else:
            model, labels, prep = classifier_of(args, None)
            items = image_folder(root, labels)
            t, h = split_indices(len(items), args.held_out, args.seed)
            train, held = ImageFiles([items[i] for i in t], prep), ImageFiles([items[i] for i in h], prep)
        device = args.device or ("cuda" if __import__("torch").cuda.is_available() else "cpu")
        print(f"training {config.arch} on {len(train)} images, {len(held)} held out -> {args.out}")
        report = train_hardness(model, train, held, args.out, config, device=device, resume=args.resume,
                                progress=not args.no_progress)
    except GaloreError as exc:
        raise CliError(f"{_flag(exc.field)}: {exc.message}", EXIT_BAD_INPUT) from None
    print(json.dumps(asdict(report), indent=2))
    print(f"wrote {Path(args.out) / 'hardness.pt'}: python -m model_store.build torchvision ... --hardness-arch "
          f"{config.arch} --hardness-state-dict {Path(args.out) / 'hardness.pt'}")
    return EXIT_OK


def _flag(field: str) -> str:
    """The flag an error's field stands for: HardnessTraining's fields, data / held_out, or a flag already."""
    if field.startswith("--"):
        return field
    from galore.hardness_training import HardnessTraining

    names = {f.name for f in fields(HardnessTraining)} | {"held_out", "resume"}
    if field == "arch":
        return "--hardness-arch"
    if field in names:
        return "--" + field.replace("_", "-")
    return "DATA" if field in ("data", "root") else f"DATA {field}"
