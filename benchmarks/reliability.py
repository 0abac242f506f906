"""`make reliability`: fuzzing, soak, fault injection and overload against a fresh local deployment; prints figures.

    .venv/bin/python benchmarks/reliability.py --fuzz-cases 10000 --soak-minutes 10 --json reliability.json

The deployment is started as `make serve` starts it (galore_supervisor.deployment.LocalService, supervised: a crashed
TorchServe or gateway is started again). Phases, in order:
  capacity  closed loop, 8 clients, the mixed load (photo sizes 0.01-2 MP, all kind mixes, gRPC + REST): requests/s
  fuzz      hypothesis cases through both transports (benchmarks/reliability_fuzz.py), seed printed
  soak      open loop at --soak-load x capacity; errors, p50/p95/p99 and RSS of workers and gateway per window
  faults    under open-loop load: kill one worker, kill all workers, kill TorchServe (supervisor restarts it),
            SIGTERM the gateway; each: failed calls by code, slowest call, recovery time
  overload  --overload-clients closed-loop gRPC clients, 5 s deadline, retried by galore_client's gRPC service config
            (3 retries, budget, pushback); then 100 ms deadlines
  goodput   open loop at --goodput-levels x the gRPC capacity (closed loop, as many clients as the gateway forwards
            at once, so every slot stays busy and none is shed; gRPC-only mix), --goodput-seconds
            each, 5 s deadline, retried by galore_client's own gRPC service config (retry policy, budget, the
            gateway's pushback): goodput, shed calls and attempts, p50/p99 of the accepted calls, work computed for
            expired calls, and the CPU of the load generator (this process), the gateway and the workers
Figures only, nothing asserted; the small versions of these checks are tests/reliability (`make test`).
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import grpc
import psutil
import requests
from grpc_health.v1 import health_pb2, health_pb2_grpc

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks.reliability_fuzz import generate, send_all  # noqa: E402
from benchmarks.reliability_load import Load, Sender, mix, percentiles, photos, rss_mib, summarize  # noqa: E402
from galore_api.v1 import explainer_pb2 as pb  # noqa: E402
from galore_client.client import SERVICE  # noqa: E402
from galore_cli.machine import cpu_model, cpu_seconds  # noqa: E402
from galore_client.retry import RetryPolicy  # noqa: E402
from galore_gateway.config import GatewayConfig  # noqa: E402
from galore_supervisor.deployment import Backoff, LocalConfig, LocalService, Ports, free_ports  # noqa: E402
from galore_wire.contract import MAX_MESSAGE_BYTES  # noqa: E402

MODEL = "efficientnet_lite0"
SERVING = health_pb2.HealthCheckResponse.SERVING



def say(line: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)


class Deployment:
    """A supervised local deployment (what `make serve` runs), plus the probes the phases need."""

    def __init__(self, model_store: Path, run_dir: Path):
        self.service = LocalService(LocalConfig(model_store=model_store, run_dir=run_dir, model=MODEL,
                                                ports=Ports(*free_ports(7))))
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(
            target=self.service.supervise, args=(self._stopping.is_set, Backoff(initial_s=1.0)),
            kwargs={"log": lambda line: say(f"supervisor: {line}")}, daemon=True)
        ports = self.service.config.ports
        self.grpc_target = f"127.0.0.1:{ports.grpc}"
        self.rest_url = f"http://127.0.0.1:{ports.rest}/predictions/{MODEL}"
        self._health_channel = grpc.insecure_channel(self.grpc_target)

    def start(self) -> float:
        started = time.monotonic()
        self.service.start()
        self.service.wait_serving(timeout_s=600)
        self._supervisor.start()
        return time.monotonic() - started

    def stop(self) -> None:
        self._stopping.set()
        self._supervisor.join()
        self._health_channel.close()
        self.service.stop()

    def serving(self) -> bool:
        try:
            return health_pb2_grpc.HealthStub(self._health_channel).Check(
                health_pb2.HealthCheckRequest(), timeout=1).status == SERVING
        except grpc.RpcError:
            return False

    def ready_workers(self) -> int:
        try:
            answer = requests.get(f"http://127.0.0.1:{self.service.config.ports.management}/models/{MODEL}",
                                  timeout=2)
            return sum(1 for m in answer.json() for w in m.get("workers", []) if w.get("status") == "READY")
        except (requests.RequestException, ValueError):
            return 0

    def worker_pids(self) -> list[int]:
        try:
            root = psutil.Process(self.service.torchserve.pid)
            return [p.pid for p in root.children(recursive=True)
                    if any("model_service_worker" in part for part in p.cmdline())]
        except psutil.NoSuchProcess:
            return []

    def java(self) -> psutil.Process:
        root = psutil.Process(self.service.torchserve.pid)
        return next(p for p in (root, *root.children(recursive=True)) if p.name() == "java")

    @staticmethod
    def metric(port: int, name: str, contains: str = "") -> float:
        """Sum of the samples of ``name`` (whose labels contain ``contains``) on 127.0.0.1:port/metrics."""
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name + "{") and contains in line)

    def counters(self) -> dict[str, float]:
        """The counters the goodput phase reads: worker-side drops and late answers, gateway attempts and sheds."""
        ports = self.service.config.ports
        return {"dropped_deadline": self.metric(ports.metrics, "galore_dropped_requests_total", 'reason="deadline"'),
                "late": self.metric(ports.metrics, "galore_late_requests_total"),
                "computed": self.metric(ports.metrics, "galore_images_total", 'kind="prediction"'),
                "attempts": self.metric(ports.gateway_metrics, "galore_requests_total"),
                "attempts_unavailable": self.metric(ports.gateway_metrics, "galore_requests_total",
                                                    'status="UNAVAILABLE"'),
                "shed_at_gateway": self.metric(ports.gateway_metrics, "galore_shed_total")}

    def cpu_seconds(self) -> dict[str, float]:
        """CPU seconds so far of this process (the load generator), the gateway, and TorchServe with its workers."""
        torchserve = psutil.Process(self.service.torchserve.pid)
        return {"load_generator": cpu_seconds([psutil.Process()]),
                "gateway": cpu_seconds([psutil.Process(self.service.gateway.pid)]),
                "torchserve": cpu_seconds([torchserve, *torchserve.children(recursive=True)])}

    def wait(self, predicate, timeout_s: float) -> float | None:
        start = time.monotonic()
        while time.monotonic() - start < timeout_s:
            if predicate():
                return time.monotonic() - start
            time.sleep(0.1)
        return None


# ---- phases -----------------------------------------------------------------------------------------------------

def capacity(dep: Deployment, sender: Sender, seconds: float, seed: int) -> float:
    load = Load(sender, mix(2000, seed), timeout_s=120, clients=8).start()
    time.sleep(seconds)
    results = load.stop()
    rate = sum(1 for r in results if r.code == "OK") / seconds
    say(f"capacity: {rate:.2f} requests/s (8 closed-loop clients, {seconds:.0f} s, mixed load; "
        f"{summarize(results)['codes']})")
    return rate


def has_1xn_image(kind: str) -> bool:
    """Whether a case's kind names a 1 x N or N x 1 image (N > 1): today's engine fails on those (issue 9)."""
    shapes = [part.split("x") for part in kind.replace("+", "/").split("/") if part.count("x") == 1]
    return any(h.isdigit() and w.isdigit() and min(int(h), int(w)) == 1 and max(int(h), int(w)) > 1
               for h, w in shapes)


def fuzz(dep: Deployment, cases: int, seed: int) -> dict:
    workers = sorted(dep.worker_pids())
    started = time.monotonic()
    generated = generate(cases, seed)
    report = send_all(generated, dep.grpc_target, dep.rest_url, concurrency=4, timeout_s=120)
    seconds = time.monotonic() - started
    # An engine failure fails the whole TorchServe batch, so a clean request batched with a bad one fails too:
    # send each failing case again alone to find the ones that fail by themselves.
    alone = send_all([v.case for v in report.problems], dep.grpc_target, dep.rest_url, concurrency=1,
                     timeout_s=120).problems
    result = {"seed": seed, "cases": len(generated), "seconds": seconds,
              "codes": dict(report.codes()), "problems": len(report.problems),
              "problems_alone": len(alone),
              "problems_alone_with_1xN_image": sum(1 for v in alone if has_1xn_image(v.case.kind)),
              "problem_examples_alone": [f"[{v.case.transport} {v.case.kind}] {v.problem}"[:300]
                                         for v in alone if not has_1xn_image(v.case.kind)][:15],
              "workers_unchanged": sorted(dep.worker_pids()) == workers, "serving_after": dep.serving()}
    say(f"fuzz: {report.summary()}")
    say(f"fuzz: {len(alone)} of the {len(report.problems)} failing cases fail alone too, "
        f"{result['problems_alone_with_1xN_image']} of them with a 1xN / Nx1 image; other: "
        f"{result['problem_examples_alone']}; workers unchanged: {result['workers_unchanged']}; "
        f"health SERVING after: {result['serving_after']}")
    return result


def soak(dep: Deployment, sender: Sender, rate: float, minutes: float, window_s: float, seed: int) -> dict:
    load = Load(sender, mix(100_000, seed), timeout_s=30, rate=rate).start()
    windows, start = [], time.monotonic()
    while time.monotonic() - start < minutes * 60:
        t0 = time.monotonic()
        time.sleep(window_s)
        stats = summarize([r for r in load.since(t0) if r.done < time.monotonic()])
        row = {"t_s": round(time.monotonic() - start), "requests": stats["requests"], "errors": {
            k: v for k, v in stats["codes"].items() if k != "OK"}, **{k: round(v, 3) for k, v in
                                                                      stats["latency_ok_s"].items()},
            "workers_rss_mib": round(rss_mib(dep.worker_pids())),
            "gateway_rss_mib": round(rss_mib([dep.service.gateway.pid]))}
        windows.append(row)
        say(f"soak {row}")
    results = load.stop()
    total = summarize(results)
    say(f"soak total: {total}")
    return {"rate": rate, "minutes": minutes, "windows": windows, "total": total}


def fault(dep: Deployment, sender: Sender, name: str, inject, recovered, rate: float, seed: int,
          timeout_s: float = 10.0) -> dict:
    """Open-loop load; inject at t0; recovery = t0 until ``recovered()``; then 10 s more load."""
    load = Load(sender, mix(100_000, seed), timeout_s=timeout_s, rate=rate).start()
    time.sleep(10)
    t0 = time.monotonic()
    inject()
    recovery = dep.wait(recovered, 300)
    time.sleep(10)
    results = load.stop()
    after = [r for r in results if r.done >= t0]
    failed = [r for r in after if r.code != "OK"]
    result = {"fault": name, "recovery_s": recovery, "calls_after_fault": len(after),
              "failed": dict(summarize(failed)["codes"]), "slowest_s": max((r.latency_s for r in after), default=0),
              "slowest_failed_s": max((r.latency_s for r in failed), default=0),
              "deadline_s": timeout_s}
    say(f"fault {result}")
    return result


def faults(dep: Deployment, sender: Sender, rate: float, seed: int) -> list[dict]:
    out = []
    workers = len(dep.worker_pids())

    def all_ready():
        return dep.ready_workers() == workers and dep.serving()

    out.append(fault(dep, sender, "kill one worker", lambda: os.kill(dep.worker_pids()[0], signal.SIGKILL),
                     lambda: all_ready() and len(dep.worker_pids()) == workers, rate, seed))
    out.append(fault(dep, sender, "kill all workers",
                     lambda: [os.kill(pid, signal.SIGKILL) for pid in dep.worker_pids()],
                     lambda: all_ready() and len(dep.worker_pids()) == workers, rate, seed + 1))
    gone = threading.Event()

    def kill_torchserve():
        dep.java().kill()
        dep.wait(lambda: not dep.serving(), 10)
        gone.set()

    out.append(fault(dep, sender, "kill TorchServe (supervisor restarts it)", kill_torchserve,
                     lambda: gone.is_set() and all_ready(), rate, seed + 2))
    stopped = threading.Event()

    def term_gateway():
        dep.service.gateway.send_signal(signal.SIGTERM)
        dep.wait(lambda: dep.service.gateway.poll() is not None, 30)
        stopped.set()

    out.append(fault(dep, sender, "SIGTERM the gateway (supervisor restarts it)", term_gateway,
                     lambda: stopped.is_set() and dep.serving(), rate, seed + 3))
    return out


def retrying_sender(dep: Deployment) -> Sender:
    """gRPC calls retried as galore_client retries them: its default RetryPolicy as the channel's service config."""
    return Sender(dep.grpc_target, dep.rest_url, pool=512,
                  grpc_options=RetryPolicy().grpc_channel_options(SERVICE, MAX_MESSAGE_BYTES))


