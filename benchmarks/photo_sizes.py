"""Explanations against prediction alone, in-process, at the photo sizes users send (0.15 to 24 MP).

    .venv/bin/python benchmarks/photo_sizes.py                                   # sweep: 3 models x 4 sizes x 2 batches
    .venv/bin/python benchmarks/photo_sizes.py --archs efficientnet_lite0 --sizes 0.15,12 --batches 1
    .venv/bin/python benchmarks/photo_sizes.py --rss          # peak RSS of one 24 MP request, E = 18, V = (2, 3)
    .venv/bin/python benchmarks/photo_sizes.py --response     # bytes of a default response for a 12 MP photo
    .venv/bin/python benchmarks/photo_sizes.py --precision fp32,bf16 --sizes 0.15,12   # backbone precision column

Every method starts from the same decoded uint8 photos (real skimage photos resized to the size), so the photo's
resize to the model's input is in every figure. Per (model, size, batch), interleaved rounds of one
``engine.explain`` call per batch:
  pred     prediction only (ExplainOptions(kinds=frozenset())): top classes and s(x)
  default  the default kinds (attributive, self-aware, deliberative V = 2 of E = 5, counterfactual vs runner-up)
  all      all six types: attributive, self-aware, deliberative V = 2 and 3, multi-class counterfactual against two
           counter classes with bank exemplars (engine_throughput.py's set)
Printed: images/s, the ratios to pred (target >= 0.9 for all), the same ratios in CPU seconds of this process
(steadier than wall time when other processes share the cores), and the stage split of ``all`` (VGG16's
attribution stage against its forward: target <= 0.5).

With ``--precision`` (e.g. ``nchw,fp32,bf16``) every round runs every method at every listed backbone precision on
the same engine, and every figure is against fp32 prediction only with the plain NCHW (contiguous) backbone, what
the service ran before channels_last: ``nchw`` is that baseline, ``fp32`` the engine's fp32 with channels_last.
"""
from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF

from engine_throughput import engine_version, machine, photo, setup, wait_for_quiet
from galore import ExplainOptions, ImageRequest, Kind, MaskEncoding, Precision
from galore.precision import resolve
from galore.regions import COMPILED, WorkingGrid

PHOTOS = ("chelsea", "coffee", "astronaut", "rocket")


def resized(mp: float) -> list[torch.Tensor]:
    out = []
    for name in PHOTOS:
        img = photo(name)
        _, h, w = img.shape
        scale = (mp * 1e6 / (h * w)) ** 0.5
        out.append(TF.resize(img, [round(h * scale), round(w * scale)], antialias=True))
    return out


def time_round(engine, images, options) -> tuple[float, float, dict]:
    """Wall seconds, CPU seconds of this process (all its threads) and stage timings of one explain call."""
    timings: dict[str, float] = {}
    start, cpu = time.perf_counter(), time.process_time()
    results = engine.explain([ImageRequest(img, options) for img in images], timings=timings)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    bad = [r.error for r in results if r.error is not None]
    if bad:
        raise SystemExit(f"engine failed: {bad[0]}")
    return elapsed, cpu, timings


def counters_for(bench, photo_sets: list[list[torch.Tensor]]) -> ExplainOptions:
    """bench.options with two counter classes predicted for none of the photos at any size (bank exemplars added
    where setup's pair is predicted somewhere)."""
    predicted = set()
    for photos in photo_sets:
        for r in bench.engine.explain([ImageRequest(p, ExplainOptions(kinds=frozenset())) for p in photos]):
            predicted.add(r.top_classes[0].class_id)
    if not predicted & set(bench.counters):
        return bench.options
    free = [c for c in range(len(bench.engine.labels)) if c not in predicted][:2]
    for c, name in zip(free, ("cat", "coffee")):
        bench.engine.add_exemplar(c, photo(name), key=f"bench/{name}/{c}")
    return replace(bench.options, counter_classes=tuple(free))


