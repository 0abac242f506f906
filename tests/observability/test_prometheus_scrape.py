"""Real scrape: Debian's prometheus scrapes the running gateway and the worker metrics (TorchServe's metrics port, or
the KServe host's /metrics: the module runs on both backends) while a known number of images is explained through
the gateway; PromQL over what it stored must agree with what the client counted."""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

import grpc
import pytest
import yaml

from galore_api.v1 import explainer_pb2 as pb
from galore_api.v1 import explainer_pb2_grpc
from galore_cli import loadtest
from galore_cli.load_report import LoadSummary
from galore_cli.load_transports import open_sender, sample_images
from galore_client.settings import ExplainSettings

from galore_supervisor.deployment import free_ports
from .prometheus_server import SCRAPE_INTERVAL_S, Prometheus, write_config
from .promql import CONTRACT_METRICS, ROOT, dashboard_exprs, metric_names, recording_rules, tool

pytestmark = pytest.mark.backends("torchserve", "kserve")  # the same metrics, scraped from either host
MODEL = "efficientnet_lite0"
REQUESTS, IMAGES_PER_REQUEST = 6, 2
IMAGES = REQUESTS * IMAGES_PER_REQUEST  # what the burst explains
KINDS = ("deliberative",)
WORKERS = int(yaml.safe_load((ROOT / "deploy" / "torchserve" / "model-config.yaml").read_text())["minWorkers"])
GATEWAY_RATE_WINDOW_S = 10.0  # sliding window of galore_images_per_second (galore_gateway.metrics.images_rate)
TS = 'job="galore-torchserve"'
GW = 'job="galore-gateway"'

# What the burst must move, read from Prometheus before and after.
COUNTERS = {
    "prediction": f'galore_images_total{{{TS},kind="prediction"}}',
    "deliberative": f'galore_images_total{{{TS},kind="deliberative"}}',
    "attributive": f'galore_images_total{{{TS},kind="attributive"}}',
    "batch_images": f"galore_batch_size_sum{{{TS}}}",
    "batches": f"galore_batch_size_count{{{TS}}}",
    "decode_batches": f'galore_stage_duration_seconds_count{{{TS},stage="decode"}}',
    "forward_batches": f'galore_stage_duration_seconds_count{{{TS},stage="forward"}}',
    "rpcs_ok": f'galore_requests_total{{{GW},transport="grpc",status="OK"}}',
    "rpcs_failed": f'galore_requests_total{{{GW},status!="OK"}}',
    "rpc_latencies": f"galore_request_duration_seconds_count{{{GW}}}",
}


def explain(service, count: int, per_request: int) -> LoadSummary:
    """``count`` gRPC requests of ``per_request`` sample photos through the gateway, 3 at a time."""
    target = f"127.0.0.1:{service.config.ports.grpc}"
    config = loadtest.LoadConfig(
        transport="grpc", target=target, model=MODEL, concurrency=3, rate=None, count=count, duration_s=None,
        images_per_request=per_request, timeout_s=120.0, arch=MODEL, progress=False, json_path=None,
        settings=ExplainSettings(kinds=KINDS))
    sender = open_sender("grpc", target, MODEL, timeout_s=120.0)
    try:
        return loadtest.run(config, sample_images(), sender)
    finally:
        sender.close()


@dataclass(frozen=True)
class Burst:
    summary: LoadSummary  # the client's own count
    before: dict[str, float]
    after: dict[str, float]
    baseline_time: float  # unix s: Prometheus held the `before` values from here on
    start: float  # unix s: first request sent
    end: float  # unix s: last answer received
    settled: float  # unix s: Prometheus holds the `after` values

    def delta(self, name: str) -> float:
        return self.after[name] - self.before[name]


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    binary = tool("prometheus")
    ports = service.config.ports
    work = tmp_path_factory.mktemp("prometheus")
    worker = urlsplit(service.config.worker_metrics_url)  # TorchServe's metrics port or the KServe host's /metrics
    config = write_config(work / "prometheus.yml", f"127.0.0.1:{ports.gateway_metrics}", worker.netloc, worker.path)
    server = Prometheus(binary, config, work / "data", free_ports(1)[0])
    try:
        server.wait_ready()
        server.wait_for('sum(up{job=~"galore-.*"})', lambda v: v == 2)
        yield server
    finally:
        server.stop()


