"""End-to-end serving throughput against the in-process engine, for one model / batching / kinds setting.

    .venv/bin/python benchmarks/serving_throughput.py --arch efficientnet_lite0 --kinds deliberative \\
        --concurrency 8 --seconds 20 --rounds 3 --inprocess

Starts TorchServe + gateway as `make serve` does (cold start to SERVING is measured), warms the worker up, then
runs ``--rounds`` rounds. Each round: for each transport (gRPC through the gateway, REST straight to TorchServe)
and closed-loop concurrency, single-image requests for ``--seconds``; then, with ``--inprocess``, the in-process
engine (benchmarks/inprocess_throughput.py in a subprocess, same model, kinds and threads, batch = the TorchServe
batch size) for ``--seconds`` while the server sits idle. Interleaving the rounds exposes serving and in-process
alike to whatever else loads the machine; the report gives per-point medians over rounds and the median of the
per-round ratios serving / in-process. Also images per CPU-second (serving: CPU of TorchServe, its workers and the
gateway; in-process: the engine process), which other load on a shared machine disturbs much less than wall-clock
throughput, and the workers' resident memory. Figures only, nothing asserted.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from dataclasses import asdict
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import (REPO, ServeSettings, deployment, load, machine, server_cpu_seconds,  # noqa: E402
                           worker_rss_mib)

from galore.options import DEFAULT_MODEL  # noqa: E402
from galore_cli.option_args import kind_list  # noqa: E402


def default_batch_size() -> int:
    return int(yaml.safe_load((REPO / "deploy" / "torchserve" / "model-config.yaml").read_text())["batchSize"])


def inprocess(arch: str, kinds: str, batch: int, threads: int, seconds: float) -> dict:
    cmd = [sys.executable, str(REPO / "benchmarks" / "inprocess_throughput.py"), "--arch", arch, "--kinds", kinds,
           "--batch", str(batch), "--seconds", str(seconds), "--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=REPO).stdout
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default=DEFAULT_MODEL)
    parser.add_argument("--kinds", default="deliberative", help="load tester --kinds syntax")
    parser.add_argument("--batch-size", type=int, help="TorchServe batchSize (default: model-config.yaml)")
    parser.add_argument("--max-batch-delay", type=int, help="TorchServe maxBatchDelay, ms")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS per worker (0: the environment's; LocalService default 1)")
    parser.add_argument("--transports", default="grpc,rest")
    parser.add_argument("--concurrency", default="8", help="comma list of closed-loop concurrencies")
    parser.add_argument("--seconds", type=float, default=30.0, help="per load point")
    parser.add_argument("--warmup", type=int, default=4, help="untimed requests first")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inprocess", action="store_true", help="also measure the in-process engine")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    kinds = tuple(dict.fromkeys(k for k in kind_list(args.kinds) if k))
    settings = ServeSettings(arch=args.arch, batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay,
                             workers=args.workers, threads=args.threads)
    figures = {"settings": asdict(settings), "kinds": args.kinds, "machine_before": machine(), "points": []}
    print(f"# {args.arch} kinds={args.kinds} batch_size={args.batch_size or default_batch_size()} "
          f"max_batch_delay={args.max_batch_delay} workers={args.workers} threads={args.threads or 'env'}")
    print(f"# machine: {figures['machine_before']}")
    batch = args.batch_size or default_batch_size()
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    transports = args.transports.split(",")
    with deployment(settings) as dep:
        figures["cold_start_s"] = round(dep.cold_start_s, 2)
        print(f"cold start to SERVING: {dep.cold_start_s:.1f} s; worker RSS {worker_rss_mib(dep.service):.0f} MiB")
        load(dep, "grpc", kinds, concurrency=min(args.warmup, 4), seconds=600, count=args.warmup)
        print("round  transport  concurrency  images/s  images/cpu_s  p50_ms  p95_ms  p99_ms  errors  worker_rss_MiB")
        for round_ in range(args.rounds):
            for transport in transports:
                for concurrency in concurrencies:
                    cpu_before = server_cpu_seconds(dep.service)
                    s = load(dep, transport, kinds, concurrency, args.seconds)
                    cpu = server_cpu_seconds(dep.service) - cpu_before
                    rss = worker_rss_mib(dep.service)
                    figures["points"].append({"round": round_, "transport": transport, "concurrency": concurrency,
                                              "worker_rss_mib": round(rss, 1), "server_cpu_seconds": round(cpu, 2),
                                              "images_per_cpu_second": round(s.ok_images / cpu, 3), **s.to_dict()})
                    print(f"{round_:5}  {transport:9}  {concurrency:11}  {s.images_per_second:8.2f}  "
                          f"{s.ok_images / cpu:10.2f}  {s.p50_s * 1e3:6.0f}  {s.p95_s * 1e3:6.0f}  "
                          f"{s.p99_s * 1e3:6.0f}  {sum(s.errors.values()):6}  {rss:14.0f}", flush=True)
            if args.inprocess:
                threads = args.threads or int(os.environ.get("OMP_NUM_THREADS", "1"))  # what the workers got
                base = inprocess(args.arch, args.kinds, batch, threads, args.seconds)
                figures.setdefault("inprocess", []).append(base)
                print(f"{round_:5}  in-process batch {batch}: {base['images_per_second']:.2f} images/s, "
                      f"{base['images_per_cpu_second']:.2f} images/cpu_s", flush=True)
    print("median over rounds:")
    for transport in transports:
        for concurrency in concurrencies:
            points = [p for p in figures["points"] if (p["transport"], p["concurrency"]) == (transport, concurrency)]
            ips = statistics.median(p["images_per_second"] for p in points)
            line = f"  {transport} concurrency {concurrency}: {ips:.2f} images/s, " \
                   f"p50 {statistics.median(p['p50_s'] for p in points) * 1e3:.0f} ms, " \
                   f"p95 {statistics.median(p['p95_s'] for p in points) * 1e3:.0f} ms"
            line += f", {statistics.median(p['images_per_cpu_second'] for p in points):.2f} images/cpu_s"
            if args.inprocess:
                ratios = [p["images_per_second"] / figures["inprocess"][p["round"]]["images_per_second"]
                          for p in points]
                cpu_ratios = [p["images_per_cpu_second"] / figures["inprocess"][p["round"]]["images_per_cpu_second"]
                              for p in points]
                line += f"; vs in-process: {statistics.median(ratios):.2f}x images/s (per round " \
                        f"{', '.join(f'{r:.2f}' for r in ratios)}), {statistics.median(cpu_ratios):.2f}x images/cpu_s"
            print(line)
    if args.inprocess:
        print(f"  in-process batch {batch}: "
              f"{statistics.median(b['images_per_second'] for b in figures['inprocess']):.2f} images/s, "
              f"{statistics.median(b['images_per_cpu_second'] for b in figures['inprocess']):.2f} images/cpu_s")
    figures["machine_after"] = machine()
    print(f"# machine after: {figures['machine_after']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
