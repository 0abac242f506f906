"""The regions stage against the backbone's forward: EfficientNet-Lite0, a batch of 8 photos at 0.15 MP, all six
types (engine_throughput.py's options), target <= 25 % of the forward.

    .venv/bin/python benchmarks/regions_stage.py                  # 1 thread, CPU time of this process, best of 7
    .venv/bin/python benchmarks/regions_stage.py --threads 2 --repeats 11

One ``engine.explain`` call records the batch's input to ``galore.kinds.measure_batch`` (every map, the plans, the
rules); then, interleaved: the regions stage on the CPU path by the C kernel (galore/_regions.c, the default where
it is built) and by torch blocks (only the cells near each map's threshold are upsampled, both), the same stage on
the sync-free path (every cell of every map upsampled and selected; the path off the CPU), and the backbone's
forward on the same batch. CPU seconds of this process (time.process_time), which other
processes on the machine disturb less than wall time; best of ``--repeats``.
"""
from __future__ import annotations

import argparse
import time

import torch

import galore.engine as engine_module
from galore import ImageRequest
from galore.kinds import measure_batch
from galore.regions import COMPILED
from galore.results import ImageResult

from engine_throughput import engine_version, machine, setup
from photo_sizes import resized


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--arch", default="efficientnet_lite0")
    p.add_argument("--mp", type=float, default=0.15)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    bench = setup(args.arch)
    photos = resized(args.mp)
    images = [photos[j % len(photos)] for j in range(args.batch)]
    seen = {}

    def record(grid, items, labels, results):
        seen["args"] = (grid, items, labels)
        return measure_batch(grid, items, labels, results)
    engine_module.measure_batch = record
    try:
        bench.engine.explain([ImageRequest(img, bench.options) for img in images])
    finally:
        engine_module.measure_batch = measure_batch
    grid, items, labels = seen["args"]
    maps = sum(m.maps.shape[0] + m.n_sides for _, _, p, _ in items for _, m in p.parts)
    x = torch.stack([bench.engine.preprocess.crop_uint8(img)[0] for img in images])

    def regions(sync_free: bool, compiled: bool = False):
        grid.sync_free, grid.compiled = sync_free, compiled
        measure_batch(grid, items, labels, [ImageResult() for _ in items])

    def forward():
        with torch.no_grad():
            bench.engine._backbone(x.to(bench.engine.device))

    runs = {"regions, blocks (CPU path, torch)": lambda: regions(False), "regions, every cell (sync-free path)":
            lambda: regions(True), "backbone forward": forward}
    if COMPILED:
        runs = {"regions, C kernel (CPU path, default)": lambda: regions(False, True), **runs}
    best = {name: float("inf") for name in runs}
    for _ in range(args.repeats):
        for name, fn in runs.items():
            start = time.process_time()
            fn()
            best[name] = min(best[name], time.process_time() - start)
    grid.sync_free, grid.compiled = None, None
    print(f"Machine: {machine()}; {engine_version()}")
    print(f"{args.arch}, batch {args.batch} at {args.mp} MP, {maps} maps, working grid {grid.side}; CPU ms, best of "
          f"{args.repeats}\n")
    print("| stage | CPU ms | / forward |\n|---|---|---|")
    for name, t in best.items():
        print(f"| {name} | {1e3 * t:.1f} | {t / best['backbone forward']:.2f} |")


if __name__ == "__main__":
    main()
