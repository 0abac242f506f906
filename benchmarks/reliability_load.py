"""Load for benchmarks/reliability.py: a seeded mix of photo sizes and explanation kinds on gRPC and REST, an
open-loop (fixed arrival rate) and a closed-loop generator, and latency/error summaries per time window.

Latency in the open loop is measured from each request's due time, so a server that falls behind shows it.
"""
from __future__ import annotations

import io
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import grpc
import numpy as np
import psutil
import requests
from PIL import Image
from skimage import data

from galore_api.v1 import explainer_pb2 as pb

EXPLAIN_METHOD = "/galore.v1.Explainer/Explain"
PROTOBUF = "application/x-protobuf"
KIND_MIXES = {  # name -> ExplainOptions; "all" is every kind with pairs and triples
    "prediction": pb.ExplainOptions(prediction_only=True),
    "attributive": pb.ExplainOptions(kinds=[1, 2]),
    "deliberative": pb.ExplainOptions(kinds=[3], dims=[2]),
    "counterfactual": pb.ExplainOptions(kinds=[4]),
    "all": pb.ExplainOptions(kinds=[1, 2, 3, 4], dims=[2, 3]),
}


def _jpeg(array: np.ndarray, size: tuple[int, int] | None = None) -> bytes:
    image = Image.fromarray(array)
    if size is not None:
        image = image.resize(size)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def photos() -> dict[str, bytes]:
    """Photo sizes of the mix: 0.01 MP to 2 MP."""
    return {"128x96": _jpeg(data.coffee(), (128, 96)), "451x300": _jpeg(data.chelsea()),
            "512x512": _jpeg(data.astronaut()), "600x400": _jpeg(data.coffee()),
            "1600x1200": _jpeg(data.coffee(), (1600, 1200))}


@dataclass(frozen=True)
class Item:
    transport: str  # "grpc" | "rest"
    label: str  # "<photo>/<kinds>"
    body: bytes  # serialized ExplainRequest


def mix(count: int, seed: int, transports=("grpc", "rest")) -> list[Item]:
    """``count`` requests drawn with ``seed``: every photo size, every kind mix, the given transports."""
    rng = random.Random(seed)
    sizes = photos()
    items = []
    for i in range(count):
        photo = rng.choice(sorted(sizes))
        kinds = rng.choice(sorted(KIND_MIXES))
        request = pb.ExplainRequest(images=[pb.Image(data=sizes[photo])], options=KIND_MIXES[kinds])
        items.append(Item(transports[i % len(transports)], f"{photo}/{kinds}", request.SerializeToString()))
    return items


@dataclass(frozen=True)
class Result:
    due: float  # monotonic seconds
    done: float
    transport: str
    code: str
    reason: str = ""  # for UNAVAILABLE: which refusal (gateway-limit, queue-full, not-serving, ...)

    @property
    def latency_s(self) -> float:
        return self.done - self.due


class Sender:
    """Sends one Item over its transport and names the outcome with a gRPC code name."""

    def __init__(self, grpc_target: str, rest_url: str, pool: int = 64, grpc_options: list | None = None):
        """``grpc_options``: more channel arguments (e.g. galore_client's retry policy: gRPC then retries the calls
        itself, and the gateway's counters tell the attempts)."""
        self.channel = grpc.insecure_channel(grpc_target, options=[("grpc.max_receive_message_length", -1),
                                                                   *(grpc_options or [])])
        self.explain = self.channel.unary_unary(EXPLAIN_METHOD)
        self.session = requests.Session()
        self.session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=pool, pool_maxsize=pool))
        self.rest_url = rest_url

    def send(self, item: Item, timeout_s: float) -> tuple[str, str]:
        """(code name, reason): reason tells UNAVAILABLE refusals apart."""
        if item.transport == "grpc":
            try:
                self.explain(item.body, timeout=timeout_s)
                return "OK", ""
            except grpc.RpcError as err:
                return err.code().name, _reason(err.details() or "")
        code = self._send_rest(item, timeout_s)
        return code, "rest-503" if code == "UNAVAILABLE" else ""

    def _send_rest(self, item: Item, timeout_s: float) -> str:
        try:
            answer = self.session.post(self.rest_url, data=item.body, timeout=timeout_s,
                                       headers={"Content-Type": PROTOBUF, "Accept": PROTOBUF})
        except requests.Timeout:
            return "DEADLINE_EXCEEDED"
        except requests.ConnectionError:
            return "UNAVAILABLE"
        if answer.status_code == 200:
            return "OK"
        try:
            return pb.ExplainResponse.FromString(answer.content).status.code or f"HTTP_{answer.status_code}"
        except Exception:  # TorchServe's own JSON errors
            return {503: "UNAVAILABLE", 504: "DEADLINE_EXCEEDED", 413: "RESOURCE_EXHAUSTED"}.get(
                answer.status_code, f"HTTP_{answer.status_code}")

    def close(self) -> None:
        self.channel.close()
        self.session.close()


