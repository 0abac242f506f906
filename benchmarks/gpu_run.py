"""The prepared GPU run (issue 20): everything a first CUDA machine should measure, in one go, into $OUT.

    benchmarks/gpu.sh                      # make gpu-bench: on a CUDA GPU; fails at once without one
    benchmarks/gpu.sh --device cpu         # dry run: the same steps at the smallest sizes (make test runs it)
    benchmarks/gpu.sh --regions host --steps photo_sizes --repeats 10   # one step, regions measured on the host

Steps (each recorded in gpu.json and summarised in gpu.md, both rewritten after every step so that a run cut short
keeps what it finished; a step that cannot run says why):
  smoke       every kind alone and all together, with and without a counterfactual: zero INTERNAL.
  fidelity    the device engine against a CPU fp32 engine on the same photos, per backbone precision (fp32 =
              IEEE, tf32, bf16, fp16; those the device supports): top-5 agreement, attributive mask IoU on the
              working grid, relative strength difference.
  syncs       host-device synchronisations per batch at B = 1, 4, 16, 64 (galore.device.SyncCounter; on CUDA
              also the driver's count, torch.cuda.set_sync_debug_mode).
  throughput  images/s and p50/p99 per stage (the engine's synchronised stage timings) for EfficientNet-Lite0,
              ResNet-50 and VGG16 (random weights), prediction only, each kind alone and all six together.
  precisions  images/s of prediction only and of all six types per backbone precision (fp32 = IEEE, tf32, bf16,
              fp16), the same three models; the fidelity step says which of them keep the answers.
  photo_sizes all six types against prediction only (images/s and their ratio) for EfficientNet-Lite0 and
              ResNet-50 at 0.15 and 12 MP, batch 1 and 8: the CPU sweep's target (>= 0.9) on the device.
  memory      peak CUDA memory over batch size and working grid.
  oom         an out-of-memory error forced by a memory cap: RESOURCE_EXHAUSTED for the batch's images, then the
              same engine answers again once the cap is lifted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import torch  # noqa: E402

from galore import Engine, ExplainOptions, ImageRequest, Kind, Precision  # noqa: E402
from galore.device import SyncCounter  # noqa: E402
from galore.precision import bf16_supported, tf32_supported  # noqa: E402
from galore.regions import WorkingGrid  # noqa: E402
from galore.zoo import imagenet_labels  # noqa: E402
from galore_cli.machine import cpu_model  # noqa: E402

PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel")
COUNTERS = ((340, "coffee"), (291, "cat"))  # zebra, lion, with bank exemplars
FULL = {"batches": (1, 4, 16, 64), "models": ("efficientnet_lite0", "resnet50", "vgg16"), "repeats": 20,
        "throughput_batch": 16, "grids": (56, 112, 224), "fidelity_photos": 7,
        "photo_models": ("efficientnet_lite0", "resnet50"), "photo_mp": (0.15, 12.0), "photo_batches": (1, 8)}
ALL = ExplainOptions(kinds=frozenset(Kind), dims=(2, 3), top_e=5, counter_classes=tuple(c for c, _ in COUNTERS))
# the dry run checks that every step runs, nothing more
DRY = {"batches": (1, 2), "models": ("efficientnet_lite0",), "repeats": 1, "throughput_batch": 1, "grids": (56,),
       "fidelity_photos": 1, "photo_models": ("efficientnet_lite0",), "photo_mp": (0.15,), "photo_batches": (1,)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda[:N] (default), or cpu for the dry run")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--steps", default="smoke,fidelity,syncs,throughput,precisions,photo_sizes,memory,oom")
    parser.add_argument("--regions", choices=("auto", "host", "device"), default="auto",
                        help="where the regions are measured off the CPU: the engine's choice (auto), the coarse maps "
                             "copied to the host for the C kernel (host), or the device's sync-free path (device)")
    parser.add_argument("--repeats", type=int, help="timed calls per throughput row (default: 20 on CUDA, 1 dry)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-bench: no CUDA device (torch {torch.__version__}, torch.cuda.is_available() is False). "
              "This run is for a CUDA GPU; `benchmarks/gpu.sh --device cpu` is the dry run.", file=sys.stderr)
        return 2
    if device.type not in ("cuda", "cpu"):
        print(f"gpu-bench: unsupported device {device}", file=sys.stderr)
        return 2
    sizes = FULL if device.type == "cuda" else DRY
    if args.repeats is not None:
        if args.repeats < 1:
            parser.error(f"--repeats: must be at least 1, got {args.repeats}")
        sizes = {**sizes, "repeats": args.repeats}
    sizes = {**sizes, "on_host": {"auto": None, "host": True, "device": False}[args.regions]}
    args.out.mkdir(parents=True, exist_ok=True)
    report = {"device": _device_name(device), "torch": torch.__version__, "commit": _commit(), "dry_run":
              device.type != "cuda", "regions": args.regions, "sizes": sizes, "steps": {}}
    photos = [_photo(name) for name in PHOTOS]
    started = time.perf_counter()
    failed = []
    for step in args.steps.split(","):
        t0 = time.perf_counter()
        try:
            report["steps"][step] = STEPS[step](device, sizes, photos)
        except Exception as exc:  # noqa: BLE001 - record it, run the other steps, fail at the end
            report["steps"][step] = {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
            failed.append(step)
        report["steps"][step]["seconds"] = round(time.perf_counter() - t0, 2)
        report["seconds"] = round(time.perf_counter() - started, 1)
        write(report, args.out)
        print(f"gpu-bench: {step} {'FAILED' if step in failed else 'done'} in "
              f"{report['steps'][step]['seconds']} s", flush=True)
    print((args.out / "gpu.md").read_text())
    if failed:
        print(f"gpu-bench: steps failed: {failed} (tracebacks in {args.out / 'gpu.json'})", file=sys.stderr)
        return 1
    return 0


def write(report: dict, out: Path) -> None:
    (out / "gpu.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu.md").write_text(markdown(report))


# ---- steps ----------------------------------------------------------------------------------------------------
def smoke(device, sizes, photos) -> dict:
    engine = _lite(device, sizes)
    counter = tuple(c for c, _ in COUNTERS)
    cases = {kind.value: ExplainOptions(kinds=frozenset({kind}), dims=(2, 3), top_e=5, counter_classes=counter)
             for kind in Kind}
    cases["all"] = ALL
    cases["all but counterfactual"] = ExplainOptions(kinds=frozenset(Kind) - {Kind.COUNTERFACTUAL}, dims=(2, 3),
                                                     top_e=5)
    cases["prediction only"] = ExplainOptions(kinds=frozenset())
    B = max(sizes["batches"][:2])
    out = {}
    for name, options in cases.items():
        results = engine.explain([ImageRequest(photos[i % len(photos)], options) for i in range(B)])
        codes = [r.error.code if r.error else "OK" for r in results]
        out[name] = {code: codes.count(code) for code in sorted(set(codes))}
    internal = sum(v.get("INTERNAL", 0) for v in out.values())
    if internal:
        raise AssertionError(f"{internal} INTERNAL answers: {out}")
    return {"codes": out, "internal": internal}


def fidelity(device, sizes, photos) -> dict:
    reference = _lite(torch.device("cpu"), {**sizes, "on_host": None})
    options = ExplainOptions(kinds=frozenset({Kind.ATTRIBUTIVE}))
    requests = [ImageRequest(p, options) for p in photos[:sizes["fidelity_photos"]]]
    expected = reference.explain(requests)
    out = {}
    for precision in (Precision.FP32, Precision.TF32, Precision.BF16, Precision.FP16):
        why_not = "dry run: fp32 only" if device.type == "cpu" and precision is not Precision.FP32 else \
            _unsupported(precision, device)
        if why_not:
            out[precision.value] = {"skipped": why_not}
            continue
        got = _lite(device, sizes, precision).explain(requests)
        top5 = [[c.class_id for c in g.top_classes[:5]] == [c.class_id for c in e.top_classes[:5]]
                for g, e in zip(got, expected)]
        ious = [_iou(g.attributive.region.cells, e.attributive.region.cells) for g, e in zip(got, expected)]
        diffs = [abs(g.attributive.region.strength - e.attributive.region.strength)
                 / max(abs(e.attributive.region.strength), 1e-12) for g, e in zip(got, expected)]
        out[precision.value] = {"top5_agree": f"{sum(top5)}/{len(top5)}", "mask_iou_min": round(min(ious), 4),
                                "mask_iou_mean": round(statistics.mean(ious), 4),
                                "strength_rel_diff_max": float(f"{max(diffs):.3g}")}
    return out


def syncs(device, sizes, photos) -> dict:
    engine = _lite(device, sizes)
    options = ALL
    engine.explain([ImageRequest(photos[0], options)])
    if device.type == "cpu":
        engine.grid.sync_free = True  # count the path that runs on a GPU
    out = {}
    for B in sizes["batches"]:
        requests = [ImageRequest(photos[i % len(photos)], options) for i in range(B)]
        driver = None
        with SyncCounter() as counter:
            if device.type == "cuda":
                import warnings
                torch.cuda.synchronize(device)
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        engine.explain(requests)
                finally:
                    torch.cuda.set_sync_debug_mode(0)
                driver = sum("synchroniz" in str(w.message) for w in caught)
            else:
                engine.explain(requests)
        out[f"B={B}"] = {"counted": counter.count, "driver": driver, "points": dict(counter.points)}
    return out


def throughput(device, sizes, photos) -> dict:
    modes = {"prediction": ExplainOptions(kinds=frozenset())}
    counter = tuple(c for c, _ in COUNTERS)
    for kind in Kind:
        modes[kind.value] = ExplainOptions(kinds=frozenset({kind}), dims=(2, 3), top_e=5, counter_classes=counter)
    modes["all"] = ALL
    B, out = sizes["throughput_batch"], {}
    for model in sizes["models"]:
        engine = _lite(device, sizes) if model == "efficientnet_lite0" else _torchvision(model, device, sizes)
        for mode, options in modes.items():
            out[f"{model} {mode}"] = _timed(engine, [ImageRequest(photos[i % len(photos)], options)
                                                     for i in range(B)], sizes["repeats"])
        del engine
    return out


def precisions(device, sizes, photos) -> dict:
    B, out = sizes["throughput_batch"], {}
    for model in sizes["models"]:
        for precision in (Precision.FP32, Precision.TF32, Precision.BF16, Precision.FP16):
            why_not = "dry run: fp32 only" if device.type == "cpu" and precision is not Precision.FP32 else \
                _unsupported(precision, device)
            if why_not:
                out[f"{model} {precision.value}"] = {"skipped": why_not}
                continue
            engine = (_lite(device, sizes, precision) if model == "efficientnet_lite0"
                      else _torchvision(model, device, sizes, precision))
            for mode, options in (("prediction", ExplainOptions(kinds=frozenset())), ("all", ALL)):
                out[f"{model} {precision.value} {mode}"] = _timed(
                    engine, [ImageRequest(photos[i % len(photos)], options) for i in range(B)], sizes["repeats"])
            del engine
    return out


def photo_sizes(device, sizes, photos) -> dict:
    out = {}
    for model in sizes["photo_models"]:
        engine = _lite(device, sizes) if model == "efficientnet_lite0" else _torchvision(model, device, sizes)
        for mp in sizes["photo_mp"]:
            resized = [_resized(p, mp) for p in photos[:4]]
            for B in sizes["photo_batches"]:
                images = [resized[i % len(resized)] for i in range(B)]
                pred = _timed(engine, [ImageRequest(x, ExplainOptions(kinds=frozenset())) for x in images],
                              sizes["repeats"])
                every = _timed(engine, [ImageRequest(x, ALL) for x in images], sizes["repeats"])
                out[f"{model} {mp} MP B={B}"] = {"prediction_images_per_s": pred["images_per_s"],
                                                 "all_images_per_s": every["images_per_s"],
                                                 "all_over_prediction": round(every["images_per_s"]
                                                                              / pred["images_per_s"], 3),
                                                 "all_stages_ms": every["stages_ms"]}
        del engine
    return out


def _resized(img: torch.Tensor, mp: float) -> torch.Tensor:
    """A uint8 photo resized (antialiased) to about ``mp`` megapixels, its aspect kept."""
    import torchvision.transforms.v2.functional as TF
    _, h, w = img.shape
    scale = (mp * 1e6 / (h * w)) ** 0.5
    return TF.resize(img, [round(h * scale), round(w * scale)], antialias=True)


def _timed(engine: Engine, requests: list[ImageRequest], repeats: int) -> dict:
    """images/s (median of ``repeats`` calls after a warm-up) and p50 / p99 ms per stage."""
    engine.explain(requests)  # warm-up
    totals, stages = [], {}
    for _ in range(repeats):
        timings: dict[str, float] = {}
        t0 = time.perf_counter()
        engine.explain(requests, timings=timings)
        totals.append(time.perf_counter() - t0)
        for stage, seconds in timings.items():
            stages.setdefault(stage, []).append(seconds)
    return {"images_per_s": round(len(requests) / statistics.median(totals), 2),
            "stages_ms": {s: {"p50": round(_pct(v, 50) * 1e3, 2), "p99": round(_pct(v, 99) * 1e3, 2)}
                          for s, v in stages.items()}}


def memory(device, sizes, photos) -> dict:
    if device.type != "cuda":
        return {"skipped": "peak memory is a CUDA figure"}
    engine = _lite(device, sizes)
    options = ALL
    out = {}
    for grid in sizes["grids"]:
        engine.grid = WorkingGrid(grid, engine.preprocess.crop)
        for B in sizes["batches"]:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            engine.explain([ImageRequest(photos[i % len(photos)], options) for i in range(B)])
            out[f"G={grid} B={B}"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    return {"peak_MiB": out}


def oom(device, sizes, photos) -> dict:
    if device.type != "cuda":
        return {"skipped": "forcing an out-of-memory error needs a CUDA memory cap"}
    engine = _lite(device, sizes)
    options = ExplainOptions(kinds=frozenset(Kind), dims=(2, 3), top_e=5)
    requests = [ImageRequest(photos[i % len(photos)], options) for i in range(8)]
    engine.explain(requests)
    torch.cuda.empty_cache()
    total = torch.cuda.get_device_properties(device).total_memory
    in_use = torch.cuda.memory_allocated(device)
    index = device.index if device.index is not None else torch.cuda.current_device()  # the call wants an index
    torch.cuda.set_per_process_memory_fraction(min(1.0, (in_use + 2**20) / total), index)
    try:
        capped = engine.explain(requests)
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, index)
    after = engine.explain(requests)
    codes = sorted({r.error.code if r.error else "OK" for r in capped})
    recovered = all(r.ok for r in after)
    if codes != ["RESOURCE_EXHAUSTED"] or not recovered:
        raise AssertionError(f"capped codes {codes}, recovered {recovered}")
    return {"capped_codes": codes, "recovered": recovered}


STEPS = {"smoke": smoke, "fidelity": fidelity, "syncs": syncs, "throughput": throughput, "precisions": precisions,
         "photo_sizes": photo_sizes, "memory": memory, "oom": oom}


# ---- helpers --------------------------------------------------------------------------------------------------
def _lite(device: torch.device, sizes: dict, precision: Precision = Precision.FP32) -> Engine:
    engine = Engine.default(device=device, precision=precision)
    engine.grid.on_host = sizes["on_host"]
    for class_id, name in COUNTERS:
        engine.add_exemplar(class_id, _photo(name), f"bank:{name}")
    return engine


def _torchvision(arch: str, device: torch.device, sizes: dict, precision: Precision = Precision.FP32) -> Engine:
    torch.manual_seed(0)  # the same random weights in every step and precision
    engine = Engine.from_torchvision(arch, imagenet_labels(), device=device, precision=precision)
    engine.grid.on_host = sizes["on_host"]
    for class_id, name in COUNTERS:
        engine.add_exemplar(class_id, _photo(name), f"bank:{name}")
    return engine


def _unsupported(precision: Precision, device: torch.device) -> str | None:
    if precision is Precision.FP16 and device.type != "cuda":
        return "fp16 is CUDA only"
    if precision is Precision.TF32 and not tf32_supported(device):
        return "tf32 needs CUDA compute capability 8.0+"
    if precision is Precision.BF16 and not bf16_supported(device):
        return f"no native bf16 on this {device.type}"
    return None


def _iou(a, b) -> float:
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 1.0


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def _photo(name: str) -> torch.Tensor:
    import numpy as np
    import skimage.data
    arr = getattr(skimage.data, name)()
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, -1)
    return torch.from_numpy(np.ascontiguousarray(arr[..., :3])).permute(2, 0, 1).contiguous()


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "no git"


def markdown(report: dict) -> str:
    lines = [f"# gpu-bench: {report['device']} (torch {report['torch']}, commit {report['commit']}"
             f"{', DRY RUN on the CPU: sizes cut, not figures' if report['dry_run'] else ''})", ""]
    for step, result in report["steps"].items():
        lines += [f"## {step} ({result.get('seconds')} s)", ""]
        if "error" in result:
            lines += [f"FAILED: {result['error']}", ""]
            continue
        if step in ("throughput", "precisions"):
            lines += ["| model, mode | images/s | stage p50 / p99 ms |", "|---|---:|---|"]
            for name, row in result.items():
                if isinstance(row, dict) and "skipped" in row:
                    lines.append(f"| {name} | skipped: {row['skipped']} | |")
                elif isinstance(row, dict):
                    stages = ", ".join(f"{s} {v['p50']} / {v['p99']}" for s, v in row["stages_ms"].items())
                    lines.append(f"| {name} | {row['images_per_s']} | {stages} |")
            lines.append("")
        else:
            lines += ["```", json.dumps({k: v for k, v in result.items() if k != "seconds"}, indent=1), "```", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