def overload(dep: Deployment, clients: int, seconds: float, seed: int) -> dict:
    rss_before = rss_mib(dep.worker_pids()), rss_mib([dep.service.gateway.pid])
    counters = dep.counters()
    sender = retrying_sender(dep)
    load = Load(sender, mix(100_000, seed, transports=("grpc",)), timeout_s=5.0, clients=clients).start()
    peak = [0.0, 0.0]
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        time.sleep(2)
        peak = [max(peak[0], rss_mib(dep.worker_pids())), max(peak[1], rss_mib([dep.service.gateway.pid]))]
    stopped = time.monotonic()
    results = load.stop()
    sender.close()
    drained = dep.wait(lambda: dep.ready_workers() > 0 and dep.serving(), 60)
    stats = summarize(results)
    counters = {k: int(v - counters[k]) for k, v in dep.counters().items()}
    result = {"clients": clients, "seconds": seconds, **stats,
              "ok_per_s": stats["ok"] / seconds, "deadline_s": 5.0,
              "workers_rss_mib": {"before": round(rss_before[0]), "peak": round(peak[0])},
              "gateway_rss_mib": {"before": round(rss_before[1]), "peak": round(peak[1])},
              "attempts_at_gateway": counters["attempts"],
              "dropped_before_engine": counters["dropped_deadline"], "expired_computed": counters["late"],
              "owed_answers_s": round(time.monotonic() - stopped, 2), "serving_after_s": drained}
    say(f"overload {result}")
    short = []
    request = pb.ExplainRequest(images=[pb.Image(data=photos()["451x300"])],
                                options=pb.ExplainOptions(kinds=[1, 2, 3, 4], dims=[2, 3]))
    channel = grpc.insecure_channel(dep.grpc_target)
    explain = channel.unary_unary("/galore.v1.Explainer/Explain")
    codes = []
    for _ in range(20):
        t = time.perf_counter()
        try:
            explain(request.SerializeToString(), timeout=0.1)
            codes.append("OK")
        except grpc.RpcError as err:
            codes.append(err.code().name)
        short.append(time.perf_counter() - t)
        time.sleep(0.5)
    channel.close()
    result["deadline_100ms"] = {"codes": {c: codes.count(c) for c in set(codes)},
                                **{k: round(v * 1000, 1) for k, v in percentiles(short).items()}}
    say(f"100 ms deadlines: {result['deadline_100ms']} (ms)")
    return result


