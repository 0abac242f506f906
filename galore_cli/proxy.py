"""`galore evaluate proxy`: the paper's proxy localisation protocol on CUB-200-2011 (GALORE TPAMI 2023 §VI-B,
§VII-A/D; Deliberative Explanations, NeurIPS 2019 §4), run with the engine in this process.

    galore evaluate proxy CUB_200_2011 --arch resnet50 --state-dict cub_resnet50.pt --out proxy-report
        [--hardness-arch resnet18 --hardness-state-dict h.pt --score easiness] [--hardest 100] [--limit N]

Ground truth comes from the part and attribute annotations (module galore.evaluate.proxy): the 20 % (part, class
tuple) triplets whose classes have the most similar attribute distributions on that part are insecurities, the
rest counterfactual ground truth. Each region (attributive, self-aware, deliberative V=2,3, counterfactual with 1
and 2 counter classes) is scored by the part points it holds: precision and recall over a 0.5 %, 1 %..90 % coverage
sweep, PIoU of counterfactual region pairs, and the Pearson correlation between strength and precision (Table II).

The classifier's class i must be CUB class i + 1 (classes.txt order). Writes DIR/proxy.json (every curve),
DIR/proxy.md (a table) and DIR/proxy_pr.png (precision-recall curves). Exit status: 0 done, 1 some images failed
(listed in the JSON), 2 bad input.

ARCH: one of {archs}.
"""
from __future__ import annotations

import argparse
import json
import sys
from argparse import Namespace
from dataclasses import replace
from pathlib import Path

from galore.errors import GaloreError, InvalidArgument

from .status import EXIT_BAD_INPUT, EXIT_IMAGE_FAILED, EXIT_OK, CliError, set_threads

TABLE_COVERAGES = (0.05, 0.1, 0.2, 0.3, 0.5)  # columns of the markdown table


