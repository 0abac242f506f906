"""Figures behind two semantic rules of the engine (EVALUATION.md, section 2; issue 21), on skimage photos with the
default engine (EfficientNet-Lite0, default options, 10 % coverage):

counterfactual  per photo: y*, the runner-up y^c, IoU of the counterfactual query region with the self-aware
                region of y* (eq. 4); with --save CELLS.npz the regions are kept, and --against OTHER.npz prints the
                IoU with the regions another tree's rule gave (run once per tree, see EVALUATION.md).
insecurities    every V-tuple of the top-E (pairs and triples): strength (eq. 15), ratio to the image's strongest of
                the same V (SHARED_EVIDENCE_RATIO's figure) and the feature cells where all its classes have
                evidence above the clip floor (the shared-evidence rule), for every tuple before the rule drops any.

    .venv/bin/python benchmarks/explanation_semantics.py counterfactual --save /tmp/cf_eq10.npz
    .venv/bin/python benchmarks/explanation_semantics.py insecurities

Run from the repository root (the galore/ it imports is the one beside it).
"""
from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "camera", "hubble_deep_field", "immunohistochemistry")


def photos(names):
    from skimage import data

    from galore.evaluate.common import rgb_tensor
    return [(n, rgb_tensor(getattr(data, n)())) for n in names]


def counterfactual(engine, names, save: str | None, against: str | None) -> None:
    from galore import ExplainOptions, ImageRequest, Kind

    other = dict(np.load(against)) if against else {}
    cells = {}
    print("photo\ty* vs y^c\tIoU(counterfactual, self-aware)" + ("\tIoU(this rule, other)" if other else ""))
    for name, image in photos(names):
        opts = ExplainOptions(kinds=frozenset({Kind.SELF_AWARE, Kind.COUNTERFACTUAL}))
        (res,) = engine.explain([ImageRequest(image, opts)])
        cf, aware = res.counterfactual.query.cells, res.self_aware.region.cells
        cells[name] = cf
        line = (f"{name}\t{engine.labels[res.counterfactual.predicted_id]} vs "
                f"{engine.labels[res.counterfactual.counter_ids[0]]}\t{iou(cf, aware):.2f}")
        if name in other:
            line += f"\t{iou(cf, other[name]):.2f}"
        print(line, flush=True)
    if save:
        np.savez(save, **cells)


def insecurities(engine, names) -> None:
    from galore import ExplainOptions
    from galore.evaluate.common import Scorer
    from galore.rows import CLIP_FLOOR

    scorer = Scorer.of(engine)
    opts = ExplainOptions()
    lowest: dict[int, float] = {}
    print("photo\tV\tclasses\tstrength\tratio to the strongest\tcells with shared evidence (of h x w)")
    for name, image in photos(names):
        x = scorer.input(image)
        with torch.no_grad():
            probs = scorer.logits(x[None])[0].softmax(-1)
        candidates = torch.topk(probs, opts.top_e).indices.tolist()
        maps = scorer.maps(x, candidates, opts)
        for V in (2, 3):
            rows = []
            for t in itertools.combinations(candidates, V):
                m = maps.of(list(t))  # (V, h, w)
                d = m.prod(0) * maps.inverse_score  # eq. (5) / (12)
                up = engine.grid.upsample(d[None].float().cpu())[0].flatten()
                k = int(round(opts.threshold.coverage * engine.grid.cells))
                strength = float(up.topk(k).values.mean())  # eq. (15) at the default coverage
                shared = int(((m > CLIP_FLOOR).all(0) & (maps.inverse_score > 0)).sum())
                rows.append((t, strength, shared, m.shape[-2] * m.shape[-1]))
            top = max(r[1] for r in rows)
            for t, strength, shared, total in sorted(rows, key=lambda r: -r[1]):
                ratio = strength / top
                lowest[V] = min(lowest.get(V, 1.0), ratio)
                labels = " / ".join(engine.labels[c] for c in t)
                print(f"{name}\t{V}\t{labels}\t{strength:.3e}\t{ratio:.2f}\t{shared} of {total}", flush=True)
    print("lowest ratio per V: " + ", ".join(f"V={v}: {r:.2f}" for v, r in sorted(lowest.items())))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("figure", choices=("counterfactual", "insecurities"))
    p.add_argument("--photos", default=",".join(PHOTOS), help="skimage.data photo names, comma-separated")
    p.add_argument("--save", help="counterfactual: keep the regions (npz)")
    p.add_argument("--against", help="counterfactual: the npz another rule's run saved")
    args = p.parse_args()
    torch.set_num_threads(1)
    from galore import Engine
    import galore

    print(f"galore from {Path(galore.__file__).parent}", file=sys.stderr)
    engine = Engine.default(device="cpu")
    names = [n for n in args.photos.split(",") if n]
    if args.figure == "counterfactual":
        counterfactual(engine, names, args.save, args.against)
    else:
        insecurities(engine, names)


if __name__ == "__main__":
    main()