def goodput(dep: Deployment, levels: list[float], seconds: float, capacity_seconds: float, seed: int) -> dict:
    """Open-loop overload at ``levels`` x the gRPC capacity, through galore_client's retry policy (module doc)."""
    sender = retrying_sender(dep)
    items = mix(100_000, seed, transports=("grpc",))
    slots = GatewayConfig.with_torchserve_config(dep.service.config.ts_config).max_inflight
    try:
        closed = Load(sender, items, timeout_s=120, clients=slots).start()
        time.sleep(capacity_seconds)
        capacity_results = closed.stop()
        rate = sum(1 for r in capacity_results if r.code == "OK") / capacity_seconds
        say(f"goodput: gRPC capacity {rate:.2f} calls/s ({slots} closed-loop clients, {capacity_seconds:.0f} s; "
            f"{summarize(capacity_results)['codes']})")
        result = {"capacity_rps": rate, "deadline_s": 5.0, "seconds": seconds, "retry_policy": RetryPolicy().__dict__,
                  "levels": []}
        for level in levels:
            dep.wait(lambda: dep.metric(dep.service.config.ports.gateway_metrics, "galore_inflight_requests") == 0,
                     60)
            counters, cpu = dep.counters(), dep.cpu_seconds()
            load = Load(sender, items, timeout_s=5.0, rate=level * rate).start()
            start = time.monotonic()
            time.sleep(seconds)
            results = [r for r in load.stop() if r.due < start + seconds]  # calls offered during the level
            owed = time.monotonic() - start
            time.sleep(3)  # the workers' last counters reach TorchServe's metrics endpoint
            counters = {k: v - counters[k] for k, v in dep.counters().items()}
            cpu = {k: round((v - cpu[k]) / owed, 2) for k, v in dep.cpu_seconds().items()}
            stats = summarize(results)
            accepted = [r for r in results if r.code != "UNAVAILABLE"]
            row = {"level": level, "offered_rps": round(level * rate, 2), "calls": len(results),
                   "ok": stats["ok"], "goodput_rps": round(stats["ok"] / seconds, 2),
                   "goodput_of_capacity": round(stats["ok"] / seconds / rate, 3), "codes": stats["codes"],
                   "shed_calls": stats["codes"].get("UNAVAILABLE", 0),
                   "accepted_p50_s": round(percentiles([r.latency_s for r in accepted])["p50"], 3),
                   "accepted_p99_s": round(percentiles([r.latency_s for r in accepted])["p99"], 3),
                   "attempts_at_gateway": int(counters["attempts"]),
                   "shed_attempts": int(counters["attempts_unavailable"]),
                   "computed_images": int(counters["computed"]),
                   "expired_dropped_before_engine": int(counters["dropped_deadline"]),
                   "expired_computed": int(counters["late"]), "cpu_cores": cpu}
            result["levels"].append(row)
            say(f"goodput {row}")
        return result
    finally:
        sender.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fuzz-cases", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=20261201)
    parser.add_argument("--capacity-seconds", type=float, default=45)
    parser.add_argument("--soak-minutes", type=float, default=10)
    parser.add_argument("--soak-load", type=float, default=0.8, help="fraction of the measured capacity")
    parser.add_argument("--window", type=float, default=60, help="soak window, seconds")
    parser.add_argument("--fault-load", type=float, default=0.5, help="fraction of capacity during faults")
    parser.add_argument("--overload-clients", type=int, default=256)
    parser.add_argument("--overload-seconds", type=float, default=60)
    parser.add_argument("--goodput-levels", default="1,2,4", help="offered load, multiples of the gRPC capacity")
    parser.add_argument("--goodput-seconds", type=float, default=60, help="seconds per level")
    parser.add_argument("--phases", default="capacity,fuzz,soak,faults,overload,goodput")
    parser.add_argument("--model-store", type=Path, default=REPO / "model_store")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    phases = set(args.phases.split(","))
    figures: dict = {"cpu": cpu_model(), "cores": psutil.cpu_count(), "started": time.strftime("%Y-%m-%d %H:%M UTC",
                                                                                              time.gmtime())}
    say(f"machine: {figures['cpu']}, {figures['cores']} cores, load average {os.getloadavg()[:2]}")
    began = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="galore-reliability-") as tmp:
        dep = Deployment(args.model_store, Path(tmp) / "run")
        figures["cold_start_s"] = dep.start()
        say(f"deployment SERVING after {figures['cold_start_s']:.1f} s ({dep.grpc_target}, {dep.rest_url})")
        sender = Sender(dep.grpc_target, dep.rest_url, pool=512)
        try:
            rate = capacity(dep, sender, args.capacity_seconds, args.seed)
            figures["capacity_rps"] = rate
            if "fuzz" in phases:
                figures["fuzz"] = fuzz(dep, args.fuzz_cases, args.seed)
            if "soak" in phases:
                figures["soak"] = soak(dep, sender, args.soak_load * rate, args.soak_minutes, args.window, args.seed)
            if "faults" in phases:
                figures["faults"] = faults(dep, sender, args.fault_load * rate, args.seed)
            if "overload" in phases:
                figures["overload"] = overload(dep, args.overload_clients, args.overload_seconds, args.seed)
            if "goodput" in phases:
                figures["goodput"] = goodput(dep, [float(x) for x in args.goodput_levels.split(",")],
                                             args.goodput_seconds, args.capacity_seconds, args.seed)
        finally:
            sender.close()
            dep.stop()
    figures["load_average_end"] = os.getloadavg()[:2]
    figures["minutes"] = (time.monotonic() - began) / 60
    say(f"done in {figures['minutes']:.1f} min")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
