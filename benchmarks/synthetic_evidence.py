"""Where does the synthetic benchmark's classifier find its evidence, and do the counterfactual maps find it?
(EVALUATION.md section 8, "Why the regions sit near the base rate".)

    .venv/bin/python benchmarks/synthetic_evidence.py --out synth --images 100

On the test images that the model classifies correctly and whose runner-up class is of the same family (so the
parts that differ by construction are few: ``ground_truth.json``), at F's own cells (h x w):
  * base rate: the differing parts' share of the visible parts (a region that picks parts at random);
  * oracle: the best single F cell (holding differing parts only where one exists): the scoring's ceiling;
  * occlusion: each F cell's features replaced by the image's mean feature vector, the drop of the logit margin
    z_y* - z_yc (the model's own evidence for y* over y^c, cell by cell), and the cells ranked by it;
  * GALORE: the counterfactual map of (y*, y^c) at the engine's defaults, and with ``--target probability``;
  * random cells, averaged over 50 draws.
Precision of the top 0.5 %, 1.5 % and 10 % of F's cells (1, 3 and 20 of 14 x 14), as the protocol counts it: differing
parts among the visible part points inside the cells (NaN where none is inside; NaN leaves the mean). Also: the
margin's drop when every cell holding a differing part is occluded against as many cells holding shared parts
only, and the Pearson correlation between the occlusion map and GALORE's map.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from galore import Engine, ExplainOptions, ImageRequest, Kind, zoo  # noqa: E402
from galore.evaluate.cub import read_cub  # noqa: E402
from galore.options import Target  # noqa: E402
from galore_cli.machine import describe  # noqa: E402

COVERAGES = (0.005, 0.015, 0.1)  # of F's cells: 1, 3 and 20 of a 14 x 14 F


def precision(score: np.ndarray, cell_of: dict[str, int], differ: set[str], n: int) -> float:
    """Differing parts among the part points inside the ``n`` cells of largest ``score`` (flat, h*w)."""
    cells = set(np.argsort(score, kind="stable")[::-1][:n].tolist())
    inside = [p for p, c in cell_of.items() if c in cells]
    return sum(p in differ for p in inside) / len(inside) if inside else float("nan")


def occluded_margins(head, F: torch.Tensor, masks: torch.Tensor, ys: int, yc: int) -> torch.Tensor:
    """z_y* - z_yc with the cells of each mask (B, h*w) bool set to F's mean feature vector: (B,)."""
    B, (_, D, h, w) = masks.shape[0], F.shape
    mean = F.mean((2, 3))[:, :, None]  # (1, D, 1)
    flat = F.reshape(1, D, h * w).expand(B, D, h * w)
    Fo = torch.where(masks[:, None, :], mean, flat).reshape(B, D, h, w)
    with torch.no_grad():
        z = head(Fo)
    return z[:, ys] - z[:, yc]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="a `galore evaluate synthetic` folder (data/ and model/)")
    p.add_argument("--images", type=int, default=100, help="same-family, correctly classified test images to use")
    p.add_argument("--layer", default="features.8")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    root = Path(args.out)
    cub = read_cub(root / "data")
    truth = json.loads((root / "data" / "ground_truth.json").read_text())
    parts, labels = truth["parts"], list(cub.class_names)
    prep = replace(zoo.IMAGENET_PREPROCESS, resize=zoo.IMAGENET_PREPROCESS.crop)  # the proxy's "resize" geometry
    model = zoo.torchvision_classifier("mobilenet_v3_small", len(labels), root / "model" / "weights.pt")
    engine = Engine.from_module("mobilenet_v3_small", model, labels, prep, args.layer)
    settings = {"GALORE (defaults)": ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL})),
                "GALORE, probability target": ExplainOptions(kinds=frozenset({Kind.COUNTERFACTUAL}),
                                                             target=Target.PROBABILITY)}
    rng = np.random.default_rng(0)
    rows: list[dict] = []
    for image_id in cub.test_ids:
        img = cub.image(image_id)
        x, _ = engine.preprocess(img)
        with torch.no_grad():
            F = engine.split.backbone(x[None]).float()  # (1, D, h, w)
            z = engine.split.head(F)[0]
        ys, yc = z.argsort(descending=True)[:2].tolist()
        pair = truth["tuples"][",".join(map(str, sorted((ys, yc))))]
        if ys != cub.labels[image_id] or not pair["same_family"]:
            continue
        _, _, h, w = F.shape
        pts = cub.part_points[image_id]
        H, W = img.shape[1:]
        cell_of = {name: min(int(pts.xy[k][1] * h / H), h - 1) * w + min(int(pts.xy[k][0] * w / W), w - 1)
                   for k, name in enumerate(parts) if pts.visible[k]}
        differ = {q for q in pair["differ"] if q in cell_of}
        if not differ or len(differ) == len(cell_of):
            continue
        row = {"base rate": len(differ) / len(cell_of)}
        by_cell: dict[int, list[str]] = {}
        for q, c in cell_of.items():
            by_cell.setdefault(c, []).append(q)
        row["oracle"] = max(sum(q in differ for q in qs) / len(qs) for qs in by_cell.values())
        single = torch.eye(h * w, dtype=torch.bool)
        drop = ((z[ys] - z[yc]) - occluded_margins(engine.split.head, F, single, ys, yc)).numpy()  # (h*w,)
        maps = {"occlusion at F": drop}
        for name, opts in settings.items():
            res = engine.explain([ImageRequest(img, replace(opts, counter_classes=(yc,)))])[0]
            maps[name] = res.counterfactual.query.heatmap.flatten().numpy()
        tops = {c: max(1, round(c * h * w)) for c in COVERAGES}
        for name, score in maps.items():
            for c, n in tops.items():
                row[f"{name} @ {c:.1%}"] = precision(score, cell_of, differ, n)
        for c, n in tops.items():
            draws = [precision(rng.random(h * w), cell_of, differ, n) for _ in range(50)]
            row[f"random cells @ {c:.1%}"] = np.nanmean(draws) if np.isfinite(draws).any() else np.nan
        differ_cells = sorted({cell_of[q] for q in differ})
        shared_cells = sorted(set(by_cell) - set(differ_cells))
        n = min(len(differ_cells), len(shared_cells))
        if n:
            masks = torch.zeros(2, h * w, dtype=torch.bool)
            masks[0, rng.choice(differ_cells, n, replace=False)] = True
            masks[1, rng.choice(shared_cells, n, replace=False)] = True
            after = occluded_margins(engine.split.head, F, masks, ys, yc)
            row["margin"] = float(z[ys] - z[yc])
            row["margin drop, differing-part cells"] = float(z[ys] - z[yc] - after[0])
            row["margin drop, shared-part cells"] = float(z[ys] - z[yc] - after[1])
        row["corr(occlusion, GALORE defaults)"] = float(np.corrcoef(drop, maps["GALORE (defaults)"])[0, 1])
        rows.append(row)
        if len(rows) >= args.images:
            break
    print(f"Machine: {describe()}\n{len(rows)} correctly classified test images with a same-family runner-up "
          f"({root}, F = {args.layer})\n")
    print("| measure | mean | sd | n |\n|---|---|---|---|")
    for key in rows[0]:
        v = np.array([r.get(key, np.nan) for r in rows], float)
        print(f"| {key} | {np.nanmean(v):.3f} | {np.nanstd(v):.3f} | {int(np.isfinite(v).sum())} |")


if __name__ == "__main__":
    main()