def _settle(prometheus: Prometheus, exprs: dict[str, str], timeout_s: float = 30.0) -> dict[str, float]:
    """Values once two consecutive reads a few scrapes apart agree (the worker's metrics reach TorchServe's
    endpoint shortly after the answers)."""
    deadline = time.monotonic() + timeout_s
    values = {name: prometheus.scalar(f"sum({e})") for name, e in exprs.items()}
    while time.monotonic() < deadline:
        time.sleep(3 * SCRAPE_INTERVAL_S)
        again = {name: prometheus.scalar(f"sum({e})") for name, e in exprs.items()}
        if again == values:
            return values
        values = again
    return values


@pytest.fixture(scope="module")
def burst(service, prometheus) -> Burst:
    warmup = explain(service, count=1, per_request=1)  # creates every series, so the burst is an increase
    warmup_end = time.monotonic()
    assert warmup.ok_images == 1, warmup
    prometheus.wait_for(f"sum({COUNTERS['prediction']})", lambda v: v >= 1)
    before = _settle(prometheus, COUNTERS)
    # the gateway's sliding window must have forgotten every earlier image before the burst starts
    time.sleep(max(0.0, GATEWAY_RATE_WINDOW_S + 0.5 - (time.monotonic() - warmup_end)))
    baseline_time = time.time() - 2 * SCRAPE_INTERVAL_S  # _settle saw no change over the last 3 scrapes
    start = time.time()
    summary = explain(service, count=REQUESTS, per_request=IMAGES_PER_REQUEST)
    end = time.time()
    prometheus.wait_for(f"sum({COUNTERS['prediction']})", lambda v: v >= before["prediction"] + summary.ok_images)
    after = _settle(prometheus, COUNTERS)
    time.sleep(2 * SCRAPE_INTERVAL_S)  # one more rule evaluation over the final samples
    return Burst(summary, before, after, baseline_time, start, end, settled=time.time())


def test_client_explained_every_image(burst):
    assert burst.summary.ok_images == IMAGES and burst.summary.errors == {}


def test_images_total_counts_each_image_once_per_kind(burst):
    assert burst.delta("prediction") == burst.summary.ok_images
    assert burst.delta("deliberative") == burst.summary.ok_images
    assert burst.delta("attributive") == 0  # not asked for


def test_rate_of_images_total_matches_the_client_count(burst, prometheus):
    # window from when Prometheus held the baseline to when it held the final values: exactly the burst
    at = burst.settled
    window = math.floor(at - burst.baseline_time)
    rate = prometheus.scalar(f"sum(rate({COUNTERS['prediction']}[{window}s]))", at=at)
    client_rate = burst.summary.ok_images / window
    # rate() extrapolates the sampled increase to the window edges: at most 2 scrape intervals' worth
    assert client_rate * 0.98 <= rate <= client_rate * window / (window - 2.5 * SCRAPE_INTERVAL_S), \
        (rate, client_rate, window)
    increase = prometheus.scalar(f"sum(increase({COUNTERS['deliberative']}[{window}s]))", at=at)
    assert burst.summary.ok_images * 0.98 <= increase <= burst.summary.ok_images * window / (window - 2.5)


def test_images_rate_recording_rule_matches_the_raw_counter(burst, prometheus):
    at = burst.settled
    recorded = prometheus.scalar(f'model_kind:galore_images:rate1m{{model="{MODEL}",kind="prediction"}}', at=at)
    # the counter's increase over the same minute, from its raw samples (monotonic, so min = first sample)
    raw = prometheus.scalar(f"sum({COUNTERS['prediction']}) - sum(min_over_time({COUNTERS['prediction']}[1m]))",
                            at=at)
    if at - burst.start < 55:  # the whole burst lies inside the rule's last minute
        assert raw >= burst.summary.ok_images
    assert raw / 60 * 0.9 <= recorded <= raw / 60 * 1.15, (recorded, raw)


def test_sliding_window_gauge_saw_the_burst(burst, prometheus):
    span = math.ceil(burst.settled - burst.start) + 1
    peak = prometheus.scalar(f'max_over_time(galore_images_per_second{{{GW},model="{MODEL}"}}[{span}s])',
                             at=burst.settled)
    assert 0 < peak <= burst.summary.ok_images / GATEWAY_RATE_WINDOW_S + 1e-9
    if burst.end - burst.start < GATEWAY_RATE_WINDOW_S - 2 * SCRAPE_INTERVAL_S:
        assert peak >= burst.summary.ok_images / GATEWAY_RATE_WINDOW_S - 1e-9


