"""Worker memory over many requests: resident memory of the TorchServe workers, sampled every ``--every`` requests.

    .venv/bin/python benchmarks/worker_memory.py --requests 10000 --every 500 --kinds all --concurrency 8

Starts a deployment as `make serve` does (default settings unless given), sends ``--warmup`` requests (the
allocator and caches settle), takes the baseline RSS, then sends ``--requests`` more through the gateway (closed
loop, sample photos, chunks of ``--every``), printing RSS after each chunk and the growth over the baseline.
``--minutes`` stops early, saying so.
Figures only, nothing asserted.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_serving import ServeSettings, deployment, load, machine, worker_rss_mib  # noqa: E402

from galore_cli.option_args import kind_list  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--every", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--kinds", default="all")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=0,
                        help="OMP_NUM_THREADS per worker (0: the environment's; LocalService default 1)")
    parser.add_argument("--batch-size", type=int, help="TorchServe batchSize (default: model-config.yaml)")
    parser.add_argument("--minutes", type=float, default=60.0, help="stop after this long, even if short of --requests")
    parser.add_argument("--json", dest="json_path")
    args = parser.parse_args(argv)
    kinds = tuple(dict.fromkeys(k for k in kind_list(args.kinds) if k))
    figures = {"kinds": args.kinds, "machine_before": machine(), "samples": []}
    print(f"# worker memory, kinds={args.kinds}, concurrency {args.concurrency}, workers {args.workers}, threads "
          f"{args.threads or 'env'}, batch {args.batch_size or 'default'}; {figures['machine_before']}")
    settings = ServeSettings(batch_size=args.batch_size, workers=args.workers, threads=args.threads)
    figures["settings"] = asdict(settings)
    with deployment(settings) as dep:
        load(dep, "grpc", kinds, args.concurrency, seconds=3600, count=args.warmup)
        baseline = worker_rss_mib(dep.service)
        figures["baseline_rss_mib"] = round(baseline, 1)
        print(f"after {args.warmup} warm-up requests: {baseline:.0f} MiB")
        sent, errors = 0, 0
        deadline = time.monotonic() + args.minutes * 60
        while sent < args.requests and time.monotonic() < deadline:
            chunk = min(args.every, args.requests - sent)
            summary = load(dep, "grpc", kinds, args.concurrency, seconds=max(1.0, deadline - time.monotonic()),
                           count=chunk)
            sent += summary.requests
            errors += sum(summary.errors.values())
            rss = worker_rss_mib(dep.service)
            figures["samples"].append({"requests": sent, "rss_mib": round(rss, 1),
                                       "images_per_second": round(summary.images_per_second, 2)})
            print(f"{sent:6} requests: {rss:7.0f} MiB ({(rss / baseline - 1) * 100:+.1f} %), "
                  f"{summary.images_per_second:.2f} images/s, errors so far {errors}", flush=True)
        final = figures["samples"][-1]["rss_mib"] if figures["samples"] else baseline
        figures.update(requests=sent, errors=errors, growth_percent=round((final / baseline - 1) * 100, 2),
                       machine_after=machine())
        stopped = "" if sent >= args.requests else f" (stopped by --minutes {args.minutes:g} before {args.requests})"
        print(f"{sent} requests{stopped}: {baseline:.0f} -> {final:.0f} MiB, growth "
              f"{figures['growth_percent']:+.2f} %, {errors} errors; {figures['machine_after']}")
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
