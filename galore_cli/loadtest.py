"""Load tester: closed-loop concurrency or fixed arrival rate, over gRPC (gateway) or REST (TorchServe).

    python -m galore_cli.loadtest --transport grpc --target 127.0.0.1:50051 --concurrency 4 --count 200
    python -m galore_cli.loadtest --transport rest --target 127.0.0.1:8080 --rate 5 --duration 60 \\
        --kinds deliberative --json out.json

Closed loop (default): ``--concurrency`` workers each send the next request as soon as their previous one is
answered. Fixed rate (``--rate R``): request i is due at start + i / R seconds whatever the answers do, and its
latency is measured from that due time, so a server that falls behind shows it (no coordinated omission). The run
stops after ``--count`` requests or ``--duration`` seconds, whichever comes first; answers still owed then are
awaited (each bounded by ``--timeout``). Only loopback targets unless ``--allow-remote``.

Prints images/s, latency p50/p95/p99, errors by code, and the paper's Table III rows beside this run.
Exit status: 0 when every image was answered OK, 1 when some failed, 2 for a bad setting.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields

from google.protobuf import json_format
from tqdm import tqdm

from galore.errors import InvalidArgument
from galore.options import DEFAULT_MODEL, Kind
from galore_client.settings import ExplainSettings
from galore_client.typed import settings_to_proto
from galore_wire.contract import DEFAULT_GRPC_ADDRESS, DEFAULT_REST_ADDRESS, DEFAULT_TIMEOUT_S

from .load_report import LoadSummary, format_report, summarize
from .load_transports import (LoadTestError, build_request, check_loopback, folder_images, open_sender,
                              read_counters, sample_images, split_target)
from .option_args import add_option_arguments, flag_for, settings_from_args

DEFAULT_TARGETS = {"grpc": DEFAULT_GRPC_ADDRESS, "rest": DEFAULT_REST_ADDRESS}


@dataclass(frozen=True)
class LoadConfig:
    """One load test, validated once. Times in seconds; ``rate`` in requests/s (None: closed loop)."""

    transport: str  # "grpc" (gateway) or "rest" (TorchServe /predictions)
    target: str  # host:port
    model: str  # TorchServe model name (REST URL)
    concurrency: int  # closed-loop workers, or the most requests in flight at a fixed rate
    rate: float | None
    count: int  # requests to send at most
    duration_s: float | None  # stop sending after this long
    images_per_request: int
    timeout_s: float
    arch: str | None  # architecture for Table III; None: ask the server, else the model name
    progress: bool
    json_path: str | None
    settings: ExplainSettings = field(default_factory=ExplainSettings)  # the options of every request
    exemplars: tuple[str, ...] = ()  # exemplar image files, one per counter class, by position

    @property
    def kinds(self) -> tuple[str, ...]:
        """The explanation kinds asked for, in Table I order (() = prediction only)."""
        return tuple(k.value for k in Kind if k in self.settings.options.kinds)

    def to_dict(self) -> dict:
        """JSON-ready: the run's settings and its options as the proto3 JSON the service receives."""
        values = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "settings"}
        values["options"] = json_format.MessageToDict(settings_to_proto(self.settings))
        return values


