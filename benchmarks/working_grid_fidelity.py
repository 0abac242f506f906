"""Regions on the working grid against the former full-resolution path, on real photos (the decision record).

    .venv/bin/python benchmarks/working_grid_fidelity.py                  # EfficientNet-Lite0, grids 224/112/56
    .venv/bin/python benchmarks/working_grid_fidelity.py --sizes native,3,12 --grids 224

For every photo, every returned map (attributive, self-aware, all V-tuples of E = 5, V = 2 and 3, counterfactual
query) is thresholded twice at coverage 0.1: by the engine on its G x G working grid, and by the reference, which
upsamples the same feature-grid map bilinearly to EVERY original pixel and keeps the top 10 % of the crop's original
pixels (the pre-working-grid definition). Printed per grid: mask IoU (min / mean), strength relative error (max /
mean), whether the strongest insecurity is the same, and Kendall's tau between the two insecurity rankings.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import skimage.data
import torch
import torchvision.transforms.v2.functional as TF
from scipy.stats import kendalltau

from galore import Engine, ExplainOptions, ImageRequest
from galore.regions import WorkingGrid
from galore_cli.machine import cpu_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root: tests/
from tests.engine.reference_regions import full_resolution_region  # noqa: E402

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def photo(name: str) -> torch.Tensor:
    arr = getattr(skimage.data, name)()
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()


def at_megapixels(image: torch.Tensor, mp: float | None) -> torch.Tensor:
    if mp is None:
        return image
    _, h, w = image.shape
    scale = (mp * 1e6 / (h * w)) ** 0.5
    return TF.resize(image, [round(h * scale), round(w * scale)], antialias=True)


def compare(engine: Engine, image: torch.Tensor) -> dict:
    opts = ExplainOptions(dims=(2, 3), max_insecurities=1000)
    (res,) = engine.explain([ImageRequest(image, opts)])
    _, geo = engine.preprocess(image)
    regions = [res.attributive.region, res.self_aware.region, res.counterfactual.query]
    insecurities = [i for V in (2, 3) for i in res.deliberative[V]]
    ious, errors, ours, theirs = [], [], [], []
    for region in regions + [i.region for i in insecurities]:
        mask, strength = full_resolution_region(region.heatmap, geo, 0.1)
        inter, union = float((region.mask & mask).sum()), float((region.mask | mask).sum())
        ious.append(inter / union if union else 1.0)
        errors.append(abs(region.strength - strength) / max(abs(strength), 1e-30))
    for V in (2, 3):
        engine_order = res.deliberative[V]
        ref = [full_resolution_region(i.region.heatmap, geo, 0.1)[1] for i in engine_order]
        ours.append([i.region.strength for i in engine_order])
        theirs.append(ref)
    same_top = all(int(np.argmax(r)) == 0 for r in theirs)  # engine order is strongest first
    tau = float(np.mean([kendalltau(o, t).statistic for o, t in zip(ours, theirs)]))
    return {"iou_min": min(ious), "iou_mean": float(np.mean(ious)), "err_max": max(errors),
            "err_mean": float(np.mean(errors)), "same_top": same_top, "tau": tau}


def machine() -> str:
    return f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--grids", default="224,112,56", help="working grid sides to compare")
    p.add_argument("--sizes", default="native,3", help="'native' and/or megapixels, e.g. native,3,12")
    p.add_argument("--photos", default=",".join(PHOTOS))
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    engine = Engine.default(device="cpu")
    print(f"Machine: {machine()}\n")
    print("| grid | photo size | photos | mask IoU min / mean | strength error max / mean | same top insecurity "
          "| Kendall tau (mean) |")
    print("|---|---|---|---|---|---|---|")
    for side in (int(g) for g in args.grids.split(",")):
        engine.grid = WorkingGrid(side, engine.preprocess.crop)
        for size in args.sizes.split(","):
            mp = None if size == "native" else float(size)
            rows = []
            t = time.perf_counter()
            for name in args.photos.split(","):
                rows.append(compare(engine, at_megapixels(photo(name), mp)))
            print(f"| {side} | {'native' if mp is None else f'{mp:g} MP'} | {len(rows)} | "
                  f"{min(r['iou_min'] for r in rows):.3f} / {np.mean([r['iou_mean'] for r in rows]):.3f} | "
                  f"{max(r['err_max'] for r in rows):.2%} / {np.mean([r['err_mean'] for r in rows]):.2%} | "
                  f"{sum(r['same_top'] for r in rows)}/{len(rows)} | {np.mean([r['tau'] for r in rows]):.3f} |",
                  flush=True)
            del t


if __name__ == "__main__":
    main()
