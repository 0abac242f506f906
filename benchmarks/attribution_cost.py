"""Attribution functions' cost on a model's head, one image (R = 1 row), T = 10 probability targets + the softmax
score (the engine's ``galore.confidence.Targets`` with ``target: probability``): gradient x activation, integrated gradients (50 steps)
and gradient-Hessian, each by the path the engine takes (``galore.attribution.attribute`` with the head's parts:
the structured paths where the head's traced graph is global average pooling + one Linear / piecewise linear /
affine / positively homogeneous up to its first Linear) and by the general path.

    .venv/bin/python benchmarks/attribution_cost.py                       # vgg16, resnet50, mobilenet_v3_large
    .venv/bin/python benchmarks/attribution_cost.py --archs resnet50 --repeats 5

Random weights (the cost does not depend on them). Prints seconds per image (best of ``--repeats``) and the ratio to
gradient x activation. The structured gradient-Hessian relays out the first Linear's weight once per head (cached,
seconds on VGG16): the best of ``--repeats`` >= 2 is the per-image cost after that.
"""
from __future__ import annotations

import argparse
import time

import torch
import torchvision

from galore.attribution import affine, attribute, gradient_hessian, integrated_gradients, piecewise_linear
from galore.confidence import Targets
from galore.model import split_classifier
from galore.options import Attribution, Score, Target
from galore.pooled_head import pooled_split

from engine_throughput import engine_version, machine


def best(fn, repeats: int) -> float:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return min(out)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="vgg16,resnet50,mobilenet_v3_large")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--general-repeats", type=int, default=1, help="repeats of the (slow) general paths")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"Machine: {machine()}; {engine_version()}\n")
    print("| model | head | gradient x activation s | integrated gradients s (general) | gradient-Hessian s (general) "
          "| IG / GxA | GH / GxA |")
    print("|---|---|---|---|---|---|---|")
    for arch in args.archs.split(","):
        torch.manual_seed(0)
        split = split_classifier(getattr(torchvision.models, arch)().eval())
        F = torch.rand(1, *split.feature_shape)
        of_logits = Targets(Target.PROBABILITY, torch.arange(10)[None], Score.SOFTMAX)  # as the engine's rows

        def fn(f, ids):
            return of_logits(split.head(f), ids)
        parts = (split.head, of_logits)
        run = {m: (lambda m=m: attribute(m, fn, F, split_last=True, parts=parts)) for m in Attribution
               if m is not Attribution.GRAD_CAM}
        gxa = best(run[Attribution.GRADIENT_X_ACTIVATION], args.repeats)
        ig = best(run[Attribution.INTEGRATED_GRADIENTS], args.repeats)
        gh = best(run[Attribution.GRADIENT_HESSIAN], args.repeats)
        ig_general = best(lambda: integrated_gradients(fn, F, split_last=True), args.general_repeats)
        gh_general = best(lambda: gradient_hessian(fn, F, split_last=True), args.general_repeats)
        pooled = pooled_split(split.head)
        kind = ("pooling + one Linear" if pooled is not None and pooled.linear is not None else "affine"
                if affine(split.head) else "piecewise linear" if piecewise_linear(split.head) else
                "pooling + general" if pooled is not None else "general")
        print(f"| {arch} | {kind} | {gxa:.3f} | {ig:.3f} ({ig_general:.3f}) | {gh:.3f} ({gh_general:.3f}) "
              f"| {ig / gxa:.1f} | {gh / gxa:.1f} |", flush=True)


if __name__ == "__main__":
    main()