def test_gateway_counts_each_rpc_once(burst, prometheus):
    assert burst.delta("rpcs_ok") == REQUESTS
    assert burst.delta("rpc_latencies") == REQUESTS
    assert burst.delta("rpcs_failed") == 0
    assert prometheus.scalar(f'galore_inflight_requests{{{GW},model="{MODEL}"}}') == 0


def test_worker_batches_hold_every_image_once(burst):
    assert burst.delta("batch_images") == burst.summary.ok_images  # sum of batch sizes
    # requests may share a batch (dynamic batching), never split across two
    assert 1 <= burst.delta("batches") <= REQUESTS
    assert burst.delta("decode_batches") == burst.delta("batches")
    assert burst.delta("forward_batches") == burst.delta("batches")


def test_exemplar_cache_counts_misses_then_hits(service, prometheus, burst):
    exemplar = sample_images()[0]
    request = pb.ExplainRequest(
        images=[pb.Image(data=sample_images()[1])],
        options=pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_COUNTERFACTUAL],
                                  counter_classes=[pb.CounterClass(label="tabby", exemplar=exemplar)]))
    hits, misses = (f'galore_exemplar_cache_total{{{TS},result="{r}"}}' for r in ("hit", "miss"))
    before = _settle(prometheus, {"hit": hits, "miss": misses})
    sends = WORKERS + 2
    with grpc.insecure_channel(f"127.0.0.1:{service.config.ports.grpc}") as channel:
        stub = explainer_pb2_grpc.ExplainerStub(channel)
        for _ in range(sends):  # sequential: each finds the exemplar cached if its worker has seen it before
            response = stub.Explain(request, timeout=120)
            assert response.images[0].status.code in ("", "OK"), response.images[0].status
            assert response.images[0].counterfactual.exemplars[0].exemplar_key
    prometheus.wait_for(f"sum({hits}) + sum({misses})", lambda v: v >= before["hit"] + before["miss"] + sends)
    after = _settle(prometheus, {"hit": hits, "miss": misses})
    missed, hit = after["miss"] - before["miss"], after["hit"] - before["hit"]
    assert missed + hit == sends  # one lookup per request
    # each worker computes the exemplar's features at most once (earlier tests on this shared deployment may have
    # cached it already), then hits its cache
    assert missed <= WORKERS and hit >= sends - WORKERS


def test_every_metric_the_dashboard_reads_exists_on_the_scrape(burst, prometheus):
    scraped = prometheus.metric_names()
    scraped_contract = {m for m in CONTRACT_METRICS
                        if m in scraped or f"{m}_bucket" in scraped}
    # the exemplar cache counter appears once a counterfactual used an exemplar (test above)
    assert scraped_contract >= CONTRACT_METRICS - {"galore_exemplar_cache_total"}
    raw = {m for e in dashboard_exprs() for m in metric_names(e)} - set(recording_rules())
    missing = {m for m in raw if m not in scraped and m != "galore_exemplar_cache_total"}
    assert not missing, f"dashboard reads metrics absent from the scrape: {sorted(missing)}"


def test_recording_rules_produce_series_for_the_dashboard(burst, prometheus):
    for name in ("model_kind:galore_images:rate1m", "model_transport:galore_request_duration_seconds:p50",
                 "model_transport:galore_request_duration_seconds:p95",
                 "model_transport:galore_request_duration_seconds:p99", "model:galore_batch_size:mean5m",
                 "model_transport:galore_requests_errors:ratio_rate5m",
                 "model_stage:galore_stage_duration_seconds:p95"):
        series = prometheus.query(name)
        assert series, f"{name} recorded nothing"
        assert all(s["metric"].get("model") == MODEL for s in series), series
    # no request failed, so the error ratio is exactly 0, and batches were between 1 and 12 images
    assert prometheus.scalar(f'model_transport:galore_requests_errors:ratio_rate5m{{transport="grpc"}}') == 0
    mean_batch = prometheus.scalar("model:galore_batch_size:mean5m")
    assert 1 <= mean_batch <= IMAGES_PER_REQUEST * REQUESTS
    p50, p99 = (prometheus.scalar(f'model_transport:galore_request_duration_seconds:{q}{{transport="grpc"}}')
                for q in ("p50", "p99"))
    assert 0 < p50 <= p99