def add_parser(evaluate_commands) -> argparse.ArgumentParser:
    """Adds the ``proxy`` sub-command to ``galore evaluate``'s sub-parsers."""
    from galore.evaluate.proxy import COVERAGE_PRESETS, DEFAULT_FRACTION, ESTIMATORS, PART_MAPPINGS, CounterUser, \
        ProxySettings
    from galore.options import Attribution, ExplainOptions, Score, Target, choices
    from galore.zoo import TORCHVISION_ARCHS

    o, s = ExplainOptions(), ProxySettings()
    p = evaluate_commands.add_parser(
        "proxy", help="the paper's proxy protocol on CUB-200-2011 part/attribute annotations (GALORE §VI-B)",
        description=__doc__.replace("{archs}", ", ".join(TORCHVISION_ARCHS)),
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", metavar="CUB_ROOT", help="a dataset in the CUB-200-2011 layout")
    model = p.add_argument_group("model (the classifier's class i is CUB class i + 1)")
    model.add_argument("--arch", required=True, choices=TORCHVISION_ARCHS, metavar="ARCH",
                       help="torchvision architecture")
    model.add_argument("--state-dict", required=True, help="its weights, trained on the dataset's classes")
    model.add_argument("--layer", help="layer F the explanations use (default: the last convolutional stage)")
    model.add_argument("--hardness-arch", choices=TORCHVISION_ARCHS, metavar="ARCH", help="hardness predictor (galore "
                                                                          "train-hardness) for --score easiness")
    model.add_argument("--hardness-state-dict", help="the hardness predictor's weights")
    model.add_argument("--student-arch", choices=TORCHVISION_ARCHS, metavar="ARCH",
                       help="a second classifier, the simulated user (SCOUT): explain only the images it gets wrong "
                            "and the model gets right, against its guesses (with --student-state-dict)")
    model.add_argument("--student-state-dict", help="the student's weights")
    model.add_argument("--device", help="torch device (default: CUDA if present, else CPU)")
    model.add_argument("--threads", type=int, help="CPU threads for torch (default: torch's own choice; 1 is "
                                                   "fastest on a busy machine, see EVALUATION.md)")
    g = p.add_argument_group("attribution settings under test")
    g.add_argument("--attribution", choices=choices(Attribution), default=o.attribution.value,
                   help=f"attribution function a(.) (§V-A) (default {o.attribution.value})")
    g.add_argument("--score", choices=choices(Score), default=o.score.value,
                   help=f"confidence score s(x) (§V-B) (default {o.score.value})")
    g.add_argument("--target", choices=choices(Target), default=o.target.value,
                   help=f"attributed output of a class (default {o.target.value})")
    g.add_argument("--clip-negative", action=argparse.BooleanOptionalAction, default=o.clip_negative,
                   help=f"clip negative attributions (default {o.clip_negative})")
    g.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=o.normalize,
                   help=f"min-max normalise each attribution map (default {o.normalize})")
    g.add_argument("--ig-steps", type=int, default=o.ig_steps, help=f"integrated-gradients steps "
                                                                    f"(default {o.ig_steps})")
    g.add_argument("--top-e", type=int, default=o.top_e, help=f"classes deliberation draws from, E (default "
                                                              f"{o.top_e})")
    g.add_argument("--dims", type=_ints, default=s.options.dims, metavar="V[,V]",
                   help=f"deliberative V's (default {_text(s.options.dims)})")
    g.add_argument("--coverage", type=float, default=s.reference, metavar="FRACTION",
                   help=f"reference coverage of the strength-precision correlation (default {s.reference})")
    pr = p.add_argument_group("protocol")
    pr.add_argument("--coverages", default="default", metavar="PRESET|C[,C...]",
                    help="coverages swept: a preset (" + ", ".join(COVERAGE_PRESETS) + "; default: 0.5 %% then "
                         "1 %%..90 %%; table3-*: Table III's one receptive-field unit) or a comma list of fractions; "
                         "must hold --coverage")
    pr.add_argument("--geometry", choices=("resize", "crop"), default=s.geometry,
                    help=f"what the model sees (default {s.geometry}: the whole image resized to the crop side, as "
                         "the authors' NeurIPS 2019 script; crop: resize the short side and centre-crop, where parts "
                         "outside the crop are never seen)")
    pr.add_argument("--part-mapping", choices=tuple(PART_MAPPINGS), default=s.part_mapping,
                    help=f"attribute groups of each part (default {s.part_mapping}: the authors' "
                         "create_similarityMatrix_cls_part_cub.py)")
    pr.add_argument("--estimator", choices=ESTIMATORS, default=s.estimator,
                    help=f"Table II correlation (default {s.estimator}: one point per segment at --coverage; pooled: "
                         "one point per coverage level)")
    pr.add_argument("--counter-dims", type=_ints, default=s.counter_dims, metavar="N[,N]",
                    help=f"numbers of counter classes: 1 binary, 2 multi-class (default {_text(s.counter_dims)})")
    pr.add_argument("--counter-user", choices=choices(CounterUser), default=s.counter_user.value,
                    help="counter classes: the classifier's runner-up classes (expert user) or random ones "
                         f"(beginner) (default {s.counter_user.value})")
    pr.add_argument("--attributive-classes", type=int, default=s.attributive_classes, metavar="L",
                    help=f"random classes an attributive map is scored against (default {s.attributive_classes})")
    pr.add_argument("--fraction", type=float, default=DEFAULT_FRACTION,
                    help=f"share of triplets that are ground-truth insecurities (default {DEFAULT_FRACTION})")
    pr.add_argument("--split", choices=("test", "train", "all"), default=s.split,
                    help=f"images explained (default {s.split})")
    pr.add_argument("--limit", type=int, help="explain at most this many images of the split")
    pr.add_argument("--hardest", type=int, help="explain only the N images of lowest s(x) (the paper: 100)")
    pr.add_argument("--batch-size", type=int, default=s.batch_size, help=f"(default {s.batch_size})")
    pr.add_argument("--seed", type=int, default=s.seed, help=f"(default {s.seed})")
    p.add_argument("--out", default="proxy-report", metavar="DIR",
                   help="folder for proxy.json, proxy.md, proxy_pr.png (default proxy-report)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def _ints(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a comma list of integers, got {text!r}") from None


def _coverages(text: str) -> tuple[float, ...]:
    from galore.evaluate.proxy import COVERAGE_PRESETS

    if text in COVERAGE_PRESETS:
        return COVERAGE_PRESETS[text]
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise InvalidArgument("coverages", f"a preset ({', '.join(COVERAGE_PRESETS)}) or a comma list of "
                                           f"fractions, got {text!r}") from None


