"""Reduced-precision backbone against fp32, on real photos (the decision record for the default precision).

    .venv/bin/python benchmarks/precision_fidelity.py                       # lite0, resnet50, vgg16; bf16
    .venv/bin/python benchmarks/precision_fidelity.py --models lite0 --precision bf16
    .venv/bin/python benchmarks/precision_fidelity.py --models lite0 --fp32-convs 8   # bf16 but the last 8 convs
    .venv/bin/python benchmarks/precision_fidelity.py --models lite1,lite2           # the other ImageNet Lites
    .venv/bin/python benchmarks/precision_fidelity.py --models lite0,lite1,lite2 --cascade   # bf16, fp32 on near ties
    .venv/bin/python benchmarks/precision_fidelity.py --device cuda --precision bf16   # a GPU's bf16 against the CPU

Each photo of skimage.data is used whole, mirrored, and as two 70 % crops (32 images). Both engines share one split
model (EfficientNet-Lite0/1/2, ``liteN`` or ``efficientnet_liteN``, with their ImageNet weights at their native
input sizes, galore.zoo.LITE_MODELS; ResNet-50 and VGG16 with seeded random weights: no other weights are on this
machine) and explain with E = 5, V = 2 and 3. Printed per model: top-1 agreement, the largest absolute probability
difference over all classes, Pearson correlation of the feature-grid maps (attributive, self-aware, every
insecurity, matched by classes; min / median / mean), working-grid mask IoU (min / mean), how often the
strongest insecurity is the same, and the mean Kendall tau of the insecurity ranking (strengths of the tuples both
engines return). The default rule (issue 15): top-1 >= 99 %, map correlation >= 0.99, same top insecurity.

``--cascade`` measures a cascade: bf16 first, then the image again in fp32 when bf16's own result is near a tie,
that is when its top-two class probabilities are less than ``dc`` apart or, for some V, its two strongest
insecurities' strengths are less than a fraction ``di`` of the strongest apart. A re-run image is the fp32 result
itself; the table gives, per (dc, di), how often the cascade re-runs and the fidelity of what it returns.
"""
from __future__ import annotations

import argparse
import copy

import numpy as np
import skimage.data
import torch
import torchvision
from scipy.stats import kendalltau

from galore import Engine, ExplainOptions, ImageRequest, Precision, zoo
from galore.model import SplitModel, split_classifier
from galore_cli.machine import cpu_model

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket", "hubble_deep_field", "immunohistochemistry", "retina",
          "colorwheel")
OPTIONS = ExplainOptions(dims=(2, 3), top_e=5)


def photos() -> list[torch.Tensor]:
    out = []
    for name in PHOTOS:
        img = torch.from_numpy(np.ascontiguousarray(getattr(skimage.data, name)()[..., :3])).permute(2, 0, 1)
        _, h, w = img.shape
        ch, cw = int(h * 0.7), int(w * 0.7)
        out += [img.contiguous(), img.flip(-1).contiguous(), img[:, :ch, :cw].contiguous(),
                img[:, h - ch:, w - cw:].contiguous()]
    return out


