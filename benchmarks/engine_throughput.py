"""In-process throughput (images/s) of the GALORE engine against forward-only, Captum and pytorch-grad-cam.

    .venv/bin/python benchmarks/engine_throughput.py                       # full run (tens of minutes on 2 cores)
    .venv/bin/python benchmarks/engine_throughput.py --quick               # a few minutes
    .venv/bin/python benchmarks/engine_throughput.py --archs resnet50 --batches 1 --repeats 3 --skip gradcam,ig,gh

Methods, each timed per batch (preprocessing of the uint8 photos included, so all share the same input path):
  forward   backbone + head under torch.no_grad, softmax top-5: the prediction alone.
  galore    ONE ``engine.explain`` call per batch giving all six explanation types: attributive, self-aware,
            deliberative for V = 2 and 3 over the top-5 classes, and the multi-class counterfactual against two
            explicit counter classes whose exemplars sit in the engine's bank (features cached beforehand).
            Attribution: gradient x activation at F.
  captum    the query image's maps of the same explanation set through ``captum.attr.LayerGradientXActivation``
            on F, as a Captum user would write it: a prediction forward, then one ``attribute()`` call per target
            (each of the top-5 classes, which include y*, each counter class, and the softmax score through a
            wrapper model), each map summed over channels. The exemplar-side maps the engine also computes are NOT
            included here, so this favours Captum.
  gradcam   the same targets through ``pytorch_grad_cam.GradCAM`` (``ClassifierOutputTarget`` per class, a
            softmax-score target), one call per target.
  ig, gh    ``galore`` with Attribution.INTEGRATED_GRADIENTS (50 steps) / Attribution.GRADIENT_HESSIAN.

Models: torchvision ResNet-50 and VGG16 with random weights and 1000 ImageNet classes, EfficientNet-Lite0 with its
ImageNet weights (``Engine.default()``). Images: real photos from ``skimage.data`` cycled to fill each batch.
Per (model, batch): ``--warmup`` untimed rounds, then ``--repeats`` timed rounds, each running every method once
on the same images back to back (interleaved, so load from other processes hits all alike); IPS is batch / median
batch latency, ratios are medians of the per-round latency ratios. The slow baselines join only the first
``--baseline-repeats`` rounds (and warm up on one image); ig and gh run afterwards, ``--extra-repeats`` rounds.
Prints markdown tables (ours, CPU seconds per image, the paper's Table III); ``--json`` saves the figures.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field, replace
from typing import Callable

import skimage.data
import torch
from torch import nn

from galore import Attribution, Engine, ExplainOptions, ImageRequest, Kind
from galore.options import DEFAULT_MODEL  # noqa: E402
from galore.zoo import imagenet_labels
from galore_cli.machine import cpu_model

ARCHS = ("resnet50", "vgg16", DEFAULT_MODEL)
METHODS = ("forward", "galore", "captum", "gradcam", "ig", "gh")
PHOTOS = ("chelsea", "astronaut", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field", "colorwheel")
EXEMPLAR_PHOTOS = ("cat", "coffee")  # one bank exemplar per counter class
PREFERRED_COUNTERS = (281, 285, 282, 287, 291, 340)  # tabby, Egyptian cat, tiger cat, lynx, lion, zebra

# Paper Table III, images per second on an NVIDIA Titan Xp (mean; "<0.01" as 0.01 is shown as such).
PAPER_TABLE_III = (
    ("GALORE counterfactual", "26.51", "78.54"),
    ("GALORE deliberative", "3.78", "8.41"),
    ("Goyal et al. [30] counterfactual", "0.02", "1.13"),
    ("Deliberative baseline", "<0.01", "0.12"),
)


def photo(name: str) -> torch.Tensor:
    """A bundled skimage photo as a (3, H, W) uint8 RGB tensor."""
    return torch.from_numpy(getattr(skimage.data, name)()[..., :3].copy()).permute(2, 0, 1).contiguous()


def build_engine(arch: str) -> Engine:
    if arch == DEFAULT_MODEL:
        return Engine.default(device="cpu")
    return Engine.from_torchvision(arch, labels=imagenet_labels(), device="cpu")


@dataclass
class Bench:
    """One model with everything the methods need: engine, full model (backbone then head), photos, targets."""

    arch: str
    engine: Engine
    photos: list[torch.Tensor]
    counters: tuple[int, int]
    options: ExplainOptions
    model: nn.Module = field(init=False)

    def __post_init__(self):
        self.model = nn.Sequential(self.engine.split.backbone, self.engine.split.head).eval()

    def batch(self, i: int, size: int) -> list[torch.Tensor]:
        return [self.photos[(i * size + j) % len(self.photos)] for j in range(size)]

    def inputs(self, images: list[torch.Tensor]) -> torch.Tensor:
        """The engine's own preprocessing: (B, 3, S, S) float32."""
        return torch.stack([self.engine.preprocess(img)[0] for img in images])


