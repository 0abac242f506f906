"""The declared metrics show up with the right values on the worker's (TorchServe's or the KServe host's) and the
gateway's /metrics endpoints."""
from __future__ import annotations

import re

import requests
import yaml

from galore_api.v1 import explainer_pb2 as pb

from .conftest import REPO


def sample(text: str, name: str, **labels) -> float:
    """Value of the first sample of ``name`` carrying all ``labels`` (0 when absent)."""
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            return float(match.group(2))
    return 0.0


def scrape(where: int | str) -> str:
    """A /metrics page: a full URL, or the port of one on loopback."""
    url = where if isinstance(where, str) else f"http://127.0.0.1:{where}/metrics"
    return requests.get(url, timeout=30).text


def test_worker_and_gateway_metrics_count_what_was_served(service, grpc_client, chelsea, coffee):
    ports = service.config.ports
    worker_before, gateway_before = scrape(service.config.worker_metrics_url), scrape(ports.gateway_metrics)
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE, pb.EXPLANATION_KIND_DELIBERATIVE])
    response = grpc_client.explain([chelsea, b"broken", coffee], options)
    assert [i.status.code for i in response.images] == ["OK", "INVALID_ARGUMENT", "OK"]
    worker, gateway = scrape(service.config.worker_metrics_url), scrape(ports.gateway_metrics)

    def worker_delta(name, **labels):
        return sample(worker, name, **labels) - sample(worker_before, name, **labels)

    def gateway_delta(name, **labels):
        return sample(gateway, name, **labels) - sample(gateway_before, name, **labels)

    model = {"model": "efficientnet_lite0"}
    assert worker_delta("galore_images_total", kind="prediction", **model) == 2  # answered images only
    assert worker_delta("galore_images_total", kind="attributive", **model) == 2
    assert worker_delta("galore_images_total", kind="deliberative", **model) == 2
    assert worker_delta("galore_images_total", kind="counterfactual", **model) == 0
    for stage in ("decode", "forward", "attribution", "regions", "encode"):
        assert worker_delta("galore_stage_duration_seconds_count", stage=stage, **model) == 1, stage
        assert worker_delta("galore_stage_duration_seconds_sum", stage=stage, **model) > 0, stage
    assert worker_delta("galore_batch_size_count", **model) == 1
    assert worker_delta("galore_batch_size_sum", **model) == 2
    assert gateway_delta("galore_requests_total", status="OK", transport="grpc", **model) == 1
    assert gateway_delta("galore_request_duration_seconds_count", transport="grpc", **model) == 1
    assert sample(gateway, "galore_inflight_requests", **model) == 0
    assert sample(gateway, "galore_images_per_second", **model) > 0


def test_exemplar_cache_hits_on_a_repeated_exemplar(service, grpc_client, chelsea, coffee):
    """Each worker keeps its own cache: with W workers, W + 1 sequential requests miss at most W times (once per
    worker) and, by pigeonhole, hit at least once."""
    workers = int(yaml.safe_load((REPO / "deploy/torchserve/model-config.yaml").read_text())["minWorkers"])
    port = service.config.worker_metrics_url
    options = pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_COUNTERFACTUAL],
                                counter_classes=[pb.CounterClass(label="tabby", exemplar=coffee)])
    before = scrape(port)
    for _ in range(workers + 1):
        grpc_client.explain([chelsea], options)
    after = scrape(port)
    model = {"model": "efficientnet_lite0"}
    hits = sample(after, "galore_exemplar_cache_total", result="hit", **model) - \
        sample(before, "galore_exemplar_cache_total", result="hit", **model)
    misses = sample(after, "galore_exemplar_cache_total", result="miss", **model) - \
        sample(before, "galore_exemplar_cache_total", result="miss", **model)
    assert misses <= workers and hits >= 1 and hits + misses == workers + 1
