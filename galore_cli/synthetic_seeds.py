"""`galore evaluate synthetic --seeds N`: the benchmark's figures as mean ± sd over seeds (issue: Table III "with mean
and standard deviation over 3 seeds").

Seed K's data set and classifier live in DIR/seed-K (an ordinary `galore evaluate synthetic` folder); ``summarise``
reads every DIR/seed-*/synthetic.json and writes DIR/seeds.json and DIR/seeds.md. A seed changes the data set (the
design's tables, the images, the split) and the classifier's initialisation and batch order together; the
baselines' own 3 draws per seed are averaged first, so each figure's sd is the spread over training seeds.

Example:
    >>> report = {"coverages": [0.005, 0.1], "accuracy": {"top1": 0.5}, "proxy": {"trained": {
    ...     "images": 10, "seconds": 5.0, "curves": {"deliberative/2": {"precision": [0.4, 0.5], "recall": [0.1, 0.2]}},
    ...     "piou": {}, "strength_precision": {"deliberative/2": {"pearson": 0.2}}}},
    ...     "baselines": {}, "construction": {}}
    >>> other = json.loads(json.dumps(report).replace("0.4, 0.5", "0.6, 0.7").replace("0.5}", "0.7}"))
    >>> s = summarise_reports([report, other])
    >>> s["accuracy"], s["regions"]["deliberative/2"]["GALORE"]["P@10%"]
    ([0.6, 0.1], [0.6, 0.1])
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from galore.evaluate.region_baselines import at
from galore_cli.pinned_kernels import kernels_text

COVERAGES = (0.005, 0.1)  # Table III's receptive-field unit of a 14 x 14 F, and the reference level
KEYS = ("attributive/1", "deliberative/2", "deliberative/3", "counterfactual/1", "counterfactual/2")
BASELINES = (("random", "random cells"), ("object_prior", "object prior"), ("attributive", "attributive of y*"),
             ("finer_cam", "FinerCAM"))


def percent(coverage: float) -> str:
    """0.005 -> "0.5%", 0.1 -> "10%": the coverage keys of seeds.json."""
    return f"{coverage * 100:g}%"


def run_folders(out: Path) -> list[Path]:
    """The finished runs under ``out``: its DIR/seed-K folders in seed order, then any other folder (or link to
    one) holding a synthetic.json, by name: runs of one seed that differ otherwise (the CPU kernels, say)."""
    found = [p for p in out.iterdir() if (p / "synthetic.json").is_file()] if out.is_dir() else []
    seeds = sorted((p for p in found if p.name.startswith("seed-") and p.name[5:].isdigit()),
                   key=lambda p: int(p.name[5:]))
    return seeds + sorted((p for p in found if p not in seeds), key=lambda p: p.name)


def _stat(values: list) -> list | None:
    """[mean, population sd] of the values that are not None (sd 0 for one), or None when there are none."""
    vals = [float(v) for v in values if v is not None]
    return None if not vals else [round(float(np.mean(vals)), 6), round(float(np.std(vals)), 6)]


def _level(covs: list, curve: list, coverage: float):
    """A curve's value at ``coverage``; a baseline's per-draw curves (a list of lists) are averaged first."""
    if curve and isinstance(curve[0], list):
        vals = [v for v in (at(covs, c, coverage) for c in curve) if v is not None]
        return float(np.mean(vals)) if vals else None
    return at(covs, curve, coverage)


def _rows(reports: list[dict], curves_of) -> dict:
    """{P@c, R@c: [mean, sd]} for the curve ``curves_of(report)`` returns (None: absent in that report)."""
    out = {}
    for c in COVERAGES:
        for metric, field in (("P", "precision"), ("R", "recall")):
            out[f"{metric}@{percent(c)}"] = _stat([_level(r["coverages"], curve[field], c)
                                             for r in reports if (curve := curves_of(r))])
    return out


def summarise_reports(reports: list[dict]) -> dict:
    """Mean ± sd over the seeds' synthetic.json reports: accuracy, images/s, every explanation's P and R against
    the baselines (the protocol's ground truth and the generator's), PIoU and Table II's r."""
    def trained(r: dict) -> dict:
        return r["proxy"]["trained"]

    regions, construction, piou, pearson = {}, {}, {}, {}
    for key in KEYS:
        def baselines(source) -> dict:
            """The baseline rows of ``key``, from ``source(report)`` -> {baseline name: {key: curve}}."""
            return {title: _rows(reports, lambda r: source(r).get(name, {}).get(key)) for name, title in BASELINES
                    if not (name == "attributive" and key == "attributive/1")}

        row = {"GALORE": _rows(reports, lambda r: trained(r)["curves"].get(key)),
               **baselines(lambda r: r["baselines"].get("trained", {}))}
        # Fig. 11: the random-weight network's own segments (its own predictions) and their random cells
        row["GALORE, random weights"] = _rows(reports, lambda r: r["proxy"].get("random", {}).get("curves", {})
                                              .get(key))
        row["random cells, random-weight segments"] = _rows(
            reports, lambda r: r["baselines"].get("random", {}).get("random", {}).get(key))
        regions[key] = {k: v for k, v in row.items() if any(v.values())}
        truth = {"GALORE": _rows(reports, lambda r: r["construction"].get("trained", {}).get("galore", {}).get(key)),
                 **baselines(lambda r: r["construction"].get("trained", {}))}
        construction[key] = {k: v for k, v in truth.items() if any(v.values())}
        if key.startswith("counterfactual"):
            piou[key] = {percent(c): _stat([at(r["coverages"], trained(r)["piou"].get(key, []), c) for r in reports])
                         for c in COVERAGES}
        pearson[key] = _stat([trained(r)["strength_precision"].get(key, {}).get("pearson") for r in reports])
    return {"seeds": len(reports), "accuracy": _stat([r["accuracy"]["top1"] for r in reports]),
            "images_per_second": _stat([trained(r)["images"] / max(trained(r)["seconds"], 1e-9) for r in reports]),
            "regions": regions, "construction": construction, "piou": piou, "pearson": pearson,
            "runs": [{"top1": r["accuracy"]["top1"], "data_sha256": r.get("data_sha256"),
                      "weights_sha256": r.get("weights_sha256"),
                      "kernels": kernels_text(r.get("kernels"))}
                     for r in reports]}


