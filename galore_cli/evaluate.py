"""``galore evaluate``: faithfulness metrics of the explanations (in-process, default model); one sub-command per
metric, registered by the functions listed in ``METRIC_PARSERS`` (one line per metric).
"""
from __future__ import annotations

DESCRIPTION = """Measure how faithful the explanations are, in-process on the default model.

Every sub-command compares the attribution settings given by --attribution, --attribution-target, --post and
--score (their product; each defaults to the engine default) or the preset --compare-defaults, over the photos of
--photos DIR (default: scikit-image's sample photos), and writes METRIC.json, METRIC.md and METRIC.png into --out.
Needs the ``evaluate`` extra (matplotlib, pytorch-grad-cam, scikit-image): pip install 'galore-serve[evaluate]'.
"""

import argparse
import importlib.util
import itertools
import json
import sys
from pathlib import Path
from typing import Callable

from galore.errors import InvalidArgument
from galore.options import Attribution, Score, Target, choices, member

from .proxy import add_parser as add_proxy_parser
from .synthetic import add_parser as add_synthetic_parser

EXIT_OK, EXIT_BAD_INPUT = 0, 2
POSTS = {"clip": (True, False), "minmax": (False, True), "clip+minmax": (True, True), "raw": (False, False)}

REFERENCES = """references:
  deletion   Petsiuk, Das & Saenko, "RISE: Randomized input sampling for explanation of black-box models",
             BMVC 2018 (deletion and insertion); Selvaraju et al., "Grad-CAM", ICCV 2017 (reference map)
  types      Wang & Vasconcelos, GALORE, TPAMI 2023, eqs. 3, 5, 11 and 15-16 (Table II's strength correlation);
             Zhang et al., "Finer-CAM", CVPR 2025 (counterfactual reference)
  sanity     Adebayo et al., "Sanity checks for saliency maps", NeurIPS 2018 (cascading randomisation);
             Wang et al., "Image quality assessment: from error visibility to structural similarity", IEEE TIP
             2004 (SSIM)
  pointing   Zhang et al., "Top-down neural attention by excitation backprop", ECCV 2016 (pointing game);
             Böhle, Fritz & Schiele, "Convolutional dynamic alignment networks", CVPR 2021 (grid pointing game)
  proxy      Wang & Vasconcelos, GALORE, TPAMI 2023, §VI-B and Table II (part/attribute ground truth, precision,
             recall, PIoU, strength-precision correlation); "Deliberative explanations", NeurIPS 2019, §4;
             Wah et al., "The Caltech-UCSD Birds-200-2011 dataset", 2011 (the data layout)
  synthetic  the proxy protocol above on generated birds whose shared and differing parts are known by
             construction; Hesse, Schaub-Meyer & Roth, "FunnyBirds", ICCV 2023 (the idea)
"""


class EvaluateError(Exception):
    """Ends ``galore evaluate`` with status 2 after printing the message."""