class MixedBackbone(torch.nn.Module):
    """A traced backbone (torch.fx GraphModule) run in bf16 (autocast) up to its last ``fp32_convs`` convolutions,
    and in fp32 from there: the tensors crossing the cut are cast back to fp32. Measures whether rounding only the
    early stages keeps fidelity (``--fp32-convs N``); not an engine option (it did not)."""

    def __init__(self, backbone: torch.fx.GraphModule, fp32_convs: int, dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.backbone, self.dtype = backbone, dtype
        modules = dict(backbone.named_modules())
        nodes = list(backbone.graph.nodes)
        convs = [i for i, n in enumerate(nodes)
                 if (n.op == "call_module" and isinstance(modules.get(str(n.target)), torch.nn.Conv2d))
                 or (n.op == "call_function" and n.target in (torch.conv2d, torch.nn.functional.conv2d))]
        cut = convs[-fp32_convs] if 0 < fp32_convs <= len(convs) else (len(nodes) if fp32_convs <= 0 else 0)
        self.late = {n for n in nodes[cut:]}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        late, dtype = self.late, self.dtype

        class Run(torch.fx.Interpreter):
            def run_node(self, n):
                if n in late:
                    with torch.autocast(x.device.type, enabled=False):
                        args, kwargs = self.fetch_args_kwargs_from_env(n)
                        args, kwargs = torch.utils._pytree.tree_map_only(
                            torch.Tensor, lambda t: t.float() if t.is_floating_point() else t, (args, kwargs))
                        return getattr(self, n.op)(n.target, args, kwargs)
                with torch.autocast(x.device.type, dtype):
                    return super().run_node(n)
        return Run(self.backbone).run(x)

def lite_name(model: str) -> str | None:
    """``lite1`` or ``efficientnet_lite1`` -> ``efficientnet_lite1`` (a key of zoo.LITE_MODELS); else None."""
    name = model if model in zoo.LITE_MODELS else f"efficientnet_{model}"
    return name if name in zoo.LITE_MODELS else None


def engines(model: str, precision: Precision, fp32_convs: int = 0,
            device: torch.device = torch.device("cpu")) -> tuple[Engine, Engine]:
    """The CPU fp32 reference and the reduced engine on ``device`` (its own copy of the split model off the CPU);
    with ``fp32_convs`` > 0 the reduced one runs its backbone in ``precision`` up to its last ``fp32_convs``
    convolutions and in fp32 from there (``MixedBackbone``)."""
    torch.manual_seed(0)
    labels = zoo.imagenet_labels()
    if lite_name(model):
        lite = zoo.LITE_MODELS[lite_name(model)]
        split, prep = split_classifier(zoo.efficientnet_lite(lite.name), lite.layer, lite.input_size), lite.preprocess
    else:
        split, prep = split_classifier(getattr(torchvision.models, model)().eval()), zoo.IMAGENET_PREPROCESS
    ref = Engine(model, split, labels, prep, device="cpu", precision=Precision.FP32)
    if device.type != "cpu":
        split = copy.deepcopy(split)
    if fp32_convs <= 0:
        return ref, Engine(model, split, labels, prep, device=device, precision=precision)
    low = Engine(model, split, labels, prep, device=device, precision=Precision.FP32, channels_last=False)
    low.split = SplitModel(MixedBackbone(split.backbone, fp32_convs), low.split.head, split.layer,
                           split.feature_shape, split.input_size)  # BatchNorms unfolded, as in bf16
    return ref, low


def regions(res) -> dict:
    """Every returned region of one result by a key that names it across precisions."""
    out = {"attributive": res.attributive.region, "self_aware": res.self_aware.region}
    for V, items in res.deliberative.items():
        out.update({("insecurity", i.class_ids): i.region for i in items})
    return out


def compare(ref, low) -> dict:
    probs = lambda r: {c.class_id: c.probability for c in r.top_classes}  # noqa: E731
    p, q = probs(ref), probs(low)
    a, b = regions(ref), regions(low)
    shared = [k for k in a if k in b]
    corr = [float(np.corrcoef(a[k].heatmap.flatten().numpy(), b[k].heatmap.flatten().numpy())[0, 1])
            for k in shared]
    ious = []
    for k in shared:
        union = float((a[k].cells | b[k].cells).sum())
        ious.append(float((a[k].cells & b[k].cells).sum()) / union if union else 1.0)
    same_top, taus = True, []
    for V in ref.deliberative:
        r, l = ref.deliberative[V], low.deliberative[V]
        same_top &= r[0].class_ids == l[0].class_ids
        common = [i.class_ids for i in r if i.class_ids in {j.class_ids for j in l}]
        sl = {j.class_ids: j.region.strength for j in l}
        if len(common) > 1:
            taus.append(kendalltau([i.region.strength for i in r if i.class_ids in sl],
                                   [sl[c] for c in common]).statistic)
    return {"top1": ref.top_classes[0].class_id == low.top_classes[0].class_id,
            "dprob": max(abs(p[c] - q.get(c, 0.0)) for c in p), "corr": corr, "iou": ious, "same_top": same_top,
            "tau": float(np.mean(taus)) if taus else float("nan")}


def margins(low) -> tuple[float, float]:
    """(class margin, insecurity margin) of one reduced-precision result: p_1 - p_2 of its top classes, and the
    smallest over V of (s_1 - s_2) / s_1 over its two strongest insecurities (1.0 where V has fewer than two)."""
    p = [c.probability for c in low.top_classes]
    class_margin = p[0] - p[1] if len(p) > 1 else 1.0
    rel = [1.0]
    for items in low.deliberative.values():
        s = sorted((i.region.strength for i in items), reverse=True)
        if len(s) > 1 and s[0] > 0:
            rel.append((s[0] - s[1]) / s[0])
    return class_margin, min(rel)


def cascade_table(rows: list[dict], marks: list[tuple[float, float]]) -> list[str]:
    """Fidelity of the cascade per threshold pair: a re-run image counts as the fp32 reference itself."""
    out = ["| class margin dc | insecurity margin di | re-run in fp32 | top-1 agreement | map corr min | "
           "same top insecurity | rule holds |", "|---|---|---|---|---|---|---|"]
    for dc in (0.0, 0.05, 0.1, 0.2, 0.3):
        for di in (0.0, 0.1, 0.2, 0.3, 0.5):
            rerun = [m[0] < dc or m[1] < di for m in marks]
            kept = [r for r, again in zip(rows, rerun) if not again]
            top1 = (sum(r["top1"] for r in kept) + sum(rerun)) / len(rows)
            corr = min((c for r in kept for c in r["corr"]), default=1.0)
            same = sum(r["same_top"] for r in kept) + sum(rerun)
            holds = top1 >= 0.99 and corr >= 0.99 and same == len(rows)
            out.append(f"| {dc:.2f} | {di:.1f} | {sum(rerun)}/{len(rows)} | {top1:.1%} | {corr:.4f} | "
                       f"{same}/{len(rows)} | {'yes' if holds else 'no'} |")
    return out


def machine(device: torch.device) -> str:
    cpu = f"{cpu_model()}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    return cpu if device.type == "cpu" else f"{torch.cuda.get_device_name(device)} against the CPU ({cpu})"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="lite0,resnet50,vgg16")
    p.add_argument("--precision", default="bf16", choices=[x.value for x in Precision],
                   help="the reduced engine's backbone precision (fp32 only with --device: the device against the CPU)")
    p.add_argument("--device", default="cpu", help="the reduced engine's device, e.g. cuda (the reference: CPU fp32)")
    p.add_argument("--fp32-convs", type=int, default=0,
                   help="run the backbone's last N convolutions (and what follows) in fp32, the rest in --precision")
    p.add_argument("--cascade", action="store_true",
                   help="also tabulate the cascade (bf16, then fp32 for near ties) per threshold pair")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    device = torch.device(args.device)
    if args.precision == Precision.FP32.value and device.type == "cpu":
        p.error("--precision fp32 compares a device with the CPU: give --device too")
    torch.set_num_threads(args.threads)
    images = photos()
    print(f"Machine: {machine(device)}; {len(images)} images ({len(PHOTOS)} skimage photos x 4 views)\n")
    print("| model | weights | precision | top-1 agreement | max prob diff | map corr min / median / mean "
          "| mask IoU min / mean | same top insecurity | Kendall tau (mean) | rule holds |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    cascades = {}
    for model in args.models.split(","):
        ref_engine, low_engine = engines(model, Precision(args.precision), args.fp32_convs, device)
        rows, marks = [], []
        for i in range(0, len(images), args.batch):
            reqs = [ImageRequest(x, OPTIONS) for x in images[i:i + args.batch]]
            for r, l in zip(ref_engine.explain(reqs), low_engine.explain(reqs)):
                rows.append(compare(r, l))
                marks.append(margins(l))
        top1 = np.mean([r["top1"] for r in rows])
        corr = [c for r in rows for c in r["corr"]]
        iou = [c for r in rows for c in r["iou"]]
        same = sum(r["same_top"] for r in rows)
        holds = top1 >= 0.99 and min(corr) >= 0.99 and same == len(rows)
        label = (f"{args.precision}, last {args.fp32_convs} convs fp32" if args.fp32_convs > 0
                 else low_engine.precision.value) + ("" if device.type == "cpu" else f" on {device.type}")
        print(f"| {model} | {'ImageNet' if lite_name(model) else 'random'} | {label} | "
              f"{top1:.1%} | {max(r['dprob'] for r in rows):.4f} | "
              f"{min(corr):.4f} / {np.median(corr):.4f} / {np.mean(corr):.4f} | "
              f"{min(iou):.3f} / {np.mean(iou):.3f} | {same}/{len(rows)} | "
              f"{np.nanmean([r['tau'] for r in rows]):.3f} | {'yes' if holds else 'no'} |", flush=True)
        cascades[model] = cascade_table(rows, marks)
    for model, table in cascades.items() if args.cascade else ():
        print(f"\nCascade, {model}: {args.precision} first, fp32 again where bf16's result is near a tie\n")
        print("\n".join(table), flush=True)


if __name__ == "__main__":
    main()