def _reason(details: str) -> str:
    for phrase, reason in (("in flight at the gateway", "gateway-limit"), ("job queue is full", "queue-full"),
                           ("NOT_SERVING", "not-serving"), ("is unavailable", "torchserve-down"),
                           ("worker holding this call stopped", "worker-lost")):
        if phrase in details:
            return reason
    return details[:60]


class Load:
    """Background load: ``rate`` requests/s at fixed arrival times (open loop), or ``clients`` closed-loop
    senders when rate is None. ``results`` fills as answers come back; ``stop()`` waits for what is owed."""

    def __init__(self, sender: Sender, items: list[Item], timeout_s: float, rate: float | None = None,
                 clients: int = 8, max_inflight: int = 512):
        self.sender, self.items, self.timeout_s = sender, items, timeout_s
        self.rate, self.clients = rate, clients
        self.results: list[Result] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._pool = ThreadPoolExecutor(max_inflight if rate else clients)
        self._thread = threading.Thread(target=self._open if rate else self._closed, daemon=True)

    def _one(self, item: Item, due: float) -> None:
        code, reason = self.sender.send(item, self.timeout_s)
        with self._lock:
            self.results.append(Result(due, time.monotonic(), item.transport, code, reason))

    def _open(self) -> None:
        start = time.monotonic()
        i = 0
        while not self._stop.is_set():
            due = start + i / self.rate
            pause = due - time.monotonic()
            if pause > 0 and self._stop.wait(pause):
                break
            self._pool.submit(self._one, self.items[i % len(self.items)], due)
            i += 1

    def _closed(self) -> None:
        counter = iter(range(10 ** 12))
        lock = threading.Lock()

        def loop():
            while not self._stop.is_set():
                with lock:
                    i = next(counter)
                self._one(self.items[i % len(self.items)], time.monotonic())

        for _ in range(self.clients):
            self._pool.submit(loop)

    def start(self) -> "Load":
        self._thread.start()
        return self

    def stop(self) -> list[Result]:
        self._stop.set()
        self._thread.join()
        self._pool.shutdown(wait=True)
        return self.results

    def since(self, t0: float) -> list[Result]:
        with self._lock:
            return [r for r in self.results if r.done >= t0]


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    array = np.asarray(values)
    return {"p50": float(np.percentile(array, 50)), "p95": float(np.percentile(array, 95)),
            "p99": float(np.percentile(array, 99)), "max": float(array.max())}


def summarize(results: list[Result]) -> dict:
    ok = [r.latency_s for r in results if r.code == "OK"]
    return {"requests": len(results), "ok": len(ok), "codes": dict(Counter(r.code for r in results)),
            "unavailable_reasons": dict(Counter(r.reason for r in results if r.code == "UNAVAILABLE")),
            "latency_ok_s": percentiles(ok), "slowest_s": max((r.latency_s for r in results), default=0.0),
            }


def rss_mib(pids) -> float:
    total = 0
    for pid in pids:
        try:
            total += psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2 ** 20