def _text(values) -> str:
    return ",".join(str(v) for v in values)


def settings_of(args: argparse.Namespace):
    from galore.evaluate.proxy import CounterUser, ProxySettings
    from galore.options import Attribution, ExplainOptions, Score, Target, Threshold

    options = ExplainOptions(attribution=Attribution(args.attribution), score=Score(args.score),
                             target=Target(args.target), clip_negative=args.clip_negative,
                             normalize=args.normalize, ig_steps=args.ig_steps, top_e=args.top_e,
                             dims=tuple(sorted(args.dims)), threshold=Threshold(coverage=args.coverage))
    return ProxySettings(options=options, coverages=_coverages(args.coverages), part_mapping=args.part_mapping,
                         estimator=args.estimator, geometry=args.geometry, counter_dims=tuple(args.counter_dims),
                         counter_user=CounterUser(args.counter_user), attributive_classes=args.attributive_classes,
                         fraction=args.fraction, split=args.split, limit=args.limit, hardest=args.hardest,
                         batch_size=args.batch_size, seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from galore.evaluate.cub import read_cub
    from galore.evaluate.proxy import run_protocol, select_images

    set_threads(args.threads)
    try:
        settings = settings_of(args)
        cub = read_cub(args.data)
        for flag, path in (("--state-dict", args.state_dict), ("--hardness-state-dict", args.hardness_state_dict)):
            if path and not Path(path).is_file():
                raise CliError(f"{flag}: {path} does not exist", EXIT_BAD_INPUT)
        if bool(args.hardness_arch) != bool(args.hardness_state_dict):
            raise CliError("--hardness-arch and --hardness-state-dict go together", EXIT_BAD_INPUT)
        if bool(args.student_arch) != bool(args.student_state_dict):
            raise CliError("--student-arch and --student-state-dict go together", EXIT_BAD_INPUT)
        if args.student_state_dict and not Path(args.student_state_dict).is_file():
            raise CliError(f"--student-state-dict: {args.student_state_dict} does not exist", EXIT_BAD_INPUT)
        engine = _engine(args, settings.geometry, list(cub.class_names))
        total = len(select_images(cub, settings))
        bar = _bar(total if not settings.hardest else min(total, settings.hardest), args.no_progress)
        student = None
        if args.student_arch:
            student = _engine(Namespace(arch=args.student_arch, state_dict=args.student_state_dict, layer=None,
                                        hardness_arch=None, hardness_state_dict=None, device=args.device),
                              settings.geometry, list(cub.class_names))
        report = run_protocol(engine, cub, settings, progress=bar.update, student=student)
        bar.close()
    except GaloreError as exc:
        raise CliError(f"{_flag(exc.field)}: {exc.message}", EXIT_BAD_INPUT) from None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary = report.summary()
    summary["model"] = {"arch": args.arch, "state_dict": args.state_dict, "layer": engine.split.layer,
                        "hardness_arch": args.hardness_arch, "data": str(args.data)}
    (out / "proxy.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "proxy.md").write_text(markdown(summary), encoding="utf-8")
    written = [out / "proxy.json", out / "proxy.md"]
    try:
        plot(summary, out / "proxy_pr.png")
        written.append(out / "proxy_pr.png")
    except ImportError:
        print("matplotlib is not installed: no proxy_pr.png (pip install matplotlib)", file=sys.stderr)
    print(markdown(summary))
    print("wrote " + ", ".join(map(str, written)))
    if report.failures:
        print(f"{len(report.failures)} image(s) failed; see failures in proxy.json")
        return EXIT_IMAGE_FAILED
    return EXIT_OK


def _engine(args: argparse.Namespace, geometry: str, labels: list[str]):
    """The classifier; for geometry "resize" its preprocessing resizes to the crop side, so it sees every pixel."""
    from galore import Engine, zoo

    if geometry == "crop":
        return Engine.from_torchvision(args.arch, labels, args.state_dict, args.layer, args.hardness_arch,
                                       args.hardness_state_dict, device=args.device)
    prep = replace(zoo.IMAGENET_PREPROCESS, resize=zoo.IMAGENET_PREPROCESS.crop)
    hardness = (zoo.torchvision_classifier(args.hardness_arch, 1, args.hardness_state_dict) if args.hardness_arch
                else None)
    return Engine.from_module(args.arch, zoo.torchvision_classifier(args.arch, len(labels), args.state_dict), labels,
                              prep, args.layer, hardness, device=args.device)


def _flag(field: str) -> str:
    """The command-line spelling of the field an error names: a flag, or CUB_ROOT and the file for the data."""
    name = field.removeprefix("options.").split(".")[0]
    if field in ("options.threshold.coverage", "options.threshold"):
        return "--coverage"
    if field in ("coverages", "part_mapping", "estimator", "geometry"):
        return "--" + field.replace("_", "-")
    if name in ("attribution", "score", "target", "top_e", "dims", "ig_steps", "counter_dims", "counter_user",
                "attributive_classes", "fraction", "split", "limit", "hardest", "batch_size", "arch", "layer"):
        return "--" + name.replace("_", "-")
    if field in ("model", "labels", "state_dict"):
        return "--state-dict"
    return "CUB_ROOT" if field == "root" else f"CUB_ROOT {field}"


def _bar(total: int, disabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc="images", unit="img", disable=disabled)


def _fmt(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def _at(summary: dict, values: list, coverage: float):
    covs = summary["coverages"]
    i = min(range(len(covs)), key=lambda j: abs(covs[j] - coverage))
    return values[i] if abs(covs[i] - coverage) < 1e-9 else None


def markdown(summary: dict) -> str:
    """Precision / recall at a few coverages per explanation, PIoU, and the Table II correlations."""
    s = summary["settings"]
    lines = [f"Proxy protocol: {summary['images']} images ({s['split']} split), attribution {s['attribution']}, "
             f"score {s['score']}, target {s['target']}, clip {s['clip_negative']}, normalize {s['normalize']}, "
             f"counter classes: {s['counter_user']}; geometry {s['geometry']}; part mapping {s['part_mapping']}; "
             f"Table II estimator {s['estimator']}; "
             f"coverages {summary['coverages'][0]:.1%}..{summary['coverages'][-1]:.0%} "
             f"({len(summary['coverages'])} levels).", "",
             "Rules: " + "; ".join(f"{k}: {v}" for k, v in s["rules"].items()) + ".", "",
             "| explanation | " + " | ".join(f"P / R @ {c:.0%}" for c in TABLE_COVERAGES) + " | segments |",
             "|---|" + "---|" * (len(TABLE_COVERAGES) + 1)]
    for key, curve in summary["curves"].items():
        cells = [f"{_fmt(_at(summary, curve['precision'], c))} / {_fmt(_at(summary, curve['recall'], c))}"
                 for c in TABLE_COVERAGES]
        lines.append(f"| {key} | " + " | ".join(cells) + f" | {curve['segments']} |")
    if summary["piou"]:
        lines += ["", "| counterfactual | " + " | ".join(f"PIoU @ {c:.0%}" for c in TABLE_COVERAGES) + " |",
                  "|---|" + "---|" * len(TABLE_COVERAGES)]
        for key, values in summary["piou"].items():
            lines.append(f"| {key} | " + " | ".join(_fmt(_at(summary, values, c)) for c in TABLE_COVERAGES) + " |")
    if summary["strength_precision"]:
        where = (f"at coverage {s['reference_coverage']:.0%}, one point per segment" if s["estimator"] == "reference"
                 else "one point per coverage level (mean strength, mean precision)")
        lines += ["", f"Strength vs precision, {where} (Table II):", "",
                  "| explanation | Pearson r | p-value | n |", "|---|---|---|---|"]
        for key, c in summary["strength_precision"].items():
            p = "-" if c["p_value"] is None else f"{c['p_value']:.2g}"
            lines.append(f"| {key} | {_fmt(c['pearson'])} | {p} | {c['n']} |")
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    """Precision-recall curves (one line per explanation), as in the paper's Figs. 7-9."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5))
    for key, curve in summary["curves"].items():
        pts = [(r, p) for r, p in zip(curve["recall"], curve["precision"]) if r is not None and p is not None]
        if pts:
            ax.plot(*zip(*pts), marker=".", markersize=3, label=key)
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title(f"proxy protocol, {summary['images']} images, coverage {summary['coverages'][0]:.0%}.."
                 f"{summary['coverages'][-1]:.0%}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