def sweep(args) -> list[dict]:
    rows = []
    for arch in args.archs.split(","):
        bench = setup(arch)
        if args.working_grid:
            bench.engine.grid = WorkingGrid(args.working_grid, bench.engine.preprocess.crop)
        bench.engine.grid.compiled = {"compiled": True, "torch": False}[args.regions]
        sizes = [float(s) for s in args.sizes.split(",")]
        photo_sets = {mp: resized(mp) for mp in sizes}
        methods = {"pred": ExplainOptions(kinds=frozenset()), "default": ExplainOptions(),
                   "all": counters_for(bench, list(photo_sets.values()))}
        for mp in sizes:
            photos = photo_sets[mp]
            for B in (int(b) for b in args.batches.split(",")):
                images = [photos[j % len(photos)] for j in range(B)]
                for options in methods.values():  # warm-up
                    time_round(bench.engine, images, options)
                times = {m: [] for m in methods}
                cpus = {m: [] for m in methods}
                stages: list[dict] = []
                for _ in range(args.repeats):
                    wait_for_quiet(args.max_wait)
                    for name, options in methods.items():
                        elapsed, cpu, timings = time_round(bench.engine, images, options)
                        times[name].append(elapsed)
                        cpus[name].append(cpu)
                        if name == "all":
                            stages.append(timings)
                med = {m: statistics.median(t) for m, t in times.items()}
                cpu = {m: statistics.median(t) for m, t in cpus.items()}
                stage = {k: statistics.median(s[k] for s in stages) for k in stages[0]}
                row = {"arch": arch, "grid": bench.engine.grid.side, "mp": mp, "batch": B, **{f"{m}_ips": B / med[m] for m in med},
                       "default_ratio": med["pred"] / med["default"], "all_ratio": med["pred"] / med["all"],
                       "default_cpu_ratio": cpu["pred"] / cpu["default"], "all_cpu_ratio": cpu["pred"] / cpu["all"],
                       **{f"all_{k}_ms": 1000 * v for k, v in stage.items()}}
                rows.append(row)
                print(markdown_row(row), flush=True)
    return rows


def set_precision(engine, mode: str) -> None:
    """Puts the engine's backbone in ``mode``: a Precision value, or "nchw" (fp32 without channels_last)."""
    engine.precision = resolve(Precision.FP32 if mode == "nchw" else Precision(mode), engine.device)
    engine.channels_last = mode != "nchw"
    engine.split.backbone.to(memory_format=torch.channels_last if engine.channels_last else torch.contiguous_format)


def precision_sweep(args) -> list[dict]:
    """Every (model, size, batch): rounds of every method at every precision, against nchw fp32 prediction."""
    rows, modes = [], ["nchw"] + [m for m in args.precision.split(",") if m != "nchw"]
    for arch in args.archs.split(","):
        bench = setup(arch)
        sizes = [float(s) for s in args.sizes.split(",")]
        photo_sets = {mp: resized(mp) for mp in sizes}
        methods = {"pred": ExplainOptions(kinds=frozenset()), "default": ExplainOptions(),
                   "all": counters_for(bench, list(photo_sets.values()))}
        for mp in sizes:
            for B in (int(b) for b in args.batches.split(",")):
                images = [photo_sets[mp][j % len(PHOTOS)] for j in range(B)]
                times = {(p, m): [] for p in modes for m in methods}
                cpus = {(p, m): [] for p in modes for m in methods}
                for round_ in range(args.repeats + 1):  # round 0 is the warm-up
                    wait_for_quiet(args.max_wait)
                    for mode in modes:
                        set_precision(bench.engine, mode)
                        for name, options in methods.items():
                            elapsed, cpu, _ = time_round(bench.engine, images, options)
                            if round_:
                                times[mode, name].append(elapsed)
                                cpus[mode, name].append(cpu)
                base, base_cpu = statistics.median(times["nchw", "pred"]), statistics.median(cpus["nchw", "pred"])
                for mode in modes:
                    row = {"arch": arch, "mp": mp, "batch": B, "precision": mode}
                    for name in methods:
                        row[f"{name}_ips"] = B / statistics.median(times[mode, name])
                        row[f"{name}_ratio"] = base / statistics.median(times[mode, name])
                        row[f"{name}_cpu_ratio"] = base_cpu / statistics.median(cpus[mode, name])
                    rows.append(row)
                    print(precision_row(row), flush=True)
        set_precision(bench.engine, "fp32")
    return rows


PRECISION_HEADER = ("| model | photo | batch | backbone | pred img/s | default img/s | all img/s "
                    "| pred / default / all vs NCHW fp32 pred (wall) | same, CPU time |\n"
                    "|---|---|---|---|---|---|---|---|---|")


def precision_row(r: dict) -> str:
    wall = " / ".join(f"{r[f'{m}_ratio']:.2f}" for m in ("pred", "default", "all"))
    cpu = " / ".join(f"{r[f'{m}_cpu_ratio']:.2f}" for m in ("pred", "default", "all"))
    name = "fp32 NCHW" if r["precision"] == "nchw" else f"{r['precision']} channels_last"
    return (f"| {r['arch']} | {r['mp']:g} MP | {r['batch']} | {name} | {r['pred_ips']:.2f} | {r['default_ips']:.2f} | "
            f"{r['all_ips']:.2f} | {wall} | {cpu} |")