def setup(arch: str) -> Bench:
    """Engine, photos, two counter classes never predicted for any photo, their bank exemplars."""
    engine = build_engine(arch)
    photos = [photo(name) for name in PHOTOS]
    bench = Bench(arch, engine, photos, (0, 0), ExplainOptions())
    with torch.no_grad():
        predicted = set(bench.model(bench.inputs(photos)).argmax(-1).tolist())
    order = list(PREFERRED_COUNTERS) + list(range(len(engine.labels)))
    counters = tuple([c for c in dict.fromkeys(order) if c not in predicted][:2])
    for c, name in zip(counters, EXEMPLAR_PHOTOS):
        engine.add_exemplar(c, photo(name), key=f"bench/{name}")
    bench.counters = counters
    bench.options = ExplainOptions(kinds=frozenset(Kind), attribution=Attribution.GRADIENT_X_ACTIVATION, top_e=5,
                                   dims=(2, 3), counter_classes=counters)
    return bench


# ---- methods: each maps a list of uint8 images to something computed; the timer measures the call ----------------
def run_forward(bench: Bench, images: list[torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return torch.topk(bench.model(bench.inputs(images)).softmax(-1), 5).indices


def galore_runner(options: ExplainOptions, stages: list[dict[str, float]]) -> Callable:
    def run(bench: Bench, images: list[torch.Tensor]):
        timings: dict[str, float] = {}
        results = bench.engine.explain([ImageRequest(img, options) for img in images], timings=timings)
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise SystemExit(f"{bench.arch}: engine failed: {failed[0]}")
        incomplete = [r for r in results if r.counterfactual is None or not r.counterfactual.complete
                      or sorted(r.deliberative) != [2, 3] or r.attributive is None or r.self_aware is None]
        if incomplete:
            raise SystemExit(f"{bench.arch}: engine returned an incomplete explanation set")
        stages.append(timings)
        return results
    return run


class SoftmaxScore(nn.Module):
    """The softmax score s(x) = max_y h_y(x) (eq. 21) as a one-output model, for Captum's ``target=0``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).softmax(-1).max(-1, keepdim=True).values  # (B, 1)


def target_columns(bench: Bench, x: torch.Tensor) -> list[list[int]]:
    """Per call k, the k-th target class of every image: its top-5 (y* first) then the counter classes.

    Images whose set is shorter (a counter class inside its top-5) repeat their y* so every call has B targets.
    """
    with torch.no_grad():
        top5 = torch.topk(bench.model(x), 5).indices.tolist()
    per_image = [list(dict.fromkeys(t + list(bench.counters))) for t in top5]
    calls = max(len(t) for t in per_image)
    return [[t[k] if k < len(t) else t[0] for t in per_image] for k in range(calls)]


def captum_runner():
    from captum.attr import LayerGradientXActivation

    cache: dict[str, tuple] = {}

    def run(bench: Bench, images: list[torch.Tensor]) -> list[torch.Tensor]:
        if bench.arch not in cache:
            layer = bench.model[0]  # its output is F
            cache[bench.arch] = (LayerGradientXActivation(bench.model, layer),
                                 LayerGradientXActivation(SoftmaxScore(bench.model), layer))
        classes, score = cache[bench.arch]
        x = bench.inputs(images)
        maps = [classes.attribute(x, target=column).sum(1) for column in target_columns(bench, x)]
        maps.append(score.attribute(x, target=0).sum(1))  # (B, h, w) each
        return maps
    return run


class SoftmaxScoreTarget:
    """pytorch-grad-cam target: the softmax score of one image's output (C,)."""

    def __call__(self, output: torch.Tensor) -> torch.Tensor:
        return output.softmax(-1).max()


def gradcam_runner():
    from pytorch_grad_cam import GradCAM
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    cache: dict[str, GradCAM] = {}

    def run(bench: Bench, images: list[torch.Tensor]) -> list:
        if bench.arch not in cache:
            cache[bench.arch] = GradCAM(model=bench.model, target_layers=[bench.model[0]])
        cam = cache[bench.arch]
        x = bench.inputs(images)
        maps = [cam(input_tensor=x, targets=[ClassifierOutputTarget(c) for c in column])
                for column in target_columns(bench, x)]
        maps.append(cam(input_tensor=x, targets=[SoftmaxScoreTarget() for _ in images]))
        return maps
    return run


# ---- timing -------------------------------------------------------------------------------------------------------
@dataclass
class Timed:
    """One method under test: its runner, its latencies (s per batch) and, for the engine, its stage timings."""

    name: str
    run: Callable
    stages: list[dict[str, float]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # this process's CPU seconds per batch

    def once(self, bench: Bench, images: list[torch.Tensor]) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        self.run(bench, images)
        took, cpu = time.perf_counter() - t0, time.process_time() - c0
        for p in bench.model.parameters():  # grad-cam's backward fills .grad; drop it
            p.grad = None
        return took, cpu


def runner(bench: Bench, method: str, stages: list[dict[str, float]]) -> Callable:
    if method == "forward":
        return run_forward
    if method == "galore":
        return galore_runner(bench.options, stages)
    if method == "ig":
        return galore_runner(replace(bench.options, attribution=Attribution.INTEGRATED_GRADIENTS, ig_steps=50),
                             stages)
    if method == "gh":
        return galore_runner(replace(bench.options, attribution=Attribution.GRADIENT_HESSIAN), stages)
    return captum_runner() if method == "captum" else gradcam_runner()


def busy_cores(seconds: float = 0.5) -> float:
    """Cores kept busy by all processes over ``seconds`` (from /proc/stat; we are idle meanwhile)."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            values = [int(v) for v in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait
    (t0, i0), _ = sample(), time.sleep(seconds)
    t1, i1 = sample()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def wait_for_quiet(max_wait: float, limit: float = 0.5) -> bool:
    """Wait (up to ``max_wait`` s) until other processes keep at most ``limit`` cores busy; True if they do."""
    deadline = time.perf_counter() + max_wait
    while True:
        if busy_cores() <= limit:
            return True
        if time.perf_counter() >= deadline:
            return False


QUIET = {"max_wait": 0.0, "rounds": 0, "quiet_rounds": 0}


BASELINES = ("captum", "gradcam")


def measure(bench: Bench, methods: list[str], batch: int, warmup: int, repeats: int, baseline_repeats: int
            ) -> dict[str, Timed]:
    """Warm every method up (the slow baselines on one image), then ``repeats`` rounds that run each method once on
    the same images, interleaved so that load from other processes hits all methods alike; the baselines take part
    in the first ``baseline_repeats`` rounds only. Stage timings of warm-up calls are dropped."""
    timed = {}
    for m in methods:
        t = timed[m] = Timed(m, None)
        t.run = runner(bench, m, t.stages)
    for i in range(warmup):
        for t in timed.values():
            t.once(bench, bench.batch(i, 1 if t.name in BASELINES else batch))
    for t in timed.values():
        t.stages.clear()
    for i in range(repeats):
        images = bench.batch(warmup + i, batch)
        if QUIET["max_wait"] > 0:
            QUIET["quiet_rounds"] += wait_for_quiet(QUIET["max_wait"])
        QUIET["rounds"] += 1
        for t in timed.values():
            if t.name not in BASELINES or i < baseline_repeats:
                took, cpu = t.once(bench, images)
                t.latencies.append(took)
                t.cpu.append(cpu)
    return timed


def figures(t: Timed, batch: int) -> dict:
    median = statistics.median(t.latencies)
    out = {"ips": batch / median, "median_s": median, "latencies_s": [round(x, 4) for x in t.latencies],
           "cpu_s_per_image": statistics.median(t.cpu) / batch, "cpu_s": [round(x, 4) for x in t.cpu]}
    if t.stages:
        out["stages_s"] = {k: statistics.median(s.get(k, 0.0) for s in t.stages) for k in t.stages[0]}
    return out


def paired_speedup(timed: dict[str, Timed], fast: str, slow: str) -> float | None:
    """Median over rounds of slow latency / fast latency (same images, adjacent in time; rounds both ran)."""
    if fast not in timed or slow not in timed:
        return None
    return statistics.median(s / f for f, s in zip(timed[fast].latencies, timed[slow].latencies))


def run_all(args) -> list[dict]:
    rows = []
    for arch in args.archs:
        bench = setup(arch)
        print(f"# {arch}: F = {bench.engine.split.layer} {bench.engine.split.feature_shape}, "
              f"counter classes {bench.counters}", file=sys.stderr, flush=True)
        for batch in args.batches:
            row = {"arch": arch, "batch": batch, "layer": bench.engine.split.layer,
                   "feature_shape": list(bench.engine.split.feature_shape), "counters": list(bench.counters)}
            main_methods = [m for m in args.methods if m not in ("ig", "gh")
                            and (m not in ("captum", "gradcam") or batch in args.baseline_batches)]
            extra = [m for m in args.methods if m in ("ig", "gh") and batch in args.extra_batches]
            timed = measure(bench, main_methods, batch, args.warmup, args.repeats, args.baseline_repeats)
            if extra:
                timed.update(measure(bench, extra, batch, 0 if args.quick else min(args.warmup, 1),
                                     args.extra_repeats, 0))
            for name, t in timed.items():
                row[name] = figures(t, batch)
                print(f"# {arch} b{batch} {name}: {row[name]['ips']:.3f} img/s over {row[name]['latencies_s']} s, "
                      f"cpu {row[name]['cpu_s']} s "
                      f"{row[name].get('stages_s', '')}", file=sys.stderr, flush=True)
            row["paired"] = {"galore_ips_over_forward_ips": paired_speedup(timed, "galore", "forward"),
                             "galore_speedup_vs_captum": paired_speedup(timed, "galore", "captum"),
                             "galore_speedup_vs_gradcam": paired_speedup(timed, "galore", "gradcam")}
            rows.append(row)
    return rows


# ---- report -------------------------------------------------------------------------------------------------------
def _ips(row: dict, method: str) -> str:
    return f"{row[method]['ips']:.2f}" if method in row else "-"


def _ratio(row: dict, key: str) -> str:
    value = row["paired"].get(key)
    return "-" if value is None else f"{value:.2f}x"


def markdown(rows: list[dict]) -> str:
    out = ["| Model | Batch | Forward only | GALORE, all six types | GALORE / forward | Captum LayerGxA "
           "| GALORE speed-up vs Captum | pytorch-grad-cam | GALORE speed-up vs grad-cam | GALORE IG (50 steps) "
           "| GALORE gradient-Hessian |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        out.append(f"| {r['arch']} | {r['batch']} | {_ips(r, 'forward')} | {_ips(r, 'galore')} "
                   f"| {_ratio(r, 'galore_ips_over_forward_ips')} | {_ips(r, 'captum')} "
                   f"| {_ratio(r, 'galore_speedup_vs_captum')} | {_ips(r, 'gradcam')} "
                   f"| {_ratio(r, 'galore_speedup_vs_gradcam')} | {_ips(r, 'ig')} | {_ips(r, 'gh')} |")
    out += ["", "IPS = batch / median batch latency. Ratios and speed-ups are medians over rounds of the paired "
                "latency ratios (each round runs every method once on the same images, back to back).", "",
            "Best round (batch / minimum latency: the run least disturbed by other processes; ratios of the minima):",
            "", "| Model | Batch | Forward only | GALORE | GALORE / forward | Captum | GALORE speed-up vs Captum "
            "| grad-cam | GALORE speed-up vs grad-cam | IG | gradient-Hessian |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        best = {m: r["batch"] / min(r[m]["latencies_s"]) for m in METHODS if m in r}

        def ratio(a: str, b: str) -> str:
            return f"{best[a] / best[b]:.2f}x" if a in best and b in best else "-"

        out.append(f"| {r['arch']} | {r['batch']} | " + " | ".join(
            f"{best[m]:.2f}" if m in best else "-" for m in ("forward", "galore")) + f" | {ratio('galore', 'forward')}"
            + "".join(f" | {best[m]:.2f} | {ratio('galore', m)}" if m in best else " | - | -"
                      for m in ("captum", "gradcam"))
            + "".join(f" | {best[m]:.2f}" if m in best else " | -" for m in ("ig", "gh")) + " |")
    out += ["",
            "GALORE stage medians, seconds per batch (from `engine.explain(..., timings=...)`):", "",
            "| Model | Batch | Attribution | preprocess | forward | attribution | regions | sum |",
            "|---|---:|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        for method, name in (("galore", "gradient x activation"), ("ig", "integrated gradients"),
                             ("gh", "gradient-Hessian")):
            s = r.get(method, {}).get("stages_s")
            if s:
                out.append(f"| {r['arch']} | {r['batch']} | {name} | " + " | ".join(
                    f"{s.get(k, 0.0):.3f}" for k in ("preprocess", "forward", "attribution", "regions"))
                    + f" | {sum(s.values()):.3f} |")
    out += ["", "This process's CPU seconds per image (median; includes OpenMP spinning, less sensitive than wall time "
                "to other processes taking the cores):", "",
            "| Model | Batch | " + " | ".join(METHODS) + " |", "|---|---:|" + "---:|" * len(METHODS)]
    for r in rows:
        out.append(f"| {r['arch']} | {r['batch']} | " + " | ".join(
            f"{r[m]['cpu_s_per_image']:.3f}" if m in r else "-" for m in METHODS) + " |")
    out += ["", "Paper Table III, images/s on an NVIDIA Titan Xp (for scale only: different hardware, CUB-200, "
                "region of one feature cell):", "", "| Method | VGG16 | ResNet-50 |", "|---|---:|---:|"]
    out += [f"| {name} | {vgg} | {resnet} |" for name, vgg, resnet in PAPER_TABLE_III]
    return "\n".join(out)


def machine() -> str:
    model = cpu_model()
    return (f"{model}, {os.cpu_count()} cores, torch {torch.__version__} with {torch.get_num_threads()} threads, "
            f"{'CUDA present but unused' if torch.cuda.is_available() else 'no GPU'}, {platform.python_version()}")


def engine_version() -> str:
    """The commit, and a digest of galore/*.py when they differ from it (what was actually measured)."""
    import hashlib
    from pathlib import Path

    import galore

    root = Path(galore.__file__).parent
    git = ["git", "-C", str(root.parent)]
    head = subprocess.run(git + ["rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(git + ["status", "--porcelain", "--", str(root)], capture_output=True, text=True).stdout
    if not dirty.strip():
        return f"engine at commit {head or '?'}"
    digest = hashlib.sha1(b"".join(f.read_bytes() for f in sorted(root.glob("*.py")))).hexdigest()[:10]
    return f"engine at commit {head or '?'} plus uncommitted galore/ changes (sha1 of galore/*.py {digest})"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", default=",".join(ARCHS), help="comma list of " + ", ".join(ARCHS))
    p.add_argument("--batches", default="1,8", help="comma list of batch sizes")
    p.add_argument("--baseline-batches", default="",
                   help="batch sizes at which captum and gradcam run (default: all of --batches)")
    p.add_argument("--extra-batches", default="1", help="batch sizes at which ig and gh run (they are slow)")
    p.add_argument("--methods", default=",".join(METHODS), help="comma list of " + ", ".join(METHODS))
    p.add_argument("--skip", default="", help="comma list of methods to leave out")
    p.add_argument("--repeats", type=int, default=5, help="timed batches per (model, batch, method)")
    p.add_argument("--baseline-repeats", type=int, default=2,
                   help="of the timed rounds, how many (the first) also run captum and gradcam")
    p.add_argument("--extra-repeats", type=int, default=3, help="timed batches for ig and gh")
    p.add_argument("--warmup", type=int, default=1, help="untimed batches first")
    p.add_argument("--max-wait", type=float, default=5.0,
                   help="before each timed round, wait up to this many seconds for other processes to go quiet")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.add_argument("--quick", action="store_true",
                   help="2 rounds, 1 for baselines and ig/gh (no warm-up), baselines at the smallest batch only, "
                        "no --max-wait")
    p.add_argument("--json", dest="json_path", help="also write the figures here")
    args = p.parse_args(argv)
    args.archs = [a for a in args.archs.split(",") if a]
    args.batches = [int(b) for b in args.batches.split(",") if b]
    args.extra_batches = [int(b) for b in args.extra_batches.split(",") if b]
    args.baseline_batches = [int(b) for b in args.baseline_batches.split(",") if b] or args.batches
    skip = set(args.skip.split(",")) - {""}
    args.methods = [m for m in args.methods.split(",") if m and m not in skip]
    for name, values, allowed in (("--archs", args.archs, ARCHS), ("--methods", args.methods + list(skip), METHODS)):
        bad = [v for v in values if v not in allowed]
        if bad:
            p.error(f"{name}: unknown {', '.join(bad)}; choose from {', '.join(allowed)}")
    if "galore" not in args.methods and any(m in args.methods for m in ("captum", "gradcam")):
        p.error("--methods: captum and gradcam are compared with galore; keep galore")
    if args.quick:  # fewer rounds, baselines only at the smallest batch, no waiting for quiet
        args.repeats, args.extra_repeats, args.max_wait = min(args.repeats, 2), 1, 0.0
        args.baseline_repeats = 1
        args.baseline_batches = [min(args.batches)]
    counts = [args.repeats, args.extra_repeats, args.baseline_repeats, args.threads] + args.batches
    if min(counts) < 1 or args.warmup < 0:
        p.error("--repeats, --extra-repeats, --baseline-repeats, --batches and --threads must be >= 1, --warmup >= 0")
    return args


def quiet_note() -> str:
    if QUIET["max_wait"] <= 0:
        return "rounds started without checking other processes' load"
    return (f"{QUIET['quiet_rounds']} of {QUIET['rounds']} timed rounds started with other processes using <= 0.5 "
            f"core (waited up to {QUIET['max_wait']:.0f} s each)")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    QUIET["max_wait"] = args.max_wait
    version = engine_version()  # of the code imported now, before any later edits
    load_before = os.getloadavg()
    started = time.perf_counter()
    rows = run_all(args)
    load_after = os.getloadavg()
    print(markdown(rows))
    print(f"\nMachine: {machine()}; {version}. Load average (1, 5, 15 min) before "
          f"{tuple(round(v, 2) for v in load_before)}, "
          f"after {tuple(round(v, 2) for v in load_after)}; {quiet_note()}; "
          f"wall time {time.perf_counter() - started:.0f} s.")
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump({"machine": machine(), "engine": version, "argv": sys.argv, "quiet": QUIET,
                       "load_before": load_before,
                       "load_after": load_after, "rows": rows}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
