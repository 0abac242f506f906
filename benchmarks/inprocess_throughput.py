"""In-process engine throughput: images/s of ``Engine.explain`` on the sample photos, no serving in between.

    .venv/bin/python benchmarks/inprocess_throughput.py --arch efficientnet_lite0 --batch 4 --kinds all --seconds 60

The baseline the serving benchmarks compare against: same model, batch size and kinds. Images are decoded once,
up front (decoding is the server's "decode" stage, so it is timed there but not here); each timed call explains
one batch of ``--batch`` images. torchvision architectures get random weights (nothing is downloaded).
Besides wall-clock images/s it reports images per CPU-second of this process (all its threads), a figure that
other load on a shared machine disturbs much less.
Prints one line of figures; ``--json`` also writes them.
"""
from __future__ import annotations

import argparse
import io
import json
import platform
import sys
import time

import numpy as np
import torch
from PIL import Image

from galore import Engine, ExplainOptions, ImageRequest, Kind
from galore.options import DEFAULT_MODEL  # noqa: E402
from galore.zoo import imagenet_labels
from galore_cli.load_transports import sample_images
from galore_cli.option_args import kind_list


def decoded_samples() -> list[torch.Tensor]:
    """The load tester's sample photos, decoded from the same JPEG bytes: (3, H, W) uint8 tensors."""
    tensors = []
    for data in sample_images():
        rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
        tensors.append(torch.from_numpy(rgb.copy()).permute(2, 0, 1).contiguous())
    return tensors


def build_engine(arch: str) -> Engine:
    if arch == DEFAULT_MODEL:
        return Engine.default(device="cpu")
    return Engine.from_torchvision(arch, state_dict=None, labels=imagenet_labels(), device="cpu")


def options_for(kinds: str, dims: tuple[int, ...]) -> ExplainOptions:
    return ExplainOptions(kinds=frozenset(Kind(name) for name in kind_list(kinds) if name), dims=dims)


def measure(engine: Engine, images: list[torch.Tensor], options: ExplainOptions, batch: int, seconds: float,
            warmup_batches: int = 2) -> dict:
    """Explains batches round-robin over ``images`` for about ``seconds``; returns images/s and batch latency."""
    def batch_at(i: int) -> list[ImageRequest]:
        return [ImageRequest(image=images[(i * batch + j) % len(images)], options=options) for j in range(batch)]

    for i in range(warmup_batches):
        engine.explain(batch_at(i))
    latencies = []
    started, cpu_started = time.perf_counter(), time.process_time()
    i = 0
    while time.perf_counter() - started < seconds or i < 3:
        t0 = time.perf_counter()
        results = engine.explain(batch_at(i))
        latencies.append(time.perf_counter() - t0)
        failed = [r.error for r in results if r.error is not None]
        if failed:
            raise SystemExit(f"engine failed: {failed[0]}")
        i += 1
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    latencies.sort()
    return {"images": i * batch, "seconds": round(elapsed, 2), "images_per_second": round(i * batch / elapsed, 3),
            "batch_p50_s": round(latencies[len(latencies) // 2], 4), "batches": i, "cpu_seconds": round(cpu, 2),
            "images_per_cpu_second": round(i * batch / cpu, 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=DEFAULT_MODEL, help="efficientnet_lite0, resnet50, vgg16, ...")
    parser.add_argument("--batch", type=int, default=1, help="images per engine call")
    parser.add_argument("--kinds", default="all", help="comma list of kinds, 'all' or 'prediction'")
    parser.add_argument("--dims", default="2", help="deliberative V values, comma list")
    parser.add_argument("--seconds", type=float, default=30.0, help="measure for about this long")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = build_engine(args.arch)
    options = options_for(args.kinds, tuple(int(v) for v in args.dims.split(",")))
    figures = measure(engine, decoded_samples(), options, args.batch, args.seconds)
    figures.update(arch=args.arch, batch=args.batch, kinds=args.kinds, torch_threads=torch.get_num_threads(),
                   machine=f"{platform.machine()} {torch.get_num_threads()} torch threads, "
                           f"{'CUDA' if torch.cuda.is_available() else 'CPU only'}")
    print(json.dumps(figures))
    if args.json_path:
        with open(args.json_path, "w") as out:
            json.dump(figures, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
