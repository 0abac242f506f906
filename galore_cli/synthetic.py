"""`galore evaluate synthetic`: the part-annotated synthetic benchmark end to end (GALORE TPAMI 2023 §VI-B on
images whose ground truth is known by construction; galore.evaluate.synthetic).

    galore evaluate synthetic [all|generate|train|evaluate] --out DIR [--quick] [--threads 1]

  generate  renders the data set in the CUB-200-2011 layout into DIR/data (plus ground_truth.json);
  train     trains the classifier (mobilenet_v3_small, explained at features.8: a non-linear head after F) into
            DIR/model (checkpoint.pt every epoch, weights.pt, labels.txt, report.json, exemplars/: the exemplar bank
            for model_store.build, taken from the training split), in a process whose CPU kernels are pinned
            (--cpu-kernels pinned, the default: torch and oneDNN capped at AVX2, MKL on its COMPATIBLE branch, so
            that AVX-512 and AVX2 CPUs of either vendor run the same kernels; native: this process's own, faster
            where AVX-512 is present, and another classifier there);
  evaluate  (in a process pinned the same way) runs `galore evaluate proxy`'s protocol on the test split into
            DIR/proxy, the same with the untrained network (random weights, Fig. 11) into DIR/proxy-random, scores
            every region against baseline regions and against the generator's own ground truth, runs Table III's
            search baselines (Goyal et al. 2019, the sliding window of §VI-F, FinerCAM) on --search-images images,
            and writes DIR/synthetic.md / .json (with the data's and the weights' sha256, the kernels and the
            library versions: what a reproduction must match);
  all       (default) the three in order. A step whose outputs exist with the same settings is reused.
  summary   only re-reads the reports of DIR's run folders (DIR/seed-K, and any other folder or link to one holding a
            synthetic.json: runs that differ in something else, the CPU kernels say) and writes DIR/seeds.md / .json.

--seeds N: the steps for seeds S, S + 1, ..., S + N - 1 (S = --seed), each into DIR/seed-K, then DIR/seeds.md and
seeds.json: every figure as mean ± sd over the finished seeds (galore_cli.synthetic_seeds).

--quick: 6 classes in 2 families, 300 images, 4 epochs, 12 explained images at a few coverages (about a minute
on one core; `make test` runs it). Exit status: 0 done, 1 some images failed, 2 bad input.

The data set then serves as any CUB copy does:
    galore evaluate proxy DIR/data --arch mobilenet_v3_small --state-dict DIR/model/weights.pt --layer features.8
    python -m model_store.build torchvision --arch mobilenet_v3_small --state-dict DIR/model/weights.pt \\
        --labels DIR/model/labels.txt --layer features.8 --exemplar-bank DIR/model/exemplars --name synthetic_birds
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from argparse import Namespace
from dataclasses import asdict, replace
from pathlib import Path

from galore.errors import GaloreError, InvalidArgument
from galore_cli.machine import cpu_model
from galore_cli.pinned_kernels import KERNELS, kernels_in_use, kernels_text, pinned_env, run_pinned

from .proxy import _bar, _engine, markdown
from .status import EXIT_BAD_INPUT, EXIT_IMAGE_FAILED, EXIT_OK, CliError, set_threads

STEPS = ("all", "generate", "train", "evaluate", "summary")
EXEMPLARS_PER_CLASS = 5
QUICK_COVERAGES = (0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5)
SEARCH_IMAGES = 2  # images for the exhaustive search baselines of Table III (minutes each on 2 cores)


def add_parser(evaluate_commands) -> argparse.ArgumentParser:
    """Adds the ``synthetic`` sub-command to ``galore evaluate``'s sub-parsers."""
    from galore.classifier_training import ClassifierTraining
    from galore.evaluate.synthetic import SyntheticConfig

    d, t = SyntheticConfig(), ClassifierTraining()
    p = evaluate_commands.add_parser(
        "synthetic", help="the part-annotated synthetic benchmark: generate, train, run the proxy protocol, report",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("step", nargs="?", choices=STEPS, default="all", help="what to run (default all)")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for data/, model/, proxy/ and the report")
    p.add_argument("--quick", action="store_true", help="the small setting of `make test` (see above)")
    g = p.add_argument_group("data set (galore.evaluate.synthetic.SyntheticConfig)")
    g.add_argument("--classes", type=int, help=f"number of classes (default {d.num_classes})")
    g.add_argument("--family-size", type=int, help=f"classes per family (default {d.family_size})")
    g.add_argument("--train-per-class", type=int, help=f"training images per class (default {d.train_per_class})")
    g.add_argument("--test-per-class", type=int, help=f"test images per class (default {d.test_per_class})")
    g.add_argument("--seed", type=int, help=f"data set seed (default {d.seed}; the classifier's seed follows it)")
    g.add_argument("--seeds", type=int, default=1, metavar="N",
                   help="run N seeds from --seed on, each into DIR/seed-K, and report mean ± sd (default 1: DIR)")
    m = p.add_argument_group("classifier (galore.classifier_training.ClassifierTraining)")
    m.add_argument("--epochs", type=int, help=f"(default {t.epochs})")
    m.add_argument("--batch-size", type=int, help=f"(default {t.batch_size})")
    m.add_argument("--threads", type=int, help="CPU threads for torch (1 is fastest on a busy machine)")
    m.add_argument("--cpu-kernels", choices=KERNELS, default=KERNELS[0],
                   help="pinned (default): train and evaluate in processes whose torch and oneDNN kernels are "
                        "capped at AVX2 and whose MKL runs its COMPATIBLE branch, so that x86 CPUs with AVX-512 or "
                        "AVX2 run the same kernels (galore_cli.pinned_kernels; CPUs without AVX2 run their own); "
                        "native: this process, the CPU's fastest kernels")
    e = p.add_argument_group("evaluation")
    e.add_argument("--limit", type=int, help="explain at most this many test images (default: all; --quick 12)")
    e.add_argument("--no-random", action="store_true", help="skip the random-weight model (Fig. 11)")
    e.add_argument("--no-finer-cam", action="store_true",
                   help="skip FinerCAM as a baseline region of every counterfactual (one backward per segment)")
    e.add_argument("--search-images", type=int, metavar="N",
                   help=f"run Table III's search baselines (Goyal et al. 2019, the sliding-window deliberative "
                        f"baseline, FinerCAM) on the first N explained test images (default {SEARCH_IMAGES}, "
                        f"--quick 0: each exhaustive search is 38,416 head passes)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)
    return p


def configs(args: argparse.Namespace):
    """(SyntheticConfig, ClassifierTraining) from --quick and the flags given."""
    from galore.classifier_training import ClassifierTraining
    from galore.evaluate.synthetic import SyntheticConfig

    data = (SyntheticConfig(num_classes=6, family_size=3, train_per_class=40, test_per_class=10) if args.quick
            else SyntheticConfig())
    training = ClassifierTraining(epochs=4) if args.quick else ClassifierTraining()
    data = replace(data, **{k: v for k, v in (("num_classes", args.classes), ("family_size", args.family_size),
                                              ("train_per_class", args.train_per_class),
                                              ("test_per_class", args.test_per_class), ("seed", args.seed))
                            if v is not None})
    training = replace(training, seed=data.seed, **{k: v for k, v in (("epochs", args.epochs),
                                                                      ("batch_size", args.batch_size))
                                                    if v is not None})
    return data, training


def run(args: argparse.Namespace) -> int:
    set_threads(args.threads)
    if args.seeds < 1:
        raise CliError(f"--seeds: must be >= 1, got {args.seeds}", EXIT_BAD_INPUT)
    if args.seeds == 1 and args.step != "summary":
        return run_one(args, Path(args.out))
    from .synthetic_seeds import summarise

    out, first = Path(args.out), configs(args)[0].seed
    status = EXIT_OK
    if args.step != "summary":
        for seed in range(first, first + args.seeds):
            print(f"seed {seed}: {out / f'seed-{seed}'}")
            status = max(status, run_one(Namespace(**{**vars(args), "seed": seed}), out / f"seed-{seed}"))
    if args.step in ("all", "evaluate", "summary"):
        try:
            print(summarise(out))
        except FileNotFoundError as exc:
            raise CliError(str(exc), EXIT_BAD_INPUT) from None
    return status


def run_one(args: argparse.Namespace, out: Path) -> int:
    """The steps for one seed into ``out``."""
    try:
        data, training = configs(args)
        times = {}
        if args.step in ("all", "generate"):
            times["generate"] = generate(data, out / "data", args.no_progress)
        if args.step in ("all", "train"):
            times["train"] = train(data, training, out, args.no_progress, args.cpu_kernels, args.threads)
        failed = False
        if args.step in ("all", "evaluate"):
            began = time.perf_counter()
            failed = run_pinned(args.cpu_kernels, _evaluate_with_threads, data, training, out, args)
            times["evaluate"] = round(time.perf_counter() - began, 1)
    except GaloreError as exc:
        raise CliError(f"{exc.field}: {exc.message}", EXIT_BAD_INPUT) from None
    print("seconds: " + ", ".join(f"{k} {v}" for k, v in times.items()))
    return EXIT_IMAGE_FAILED if failed else EXIT_OK


def _stored(path: Path, key: str):
    try:
        return json.loads(path.read_text(encoding="utf-8")).get(key)
    except (OSError, ValueError):
        return None


def generate(data, root: Path, no_progress: bool) -> float | str:
    """Writes the data set unless ``root`` already holds this one; seconds taken, or "reused"."""
    from tqdm import tqdm

    from galore.evaluate.synthetic import write_dataset

    if (root / "images.txt").is_file():
        if _stored(root / "synthetic.json", "config") == asdict(data):
            return "reused"
        raise InvalidArgument("out", f"{root} holds another data set; choose another --out")
    began = time.perf_counter()
    total = data.num_classes * (data.train_per_class + data.test_per_class)
    with tqdm(total=total, desc="rendering", unit="img", disable=no_progress) as bar:
        write_dataset(data, root, bar.update)
    return round(time.perf_counter() - began, 1)


def train(data, training, out: Path, no_progress: bool, kernels: str = KERNELS[0],
          threads: int | None = None) -> float | str:
    """Trains into out/model unless it holds this model, trained with the same ``kernels``
    (``pinned_kernels.KERNELS``) and their environment; writes the exemplar bank; seconds, or "reused". An
    interrupted run resumes from its checkpoint only with the same kernels; one of other kernels starts over."""
    import torch

    from galore.classifier_training import CHECKPOINT, REPORT
    from galore.evaluate.cub import read_cub

    model = out / "model"
    provenance = {"cpu_kernels": kernels, "env": pinned_env(kernels)}
    report = _stored(model / REPORT, "config")
    if (report == asdict(training) and _stored(model / "data.json", "config") == asdict(data)
            and _stored(model / "data.json", "provenance") == provenance):
        return "reused"
    began = time.perf_counter()
    model.mkdir(parents=True, exist_ok=True)
    checkpoint = model / CHECKPOINT
    if checkpoint.is_file() and torch.load(checkpoint, map_location="cpu",
                                           weights_only=True).get("provenance") != provenance:
        checkpoint.unlink()  # another kernels' epochs: training them on would mix two reproductions
    in_use = run_pinned(kernels, _train_model, training, out, no_progress, threads, provenance)
    exemplar_bank(read_cub(out / "data"), model / "exemplars")
    (model / "data.json").write_text(json.dumps({"config": asdict(data), "provenance": provenance,
                                                 "kernels": in_use}) + "\n", encoding="utf-8")
    return round(time.perf_counter() - began, 1)


def _train_model(training, out: Path, no_progress: bool, threads: int | None, provenance: dict) -> dict[str, str]:
    """Trains on out/data into out/model with ``threads`` torch threads (None: torch's default), in a pinned
    process where ``pinned_kernels`` starts one; the kernels that ran."""
    set_threads(threads)
    from galore.classifier_training import load_images, train_classifier
    from galore.evaluate.cub import read_cub

    cub = read_cub(out / "data")
    train_set = load_images(cub, cub.train_ids, training.input_size)
    held_out = load_images(cub, cub.test_ids, training.input_size)
    train_classifier(train_set, held_out, list(cub.class_names), out / "model", training, resume=True,
                     progress=not no_progress, provenance=provenance)
    return kernels_in_use()


def exemplar_bank(cub, folder: Path, per_class: int = EXEMPLARS_PER_CLASS) -> None:
    """folder/<class name>/*.jpg: the first ``per_class`` training images of every class (model_store.build's
    --exemplar-bank)."""
    shutil.rmtree(folder, ignore_errors=True)
    for c, name in enumerate(cub.class_names):
        (folder / name).mkdir(parents=True)
        for i in cub.ids_of_class(c, train=True)[:per_class]:
            shutil.copy2(cub.root / "images" / cub.paths[i], folder / name / Path(cub.paths[i]).name)


def _protocol(cub, arch: str, state_dict: Path, layer: str, settings, no_progress: bool):
    from galore.evaluate.proxy import run_protocol, select_images

    engine = _engine(Namespace(arch=arch, state_dict=str(state_dict), layer=layer, hardness_arch=None,
                               hardness_state_dict=None, device=None), settings.geometry, list(cub.class_names))
    bar = _bar(len(select_images(cub, settings)), no_progress)
    report = run_protocol(engine, cub, settings, progress=bar.update)
    bar.close()
    return report, engine


def _evaluate_with_threads(data, training, out: Path, args: argparse.Namespace) -> bool:
    """``evaluate`` with ``args.threads`` torch threads, in a pinned process where ``pinned_kernels`` starts one."""
    set_threads(args.threads)
    return evaluate(data, training, out, args)


def evaluate(data, training, out: Path, args: argparse.Namespace) -> bool:
    """The proxy protocol on the trained and on the random-weight model; the report. True if some image failed."""
    import torch

    from galore import zoo
    from galore.classifier_training import REPORT, WEIGHTS
    from galore.evaluate.cub import fingerprint, read_cub
    from galore.evaluate.proxy import PART_MAPPINGS, GroundTruth, ProxySettings
    from galore.evaluate.proxy import View
    from galore.evaluate.region_baselines import baseline_curves, segment_curves
    from galore.evaluate.search_baselines import finer_cam_values, score_search_baselines
    from galore.evaluate.synthetic import design
    from galore.evaluate.synthetic_truth import ConstructionTruth, family_confusion, protocol_agreement
    from galore.options import ExplainOptions

    cub = read_cub(out / "data")
    d = design(data)
    limit = args.limit or (12 if args.quick else None)
    settings = ProxySettings(options=ExplainOptions(dims=(2, 3)), limit=limit,
                             **({"coverages": QUICK_COVERAGES} if args.quick else {}))
    results, failed, search, finer_cam = {}, False, {}, {}
    runs = [("trained", out / "model" / WEIGHTS)]
    if not args.no_random:
        random_weights = out / "model" / "random_weights.pt"
        torch.manual_seed(training.seed + 1)
        torch.save(zoo.torchvision_classifier(training.arch, cub.num_classes).state_dict(), random_weights)
        runs.append(("random", random_weights))
    gt = GroundTruth.of(cub, settings.fraction, settings.smoothing, PART_MAPPINGS[settings.part_mapping],
                        seed=settings.seed)
    baselines, construction, truth = {}, {}, ConstructionTruth(d)
    for name, weights in runs:
        began = time.perf_counter()
        report, engine = _protocol(cub, training.arch, weights, training.layer, settings, args.no_progress)
        summary = report.summary()
        summary["seconds"] = round(time.perf_counter() - began, 1)
        maps = {}
        if name == "trained" and not args.no_finer_cam:
            bar = _bar(len(report.images), args.no_progress)
            values, seconds = finer_cam_values(engine, View(cub, engine.preprocess, settings.geometry), report,
                                               bar.update)
            bar.close()
            maps = {"finer_cam": values}
            finer_cam = {"segments": len(values), "images": len({i for i, _, _ in values}), "seconds": round(seconds, 1)}
        baselines[name] = baseline_curves(report, gt, engine.grid.side, maps=maps)  # each run's own segments, truth
        construction[name] = {"galore": segment_curves(report, truth),
                              **baseline_curves(report, truth, engine.grid.side, maps=maps)}
        searched = SEARCH_IMAGES if args.search_images is None and not args.quick else (args.search_images or 0)
        if name == "trained" and searched:
            search = score_search_baselines(engine, View(cub, engine.preprocess, settings.geometry), report, gt,
                                            searched, TABLE3_COVERAGES).summary()
        folder = out / ("proxy" if name == "trained" else "proxy-random")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "proxy.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
        (folder / "proxy.md").write_text(markdown(summary), encoding="utf-8")
        results[name] = summary
        failed |= bool(report.failures)
    trained = json.loads((out / "model" / REPORT).read_text(encoding="utf-8"))
    agreement = protocol_agreement(cub, d)
    confusion = family_confusion(trained["held_out"]["confusion"], d.families)
    report = {"data": asdict(data), "training": trained["config"], "accuracy": {
        k: trained["held_out"][k] for k in ("top1", "top5", "images")}, "train_seconds": trained["train_seconds"],
        "family_confusion": confusion, "protocol_agreement": agreement, "coverages": list(settings.coverages),
        "baselines": baselines, "search": search, "construction": construction, "finer_cam": finer_cam,
        "proxy": {k: {"curves": v["curves"], "piou": v["piou"], "strength_precision": v["strength_precision"],
                      "images": v["images"], "seconds": v["seconds"]} for k, v in results.items()},
        "machine": machine(), "data_sha256": fingerprint(cub), "weights_sha256": trained.get("weights_sha256"),
        "threads": trained.get("threads"), "kernels": _stored(out / "model" / "data.json", "kernels"),
        "evaluation_kernels": kernels_in_use(), "evaluation_threads": torch.get_num_threads()}
    (out / "synthetic.json").write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    text = render_report(report, {k: markdown(v) for k, v in results.items()})
    (out / "synthetic.md").write_text(text, encoding="utf-8")
    print(text)
    return failed


def machine() -> dict:
    """The CPU model (lscpu's "Model name", else platform), cores, the 1-minute load average and the versions of
    the libraries the data and the classifier come from."""
    from importlib.metadata import version

    return {"cpu": cpu_model(), "cores": os.cpu_count(), "load_average": round(os.getloadavg()[0], 2),
            "versions": {name: version(name) for name in ("torch", "numpy", "pillow")}}


def render_report(report: dict, proxy_markdown: dict[str, str]) -> str:
    """synthetic.md: the data set, the classifier, the two ground truths, the protocol on both models."""
    from galore.evaluate.synthetic_truth import summary_rows

    data, acc, fam, m = report["data"], report["accuracy"], report["family_confusion"], report["machine"]
    within = "n/a" if fam["within_family"] is None else f"{fam['within_family']:.2f}"
    lines = [
        "# Synthetic part-annotated benchmark", "",
        f"Machine: {m['cpu']}, {m['cores']} cores, load average {m['load_average']} at the end of the run.", "",
        *reproduction_rows(report), "",
        "## Data set", "",
        "| classes | families of | images (train / test) | image side | attribute noise | occlusion | seed |",
        "|---|---|---|---|---|---|---|",
        f"| {data['num_classes']} | {data['family_size']} | {data['num_classes'] * data['train_per_class']} / "
        f"{data['num_classes'] * data['test_per_class']} | {data['size']} | {data['attribute_noise']} | "
        f"{data['occlusion']} | {data['seed']} |", "",
        "## Classifier", "",
        "| arch | F | epochs | held-out top-1 | top-5 | errors within the family (chance) | training seconds |",
        "|---|---|---|---|---|---|---|",
        f"| {report['training']['arch']} | {report['training']['layer']} | {report['training']['epochs']} | "
        f"{acc['top1']:.3f} | {acc['top5']:.3f} | {within} ({fam['chance']:.2f}) | {report['train_seconds']} |", "",
        "## The protocol's ground truth against the generator's", "",
        "How often the protocol's 20 % attribute-similarity cut selects the parts shared by construction:", "",
        *summary_rows(report["protocol_agreement"]), "",
    ]
    lines += [*baseline_rows(report), ""]
    if report.get("construction"):
        lines += [*construction_rows(report), ""]
    if report.get("search"):
        lines += [*search_rows(report["search"]), ""]
    for name, text in proxy_markdown.items():
        title = "trained model" if name == "trained" else "the same network with random weights (Fig. 11)"
        run = report["proxy"][name]
        rate = run["images"] / max(run["seconds"], 1e-9)
        lines += [f"## Proxy protocol, {title} ({run['seconds']} s, {rate:.2f} images/s with every kind, the "
                  "sweep and the exemplars)", "", text]
    return "\n".join(lines)


def reproduction_rows(report: dict) -> list[str]:
    """Markdown: what another run must match to reproduce this one (data and weights fingerprints, the kernels and
    threads the classifier was trained and evaluated with, the library versions)."""
    versions = report["machine"].get("versions", {})
    return ["Reproduction: data sha256 `" + str(report.get("data_sha256", "-"))[:16] + "`, weights sha256 `"
            + str(report.get("weights_sha256") or "-")[:16] + "` (first 16 hex digits); trained with "
            + kernels_text(report.get("kernels")) + f" kernels on {report.get('threads') or '?'} threads, "
            + "evaluated with " + kernels_text(report.get("evaluation_kernels"))
            + f" kernels on {report.get('evaluation_threads') or '?'} threads; "
            + ", ".join(f"{k} {v}" for k, v in versions.items()) + "."]


TABLE3_COVERAGES = (0.005, 0.1)  # one receptive-field unit of a 14 x 14 F (Table III), and the reference level
REGION_ROWS = ("random", "object_prior", "attributive", "finer_cam")  # region_baselines.BASELINES + FinerCAM's maps
BASELINE_KEYS = ("attributive/1", "deliberative/2", "deliberative/3", "counterfactual/1", "counterfactual/2")


def baseline_rows(report: dict) -> list[str]:
    """Markdown: precision / recall of each explanation against the baselines of the same size (Table III)."""
    import numpy as np

    from galore.evaluate.region_baselines import at

    covs = report["coverages"]
    runs = report["proxy"]

    def cell(values, coverage) -> str:
        v = at(covs, values, coverage)
        return "-" if v is None else f"{v:.3f}"

    def spread(per_seed, coverage) -> str:
        vals = [at(covs, s, coverage) for s in per_seed]
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        return f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")

    head = " | ".join(f"P @ {c:.1%} | R @ {c:.1%}" for c in TABLE3_COVERAGES)
    lines = ["## Explanations against baseline regions of the same size (Table III)", "",
             "Query-side segments, each re-scored against its own ground truth with a region of the same number of "
             "cells: random cells (mean ± sd over 3 seeds), the object prior (random cells of the object, "
             "approximated by disks about the visible part points; 3 seeds), y*'s attributive region, and for "
             "counterfactuals FinerCAM (pytorch-grad-cam) of y* against the same counter classes. The "
             "random-weight network (Fig. 11) explains other class tuples (its own predictions), so it has its own "
             "random-region row.", "", f"| explanation | region | {head} |",
             "|---|---|" + "---|---|" * len(TABLE3_COVERAGES)]
    for key in BASELINE_KEYS:
        rows = []
        for run, label, names in (("trained", "GALORE", REGION_ROWS),
                                  ("random", "GALORE, random weights", ("random",))):
            curve = runs.get(run, {}).get("curves", {}).get(key)
            if not curve:
                continue
            rows.append((label, " | ".join(f"{cell(curve['precision'], c)} | {cell(curve['recall'], c)}"
                                           for c in TABLE3_COVERAGES)))
            for name in names:
                base = report["baselines"].get(run, {}).get(name, {}).get(key)
                if base and not (name == "attributive" and key == "attributive/1"):
                    title = region_title(name) + ("" if run == "trained" else ", random-weight segments")
                    rows.append((title, " | ".join(f"{spread(base['precision'], c)} | {spread(base['recall'], c)}"
                                                   for c in TABLE3_COVERAGES)))
        lines += [f"| {key} | {name} | {values} |" for name, values in rows]
    cam = report.get("finer_cam")
    if cam:
        lines += ["", f"FinerCAM: {cam['segments']} counterfactual segments of {cam['images']} images in "
                      f"{cam['seconds']} s ({cam['images'] / max(cam['seconds'], 1e-9):.2f} images/s, one backward "
                      "per segment)."]
    return lines


def region_title(name: str) -> str:
    """A baseline region's name in the tables (``REGION_ROWS``)."""
    return "FinerCAM" if name == "finer_cam" else name.replace("_", " ")


def search_rows(search: dict) -> list[str]:
    """Markdown: Table III at one receptive-field unit, GALORE against the search baselines on the same segments."""
    def num(v, fmt="{:.3f}"):
        return "-" if v is None else fmt.format(v)

    names = {"galore": "GALORE", "goyal": "Goyal et al. 2019 (exhaustive feature matching)",
             "finer_cam": "FinerCAM (pytorch-grad-cam)", "sliding_window": "sliding window (§VI-F)"}
    lines = ["## Table III: search baselines on the same segments", "",
             "One receptive-field unit (0.5 %) and 10 %; each row scores the same query-side segments (binary "
             "counterfactual (y*, runner-up), and the strongest V = 2 insecurity per image) against the same "
             "ground truth. images/s: the search alone per image; GALORE's, the engine for that kind alone.", "",
             "| explanation | method | segments | P @ 0.5% | R @ 0.5% | PIoU @ 0.5% | P @ 10% | R @ 10% | "
             "images/s |", "|---|---|---|---|---|---|---|---|---|"]
    for key in ("counterfactual/1", "deliberative/2"):
        for method in ("galore", "goyal", "finer_cam", "sliding_window"):
            row = search.get(f"{method}/{key}")
            if not row:
                continue
            p, r, piou = row["precision"] or [None] * 2, row["recall"] or [None] * 2, row["piou"] or [None] * 2
            lines.append(f"| {key} | {names[method]} | {row['segments']} | {num(p[0])} | {num(r[0])} | "
                         f"{num(piou[0])} | {num(p[-1])} | {num(r[-1])} | "
                         f"{num(row['images_per_second'], '{:.3g}')} |")
    return lines


def construction_rows(report: dict) -> list[str]:
    """Markdown: every region re-scored against the generator's ground truth (synthetic_truth.ConstructionTruth)
    instead of the protocol's 20 % cut."""
    import numpy as np

    from galore.evaluate.region_baselines import at

    covs = report["coverages"]

    def cell(values, coverage) -> str:
        if values and isinstance(values[0], list):  # per seed
            vals = [v for v in (at(covs, s, coverage) for s in values) if v is not None]
            return "-" if not vals else f"{np.mean(vals):.3f}" + (f" ± {np.std(vals):.3f}" if len(vals) > 1 else "")
        v = at(covs, values, coverage)
        return "-" if v is None else f"{v:.3f}"

    head = " | ".join(f"P @ {c:.1%} | R @ {c:.1%}" for c in TABLE3_COVERAGES)
    lines = ["## Regions against the generator's ground truth", "",
             "The same query-side regions as above, scored against the parts shared (insecurities) and differing "
             "(counterfactuals) by construction (ground_truth.json) instead of the protocol's 20 % cut.", "",
             f"| explanation | region | {head} |", "|---|---|" + "---|---|" * len(TABLE3_COVERAGES)]
    for key in BASELINE_KEYS:
        for run, suffix in (("trained", ""), ("random", ", random weights")):
            curves = report["construction"].get(run, {})
            for name in ("galore", *REGION_ROWS):
                c = curves.get(name, {}).get(key)
                if not c or (name == "attributive" and key == "attributive/1") or (
                        run == "random" and name not in ("galore", "random")):
                    continue
                title = ("GALORE" if name == "galore" else region_title(name)) + suffix
                lines.append(f"| {key} | {title} | " + " | ".join(
                    f"{cell(c['precision'], v)} | {cell(c['recall'], v)}" for v in TABLE3_COVERAGES) + " |")
    return lines