HEADER = ("| model | grid | photo | batch | pred img/s | default img/s | all img/s | default / pred | all / pred "
          "| CPU-time ratios default / all | all: preprocess / forward / attribution / regions ms |\n"
          "|---|---|---|---|---|---|---|---|---|---|---|")


def markdown_row(r: dict) -> str:
    split = " / ".join(f"{r.get(f'all_{k}_ms', 0):.0f}" for k in ("preprocess", "forward", "attribution", "regions"))
    return (f"| {r['arch']} | {r['grid']} | {r['mp']:g} MP | {r['batch']} | {r['pred_ips']:.2f} | {r['default_ips']:.2f} | "
            f"{r['all_ips']:.2f} | {r['default_ratio']:.2f} | {r['all_ratio']:.2f} | "
            f"{r['default_cpu_ratio']:.2f} / {r['all_cpu_ratio']:.2f} | {split} |")


def peak_rss() -> None:
    """Child process: one 24 MP photo, E = 18, V = (2, 3) (969 maps); prints RSS before and the peak."""
    from galore import Engine

    from PIL import Image

    engine = Engine.default(device="cpu")
    small = photo("chelsea")  # 451 x 300, upscaled by Pillow to 6000 x 4000 without torch temporaries
    big = Image.fromarray(small.permute(1, 2, 0).numpy()).resize((6000, 4000), Image.BICUBIC)
    image = torch.from_numpy(np.asarray(big).copy()).permute(2, 0, 1)
    del big
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    opts = ExplainOptions(kinds=frozenset({Kind.DELIBERATIVE, Kind.ATTRIBUTIVE}), top_e=18, dims=(2, 3))
    timings: dict[str, float] = {}
    start = time.perf_counter()
    (res,) = engine.explain([ImageRequest(image, opts)], timings=timings)
    elapsed = time.perf_counter() - start
    if not res.ok:
        raise SystemExit(f"engine failed: {res.error}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"photo": list(image.shape[1:]), "maps": 969, "peak_rss_before_request_mb": round(before),
                      "peak_rss_mb": round(peak), "seconds": round(elapsed, 2),
                      "stages_s": {k: round(v, 2) for k, v in timings.items()}}))


def response_size() -> None:
    """Serialized default ExplainResponse for a 12 MP photo, per mask encoding (galore_service.convert, as served)."""
    from galore import Engine
    from galore_api.v1 import explainer_pb2 as pb
    from galore_service import convert

    engine = Engine.default(device="cpu")
    image = resized(12)[0]
    options = ExplainOptions()
    (res,) = engine.explain([ImageRequest(image, options)])
    for name, encoding in (("rle", MaskEncoding.RLE), ("bits", MaskEncoding.BITS)):
        start = time.perf_counter()
        message = pb.ExplainResponse(images=[convert.image_explanation(
            "images[0]", res, engine.labels, replace(options, mask_encoding=encoding))])
        data = message.SerializeToString()
        print(f"{name}: {len(data):,} bytes, encoded in {1000 * (time.perf_counter() - start):.1f} ms "
              f"({tuple(image.shape[1:])} photo)")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default="efficientnet_lite0,resnet50,vgg16")
    p.add_argument("--sizes", default="0.15,3,12,24", help="megapixels")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-wait", type=float, default=5.0, help="seconds to wait for a quiet machine per round")
    p.add_argument("--working-grid", type=int, help="side G of the regions' grid (default: the model's crop)")
    p.add_argument("--regions", choices=("compiled", "torch"), default="compiled",
                   help="the CPU regions stage: the C kernel (the default where built) or its torch path")
    p.add_argument("--precision", help="backbone precisions to compare, e.g. nchw,fp32,bf16 (see above)")
    p.add_argument("--rss", action="store_true", help="peak RSS of one 24 MP request with 969 maps")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--response", action="store_true", help="default response size for a 12 MP photo")
    p.add_argument("--json", dest="json_path")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.rss_child:
        return peak_rss()
    if args.regions == "compiled" and not COMPILED:
        raise SystemExit("--regions compiled: galore._regions is not built (pip install the package with gcc)")
    print(f"Machine: {machine()}; {engine_version()}; regions stage: {args.regions}\n")
    if args.rss:
        out = subprocess.run([sys.executable, __file__, "--rss-child", "--threads", str(args.threads)],
                             capture_output=True, text=True, check=True)
        print(out.stdout.strip())
        return
    if args.response:
        return response_size()
    if args.precision:
        print(PRECISION_HEADER)
        rows = precision_sweep(args)
    else:
        print(HEADER)
        rows = sweep(args)
    if args.json_path:
        with open(args.json_path, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