def add_loadtest_parser(subparsers) -> argparse.ArgumentParser:
    """Adds the ``loadtest`` sub-command to an argparse ``subparsers``; returns its parser."""
    parser = subparsers.add_parser("loadtest", help="load the running service and report images/s and latency",
                                   description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    parser.set_defaults(func=run_loadtest)
    return parser


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--transport", choices=("grpc", "rest"), default="grpc")
    parser.add_argument("--target", help=f"HOST:PORT (default {DEFAULT_TARGETS['grpc']} for grpc, "
                                           f"{DEFAULT_TARGETS['rest']} for rest)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help=f"TorchServe model name (REST URL; default "
                                                                f"{DEFAULT_MODEL})")
    parser.add_argument("--concurrency", type=int, default=4,
                        help="closed-loop workers; with --rate the most requests in flight (default 4)")
    parser.add_argument("--rate", type=float, help="fixed arrival rate in requests/s instead of a closed loop")
    parser.add_argument("--count", type=int, default=100, help="requests to send at most (default 100)")
    parser.add_argument("--duration", type=float, help="stop sending after this many seconds")
    parser.add_argument("--images-per-request", type=int, default=1)
    parser.add_argument("--images", metavar="DIR", help="folder of JPEG/PNG/WebP images (default: sample photos)")
    add_option_arguments(parser)
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S,
                        help=f"per-request deadline in seconds (default {DEFAULT_TIMEOUT_S:g})")
    parser.add_argument("--arch", help="architecture for the Table III rows, e.g. resnet50 or vgg16 "
                                       "(default: the served model's)")
    parser.add_argument("--allow-remote", action="store_true", help="allow a non-loopback target")
    parser.add_argument("--no-progress", action="store_true", help="no live progress bar")
    parser.add_argument("--json", dest="json_path", metavar="PATH", help="also write the results as JSON")


def config_from_args(args: argparse.Namespace) -> LoadConfig:
    """Validates parsed arguments once; raises LoadTestError naming the bad option."""
    target = args.target or DEFAULT_TARGETS[args.transport]
    host, _ = split_target(target)
    check_loopback(host, args.allow_remote)
    for name, value in (("--concurrency", args.concurrency), ("--count", args.count),
                        ("--images-per-request", args.images_per_request)):
        if value < 1:
            raise LoadTestError(f"{name}: must be >= 1, got {value}")
    for name, value in (("--rate", args.rate), ("--duration", args.duration), ("--timeout", args.timeout)):
        if value is not None and not value > 0:
            raise LoadTestError(f"{name}: must be > 0, got {value}")
    try:
        settings = settings_from_args(args)
    except InvalidArgument as exc:
        raise LoadTestError(f"{flag_for(exc.field)}: {exc.message}") from exc
    return LoadConfig(
        transport=args.transport, target=target, model=args.model, concurrency=args.concurrency, rate=args.rate,
        count=args.count, duration_s=args.duration, images_per_request=args.images_per_request,
        timeout_s=args.timeout, arch=args.arch, progress=not args.no_progress, json_path=args.json_path,
        settings=settings, exemplars=tuple(args.exemplars or ()))


class _Recorder:
    """Thread-safe tally of outcomes; drives the progress bar."""

    def __init__(self, bar: tqdm, started: float):
        self._lock = threading.Lock()
        self._bar = bar
        self._started = started
        self.latencies: list[float] = []
        self.errors: Counter = Counter()
        self.ok_images = 0
        self.last_done = started

    def record(self, outcome, latency_s: float) -> None:
        with self._lock:
            self.latencies.append(latency_s)
            if outcome.code != "OK":
                self.errors[outcome.code] += 1
            for code in outcome.image_codes if outcome.code == "OK" else ():
                if code == "OK":
                    self.ok_images += 1
                else:
                    self.errors[code] += 1
            self.last_done = time.perf_counter()
            self._bar.update(1)
            elapsed = self.last_done - self._started
            self._bar.set_postfix(img_s=f"{self.ok_images / elapsed:.2f}", errors=sum(self.errors.values()),
                                  refresh=False)


def run(config: LoadConfig, images: list[bytes], sender) -> LoadSummary:
    """Sends the load described by ``config`` through ``sender`` and summarizes what came back."""
    exemplars = read_counters(config.settings.counter_classes, config.exemplars)
    requests_ = [build_request([images[(i * config.images_per_request + j) % len(images)]
                                for j in range(config.images_per_request)], config.settings, exemplars)
                 for i in range(min(config.count, len(images)))]
    started = time.perf_counter()
    deadline = started + config.duration_s if config.duration_s else float("inf")
    bar = tqdm(total=config.count, unit="req", disable=not config.progress, file=sys.stderr, dynamic_ncols=True)
    recorder = _Recorder(bar, started)

    def send(index: int, due: float) -> None:
        outcome = sender.send(requests_[index % len(requests_)])
        recorder.record(outcome, time.perf_counter() - due)

    with bar:
        if config.rate is None:
            next_index = iter(range(config.count))
            lock = threading.Lock()

            def worker() -> None:
                while time.perf_counter() < deadline:
                    with lock:
                        index = next(next_index, None)
                    if index is None:
                        return
                    send(index, time.perf_counter())

            with ThreadPoolExecutor(config.concurrency) as pool:
                futures = [pool.submit(worker) for _ in range(config.concurrency)]
        else:
            futures = []
            with ThreadPoolExecutor(config.concurrency) as pool:
                for index in range(config.count):
                    due = started + index / config.rate
                    if due >= deadline:
                        break
                    time.sleep(max(0.0, due - time.perf_counter()))
                    futures.append(pool.submit(send, index, due))
        for future in futures:
            future.result()  # a bug in a worker surfaces here instead of vanishing
    return summarize(recorder.latencies, recorder.ok_images, recorder.last_done - started,
                     len(recorder.latencies), recorder.errors)


def run_loadtest(args: argparse.Namespace) -> int:
    """Entry point of ``galore loadtest``: runs, prints the report, optionally writes JSON; returns the exit status."""
    try:
        config = config_from_args(args)
        # bad exemplar files are a setting error, found before any load
        read_counters(config.settings.counter_classes, config.exemplars)
        images = folder_images(args.images) if args.images else sample_images()
    except LoadTestError as exc:
        print(f"galore loadtest: {exc}", file=sys.stderr)
        return 2
    sender = open_sender(config.transport, config.target, config.model, config.timeout_s)
    try:
        architecture = config.arch or sender.architecture() or config.model
        summary = run(config, images, sender)
    finally:
        sender.close()
    label = f"galore-serve {config.transport}, " + (
        f"{config.rate:g} req/s" if config.rate else f"concurrency {config.concurrency}")
    print(format_report(summary, list(config.kinds), architecture, label))
    if config.json_path:
        with open(config.json_path, "w") as out:
            json.dump({"config": config.to_dict(), "architecture": architecture, "summary": summary.to_dict()},
                      out, indent=2)
    return 0 if not summary.errors and summary.ok_images else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m galore_cli.loadtest", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    _add_arguments(parser)
    return run_loadtest(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
