"""Every Prometheus metric the gateway exports, declared once. Served on ``/metrics`` (default 127.0.0.1:9091).

Worker-side metrics (images by kind, stage latencies, batch size, exemplar cache) are TorchServe custom metrics,
see galore_service/metrics.py and deploy/torchserve/metrics.yaml.
"""
from __future__ import annotations

import threading
import time
from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry()

REQUEST_SECONDS = Histogram(
    "galore_request_duration_seconds", "Gateway end-to-end latency of one Explain RPC, seconds.",
    ["model", "transport"], registry=REGISTRY,
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0))
REQUESTS_TOTAL = Counter(
    "galore_requests_total", "Explain RPCs answered by the gateway, by status code name (OK, INVALID_ARGUMENT, ...).",
    ["model", "transport", "status"], registry=REGISTRY)
INFLIGHT = Gauge(
    "galore_inflight_requests", "Explain RPCs the gateway is currently serving.", ["model"], registry=REGISTRY)
SHED_TOTAL = Counter(
    "galore_shed_total", "Explain RPCs refused as overloaded (UNAVAILABLE) because max_inflight calls were in flight.",
    ["model"], registry=REGISTRY)
IMAGES_PER_SECOND = Gauge(
    "galore_images_per_second", "Images answered through the gateway per second over a sliding window.",
    ["model"], registry=REGISTRY)


class SlidingRate:
    """Events per second over the last ``window_s`` seconds (monotonic clock); thread-safe."""

    def __init__(self, window_s: float = 10.0, clock=time.monotonic):
        self.window_s = window_s
        self._clock = clock
        self._events: deque[tuple[float, int]] = deque()
        self._lock = threading.Lock()

    def add(self, count: int) -> None:
        with self._lock:
            self._events.append((self._clock(), count))

    def per_second(self) -> float:
        now = self._clock()
        with self._lock:
            while self._events and self._events[0][0] < now - self.window_s:
                self._events.popleft()
            return sum(count for _, count in self._events) / self.window_s


def images_rate(model: str, window_s: float = 10.0) -> SlidingRate:
    """A SlidingRate wired to ``galore_images_per_second{model}`` (computed at scrape time)."""
    rate = SlidingRate(window_s)
    IMAGES_PER_SECOND.labels(model=model).set_function(rate.per_second)
    return rate
