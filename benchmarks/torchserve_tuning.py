"""TorchServe tuning sweep on this machine: workers x threads, batch_size, max_batch_delay -> images/s and latency.

    .venv/bin/python benchmarks/torchserve_tuning.py --kinds deliberative --concurrency 8 --seconds 45

One fresh deployment per setting (archive rebuilt with its batching, workers scaled through the management API,
OMP_NUM_THREADS set for the workers), a few warm-up requests, then one closed-loop gRPC load point. Prints one
row per setting with images per server CPU-second (less disturbed by other load than images/s) and the machine's
load average, so results taken while other work ran can be told apart.
``--settings`` picks rows by index. Figures only, nothing asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import ServeSettings, deployment, load, server_cpu_seconds  # noqa: E402

from galore_cli.option_args import kind_list  # noqa: E402

# (workers, threads per worker, batch_size, max_batch_delay ms); threads 2 = torch's default on 2 cores
SETTINGS = (
    (1, 2, 1, 5),
    (1, 2, 4, 20),
    (1, 2, 8, 20),
    (1, 2, 8, 100),
    (2, 1, 4, 20),
    (2, 1, 8, 20),
    (1, 1, 8, 20),
    (1, 1, 4, 20),
    (1, 1, 1, 5),
    (2, 1, 4, 100),
    (2, 1, 1, 5),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="deliberative")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=45.0)
    parser.add_argument("--warmup", type=int, default=8)
    parser.add_argument("--settings", help="comma list of row indices of SETTINGS (default: all)")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    kinds = tuple(dict.fromkeys(k for k in kind_list(args.kinds) if k))
    rows = [SETTINGS[int(i)] for i in args.settings.split(",")] if args.settings else list(SETTINGS)
    results = []
    print(f"# kinds={args.kinds}, gRPC closed loop, concurrency {args.concurrency}, {args.seconds:g} s per setting")
    print("workers  threads  batch  delay_ms  images/s  images/cpu_s  p50_ms  p95_ms  errors  cold_start_s  "
          "load_avg_1m")
    for workers, threads, batch, delay in rows:
        settings = ServeSettings(batch_size=batch, max_batch_delay_ms=delay, workers=workers, threads=threads)
        with deployment(settings) as dep:
            load(dep, "grpc", kinds, args.concurrency, seconds=600, count=args.warmup)
            cpu_before = server_cpu_seconds(dep.service)
            s = load(dep, "grpc", kinds, args.concurrency, args.seconds)
            per_cpu = s.ok_images / (server_cpu_seconds(dep.service) - cpu_before)
            load1 = os.getloadavg()[0]
        results.append({"settings": asdict(settings), "cold_start_s": round(dep.cold_start_s, 2),
                        "load_avg_1m": round(load1, 2), "images_per_cpu_second": round(per_cpu, 3), **s.to_dict()})
        print(f"{workers:7}  {threads:7}  {batch:5}  {delay:8}  {s.images_per_second:8.2f}  {per_cpu:12.2f}  "
              f"{s.p50_s * 1e3:6.0f}  {s.p95_s * 1e3:6.0f}  {sum(s.errors.values()):6}  {dep.cold_start_s:12.1f}  "
              f"{load1:11.1f}", flush=True)
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