def render(summary: dict, seeds: list[str]) -> str:
    """seeds.md: the summary's tables, every figure mean ± sd over the seeds."""
    def cell(stat) -> str:
        return "-" if stat is None else f"{stat[0]:.3f} ± {stat[1]:.3f}"

    head = " | ".join(f"P @ {percent(c)} | R @ {percent(c)}" for c in COVERAGES)
    runs = "seeds" if all(n.startswith("seed-") for n in seeds) else "runs"
    lines = [f"# Synthetic benchmark over {summary['seeds']} {runs} ({', '.join(seeds)})", "",
             f"Every figure: mean ± population sd over the {runs} (a seed-K run: its own data set and classifier; a "
             "baseline's 3 draws per run averaged first).", "",
             *(f"- {name}: held-out top-1 {run['top1']:.3f}, data sha256 `{str(run['data_sha256'])[:16]}`, weights "
               f"sha256 `{str(run['weights_sha256'])[:16]}`, trained with {run['kernels']}"
               for name, run in zip(seeds, summary.get("runs", []))), "",
             f"Held-out top-1: {cell(summary['accuracy'])}; the protocol with every kind: "
             f"{cell(summary['images_per_second'])} images/s.", ""]
    for title, table in (("against the protocol's ground truth (Table III)", summary["regions"]),
                         ("against the generator's ground truth", summary["construction"])):
        lines += [f"## Regions {title}", "", f"| explanation | region | {head} |",
                  "|---|---|" + "---|---|" * len(COVERAGES)]
        for key, rows in table.items():
            lines += [f"| {key} | {name} | " + " | ".join(cell(v) for v in row.values()) + " |"
                      for name, row in rows.items()]
        lines.append("")
    lines += ["## PIoU and Table II", "", "| explanation | " + " | ".join(f"PIoU @ {percent(c)}" for c in COVERAGES)
              + " | Pearson r (strength, precision) @ 10% |", "|---|" + "---|" * (len(COVERAGES) + 1)]
    for key in KEYS:
        piou = summary["piou"].get(key, {})
        lines.append(f"| {key} | " + " | ".join(cell(piou.get(percent(c))) for c in COVERAGES)
                     + f" | {cell(summary['pearson'][key])} |")
    return "\n".join(lines) + "\n"


def summarise(out: Path) -> str:
    """Reads DIR/seed-*/synthetic.json, writes DIR/seeds.json and DIR/seeds.md; returns the markdown."""
    folders = run_folders(out)
    if not folders:
        raise FileNotFoundError(f"no finished seed under {out} (seed-K/synthetic.json)")
    summary = summarise_reports([json.loads((p / "synthetic.json").read_text(encoding="utf-8")) for p in folders])
    text = render(summary, [p.name for p in folders])
    (out / "seeds.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "seeds.md").write_text(text, encoding="utf-8")
    return text
