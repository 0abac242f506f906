"""TorchServe and the KServe host side by side in one run: cold start, then the same closed-loop load through the
gateway (gRPC) and each host's REST, in alternating rounds so both see the same machine load. With ``--batching``,
the KServe host's own micro-batching (the archive's batchSize 4 / maxBatchDelay 20 ms) against none (1 / 0 ms).
Prints figures for BENCHMARKS.md ("Two hosts"); nothing here is a test.

    python benchmarks/two_hosts.py --seconds 30 --rounds 2 --concurrency 8 --kinds deliberative
    python benchmarks/two_hosts.py --batching --seconds 30 --rounds 2 --concurrency 8 --kinds deliberative
"""
from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from contextlib import ExitStack
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.bench_serving import ServeSettings, deployment, load, machine, server_cpu_seconds  # noqa: E402
from galore_cli.machine import cpu_model  # noqa: E402


def batch_counts(dep) -> tuple[float, float]:
    """(engine calls, images) so far, from the worker's galore_batch_size histogram."""
    text = requests.get(dep.service.config.worker_metrics_url, timeout=30).text
    values = {}
    for name in ("count", "sum"):
        found = re.search(rf'^galore_batch_size_{name}{{[^}}]*model="[^"]+"[^}}]*}} (\S+)', text, re.M)
        values[name] = float(found.group(1)) if found else 0.0
    return values["count"], values["sum"]


def rounds(deployments: dict, transports: tuple[str, ...], args) -> dict:
    """name -> transport -> list of LoadSummary dicts (+ mean batch size), in alternating rounds."""
    results = {name: {t: [] for t in transports} for name in deployments}
    for round_ in range(args.rounds):
        for name, dep in deployments.items():
            for transport in transports:
                calls, images = batch_counts(dep)
                cpu = server_cpu_seconds(dep.service)
                summary = load(dep, transport, tuple(args.kinds), args.concurrency, args.seconds).to_dict()
                used = server_cpu_seconds(dep.service) - cpu  # the host and the gateway, not the load generator
                summary["images_per_cpu_second"] = summary["ok_images"] / max(1e-9, used)
                new_calls, new_images = batch_counts(dep)
                summary["mean_batch_images"] = (new_images - images) / max(1.0, new_calls - calls)
                results[name][transport].append(summary)
                print(f"round {round_ + 1} {name:<24} {transport:<4} {summary['images_per_second']:6.2f} images/s "
                      f"p99 {summary['p99_s']:.3f} s, {summary['images_per_cpu_second']:.2f} images per CPU-s, "
                      f"{summary['mean_batch_images']:.2f} images per engine call, "
                      f"errors {summary['errors']}", flush=True)
    return results


def table(results: dict, cold: dict[str, float]) -> str:
    lines = ["| Host | Transport | images/s (per round) | images per CPU-second | p99 s (worst round) "
             "| images per engine call | cold start s |",
             "|---|---|---|---|---|---|---|"]
    for name, by_transport in results.items():
        for transport, runs in by_transport.items():
            rates = " / ".join(f"{r['images_per_second']:.2f}" for r in runs)
            batch = statistics.mean(r["mean_batch_images"] for r in runs)
            per_cpu = statistics.mean(r["images_per_cpu_second"] for r in runs)
            lines.append(f"| {name} | {transport} | {rates} | {per_cpu:.2f} | {max(r['p99_s'] for r in runs):.2f} | "
                         f"{batch:.2f} | {cold[name]:.1f} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=30.0, help="per load point")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--kinds", nargs="*", default=["deliberative"], help="explanation kinds; none: prediction")
    parser.add_argument("--batching", action="store_true", help="KServe host: own micro-batching vs none")
    parser.add_argument("--json", help="write every figure here")
    args = parser.parse_args(argv)
    if args.batching:
        plans = {"kserve batch 4 / 20 ms": ServeSettings(backend="kserve"),
                 "kserve batch 1 / 0 ms": ServeSettings(backend="kserve", batch_size=1, max_batch_delay_ms=0)}
        transports = ("grpc",)
    else:
        plans = {"torchserve": ServeSettings(backend="torchserve"), "kserve": ServeSettings(backend="kserve")}
        transports = ("grpc", "rest")
    print(f"{cpu_model()}; {machine()}", flush=True)
    print(f"load: closed loop, concurrency {args.concurrency}, kinds {args.kinds or 'prediction only'}, "
          f"{args.seconds:g} s per point, {args.rounds} rounds, skimage sample photos", flush=True)
    with ExitStack() as stack:
        deployments, cold = {}, {}
        for name, settings in plans.items():  # started one after the other: cold starts do not compete
            deployments[name] = stack.enter_context(deployment(settings))
            cold[name] = deployments[name].cold_start_s
            print(f"{name}: SERVING {cold[name]:.1f} s after start", flush=True)
        results = rounds(deployments, transports, args)
    print(table(results, cold))
    print(f"{cpu_model()}; {machine()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"cold_start_s": cold, "results": results}, indent=2))


if __name__ == "__main__":
    main()