def add_evaluate_parser(commands) -> None:
    """Registers ``galore evaluate`` and its metric sub-commands on the main CLI's sub-parsers."""
    parser = commands.add_parser("evaluate", help="measure how faithful the explanations are",
                                 description=DESCRIPTION + "\n" + REFERENCES,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    metrics = parser.add_subparsers(dest="metric", metavar="METRIC")
    for add in METRIC_PARSERS:
        add(metrics)
    parser.set_defaults(func=lambda args: _usage(parser))


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_BAD_INPUT


def _metric(metrics, name: str, help: str, description: str) -> argparse.ArgumentParser:
    p = metrics.add_parser(name, help=help, description=description)
    p.add_argument("--photos", metavar="DIR", help="folder of photos (default: scikit-image's sample photos "
                                                   "chelsea, astronaut, coffee, rocket, camera)")
    p.add_argument("--limit", type=int, metavar="N", help="use the first N photos only")
    p.add_argument("--out", default="galore-evaluation", metavar="DIR",
                   help="folder for METRIC.json, METRIC.md and METRIC.png (default: galore-evaluation)")
    p.add_argument("--device", help="torch device (default: CUDA if present, else CPU)")
    p.add_argument("--attribution", default=Attribution.GRADIENT_X_ACTIVATION.value, metavar="A[,A...]",
                   help=f"attribution functions to compare: {', '.join(choices(Attribution))} "
                        f"(default {Attribution.GRADIENT_X_ACTIVATION.value})")
    p.add_argument("--attribution-target", default=Target.LOGIT.value, metavar="T[,T...]",
                   help=f"attributed output: {', '.join(choices(Target))} (default {Target.LOGIT.value})")
    p.add_argument("--post", default="clip", metavar="P[,P...]",
                   help=f"map post-processing: {', '.join(POSTS)} (default clip: the engine's default)")
    p.add_argument("--score", default=Score.SOFTMAX.value, metavar="S[,S...]",
                   help=f"confidence scores: {', '.join(c for c in choices(Score) if c != 'easiness')} "
                        f"(default {Score.SOFTMAX.value})")
    p.add_argument("--ig-steps", type=int, default=50, help="integrated-gradients steps (default 50)")
    p.add_argument("--compare-defaults", action="store_true",
                   help="compare the preset settings of EVALUATION.md instead: the default, the paper's "
                        "(probability + min-max), each other attribution, and the certainty score")
    p.add_argument("--complement", choices=("per_map", "shared"),
                   help="m^beta's scale in counterfactual maps for this run (eq. 10): per_map, each counter class "
                        "against its own max, 1 without evidence; shared, one M with y* (default: the engine's, "
                        "galore.combiner.COMPLEMENT)")
    p.add_argument("--no-plot", action="store_true", help="write no PNG")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of the markdown table")
    return p


def _add_deletion(metrics) -> None:
    p = _metric(metrics, "deletion", "deletion and insertion AUC of attributive maps (RISE)",
                "Deletion / insertion AUC (RISE, Petsiuk et al. BMVC 2018) of the attributive map of the predicted "
                "class: pixels of the crop removed (inserted) most salient first against a blurred or mean "
                "baseline; the probability of the class is followed. Lower deletion AUC and higher insertion AUC "
                "are better. References: a random map and pytorch-grad-cam's GradCAM (Selvaraju et al. 2017).")
    _add_baseline(p)
    _add_steps(p)
    p.add_argument("--no-references", action="store_true", help="skip the random-map and Grad-CAM references")
    p.set_defaults(func=run_metric, metric="deletion")


def _add_types(metrics) -> None:
    p = _metric(metrics, "types", "deletion test of each explanation type against same-size references",
                "Removes each region the engine returns (attributive: probability of y*; deliberative insecurity "
                "(a, b[, c]), per V = 2, 3: min_c h_c, the evidence eq. 5 says the classes share, and, keeping "
                "only the region, sum_c h_c (insertion), with the former ambiguity V min_c h_c / sum_c h_c as a "
                "column; counterfactual: margin logit(y*) - logit(y^c)) and, as references, random regions and "
                "the attributive region of the same size (insecurities: each class's own), and for "
                "counterfactuals FinerCAM (Zhang et al. CVPR 2025) for the same classes. Reports the mean "
                "drop, the win rate against each reference and Spearman(strength, drop) (GALORE TPAMI 2023, "
                "eqs. 15-16, standing in for Table II).")
    _add_baseline(p)
    _add_regions(p)
    p.add_argument("--no-references", action="store_true", help="skip FinerCAM")
    p.set_defaults(func=run_metric, metric="types")


def _add_sanity(metrics) -> None:
    p = _metric(metrics, "sanity", "cascading model-parameter randomisation (Adebayo et al. 2018)",
                "Re-initialises the head, then the backbone, layer group by layer group from the top, "
                "cumulatively, and compares the attributive, deliberative and counterfactual maps of the same "
                "classes with the original model's: Spearman rank correlation and SSIM (Adebayo et al., NeurIPS "
                "2018). Faithful maps decorrelate.")
    _add_max_steps(p)
    p.set_defaults(func=run_metric, metric="sanity")


def _add_pointing(metrics) -> None:
    p = _metric(metrics, "pointing", "grid pointing game on 2 x 2 mosaics of the photos",
                "2 x 2 mosaics of photos the model classifies as 4 different classes; the attributive map of each "
                "cell's class (explained_class) should point into that cell: hit rate of the maximum and share of "
                "the positive mass (Zhang et al. ECCV 2016; Böhle et al. CVPR 2021). Chance is 0.25. Reference: "
                "pytorch-grad-cam's GradCAM. Needs at least 4 photos.")
    p.add_argument("--no-references", action="store_true", help="skip the Grad-CAM reference")
    p.set_defaults(func=run_metric, metric="pointing")


def _add_all(metrics) -> None:
    p = _metric(metrics, "all", "every metric above",
                "Runs deletion, types, pointing and sanity in turn, with the options of each.")
    _add_baseline(p)
    _add_steps(p)
    _add_regions(p)
    _add_max_steps(p)
    p.add_argument("--no-references", action="store_true", help="skip the random-map, Grad-CAM and FinerCAM "
                                                                "references")
    p.set_defaults(func=run_metric, metric="all")


def _add_steps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", type=int, default=50, help="deletion: points on each curve minus one (default 50)")


def _add_regions(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecurities", type=int, default=3, help="types: strongest insecurities per photo and V "
                                                               "(default 3)")
    p.add_argument("--random-draws", type=int, default=8, help="types: random regions per region (default 8)")


def _add_max_steps(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, metavar="N", help="sanity: randomise only the top N layer groups")


def _add_baseline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--baseline", default="blur", choices=("blur", "mean"),
                   help="what removed pixels become: a Gaussian blur of the crop (kernel 11, sigma 5, RISE) or "
                        "the crop's mean colour (default blur)")


METRIC_PARSERS: list[Callable] = [_add_deletion, _add_types, _add_sanity, _add_pointing, _add_all, add_proxy_parser,
                                   add_synthetic_parser]


# ---- running --------------------------------------------------------------------------------------------------
def settings_from(args):
    """The settings to compare: the preset of --compare-defaults, or the product of the listed values."""
    from galore.evaluate import Setting
    if args.compare_defaults:
        return preset_settings(args.ig_steps)
    try:
        attributions = [member(Attribution, v, "--attribution") for v in _split(args.attribution)]
        targets = [member(Target, v, "--attribution-target") for v in _split(args.attribution_target)]
        scores = [member(Score, v, "--score") for v in _split(args.score)]
    except InvalidArgument as exc:
        raise EvaluateError(str(exc)) from exc
    posts = _split(args.post)
    for p in posts:
        if p not in POSTS:
            raise EvaluateError(f"--post: unknown value {p!r}; choose from {', '.join(POSTS)}")
    if Score.EASINESS in scores:
        raise EvaluateError("--score: easiness needs a hardness predictor, which the default model has not")
    return [Setting.of(a, t, *POSTS[p], s, args.ig_steps)
            for a, t, p, s in itertools.product(attributions, targets, posts, scores)]


def preset_settings(ig_steps: int = 50):
    """EVALUATION.md's comparison: the default, the paper's text, each other attribution, the certainty score."""
    from galore.evaluate import Setting
    default = Setting.of(ig_steps=ig_steps)
    out = [default, Setting.of(target=Target.PROBABILITY, clip_negative=False, normalize=True, ig_steps=ig_steps)]
    out += [Setting.of(a, ig_steps=ig_steps) for a in Attribution if a is not Attribution.GRADIENT_X_ACTIVATION]
    out.append(Setting.of(score=Score.CERTAINTY, ig_steps=ig_steps))
    return out


def _split(text: str) -> list[str]:
    values = [v.strip() for v in text.split(",") if v.strip()]
    if not values:
        raise EvaluateError(f"empty list {text!r}")
    return values


def run_metric(args) -> int:
    try:
        return _run(args)
    except EvaluateError as exc:
        print(f"galore evaluate {args.metric}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except InvalidArgument as exc:
        print(f"galore evaluate {args.metric}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


def _run(args) -> int:
    for name in ("limit", "steps", "insecurities", "random_draws", "max_steps"):
        value = getattr(args, name, None)
        if value is not None and value < 1:
            raise EvaluateError(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    settings = settings_from(args)
    try:
        import galore.evaluate as ev
        if args.photos is None and importlib.util.find_spec("skimage") is None:  # the default photos' source
            raise ImportError("No module named 'skimage'")
    except ImportError as exc:
        raise EvaluateError(f"{exc}; install the evaluate extra: pip install 'galore-serve[evaluate]'") from exc
    photos = ev.folder_photos(args.photos, args.limit) if args.photos else ev.sample_photos()[:args.limit]
    from galore import Engine, combiner
    if getattr(args, "complement", None):  # this process only: both rules measured from the same code
        combiner.COMPLEMENT = combiner.Complement(args.complement)
    engine = Engine.default(device=args.device)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    baseline = ev.Baseline(getattr(args, "baseline", "blur"))

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    metrics = ["deletion", "types", "pointing", "sanity"] if args.metric == "all" else [args.metric]
    summaries = {}
    for metric in metrics:
        if metric == "deletion":
            report = ev.evaluate_deletion(ev.Scorer.of(engine), photos, settings, baseline, args.steps,
                                          not args.no_references, progress)
        elif metric == "types":
            report = ev.evaluate_types(engine, photos, settings, baseline, args.insecurities, args.random_draws,
                                       not args.no_references, progress)
        elif metric == "sanity":
            report = ev.evaluate_sanity(engine, photos, settings, args.max_steps, progress)
        else:
            report = ev.evaluate_pointing(engine, photos, settings, not args.no_references, progress)
        data = report.to_dict()
        data["photos"] = [p.name for p in photos]
        data["model"] = engine.name
        data["complement"] = combiner.COMPLEMENT.value
        (out / f"{metric}.json").write_text(json.dumps(data, default=_plain))
        table = markdown_table(data["summary"])
        (out / f"{metric}.md").write_text(f"# galore evaluate {metric}\n\n{table}\n")
        if not args.no_plot:
            from .evaluate_plots import plot
            plot(metric, data, out / f"{metric}.png")
        summaries[metric] = data["summary"]
        if not args.json:
            print(f"## {metric}\n\n{table}\n")
    if args.json:
        print(json.dumps(summaries, indent=1, default=_plain))
    return EXIT_OK


def _plain(value):
    return float(value) if hasattr(value, "__float__") else str(value)


def markdown_table(rows: list[dict]) -> str:
    """Summary rows (dicts with the same keys, missing ones blank) -> a GitHub markdown table."""
    if not rows:
        return "(no rows)"
    columns = list(dict.fromkeys(k for r in rows for k in r))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    for r in rows:
        lines.append("| " + " | ".join(_cell(r.get(c, "")) for c in columns) + " |")
    return "\n".join(lines)


def _cell(value) -> str:
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)
