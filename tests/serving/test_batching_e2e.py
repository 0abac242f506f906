"""Concurrent clients share TorchServe batches and each gets its own answer (options never leak)."""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor

import requests

from galore_api.v1 import explainer_pb2 as pb

CLIENTS = 8


def batch_histogram(service) -> tuple[float, float]:
    """(observations, observations of batch size <= 1) of galore_batch_size on the worker's metrics endpoint."""
    text = requests.get(service.config.worker_metrics_url, timeout=30).text
    count = re.search(r'^galore_batch_size_count\{[^}]*model="efficientnet_lite0"[^}]*\} (\S+)', text, re.M)
    small = re.search(r'^galore_batch_size_bucket\{[^}]*le="1.0"[^}]*\} (\S+)', text, re.M)
    return (float(count.group(1)) if count else 0.0), (float(small.group(1)) if small else 0.0)


def options_for(i: int) -> pb.ExplainOptions:
    """Different per client: top_k, and attributive only for even clients."""
    if i % 2:
        return pb.ExplainOptions(prediction_only=True, top_k=i + 1)
    return pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE], top_k=i + 1,
                             threshold=pb.Threshold(coverage=0.05 * (i + 1)))


def test_concurrent_clients_share_batches_and_get_their_own_answers(service, grpc_client, rest_client, chelsea,
                                                                    coffee):
    before = batch_histogram(service)

    def call(i: int) -> pb.ExplainResponse:
        images = [chelsea if i % 3 else coffee]
        if i % 2:
            return rest_client.explain(images, options_for(i), ids=[f"client{i}"])
        return grpc_client.explain(images, options_for(i), ids=[f"client{i}"])

    with ThreadPoolExecutor(CLIENTS) as pool:
        responses = list(pool.map(call, range(CLIENTS)))
    coverages = {}
    for i, response in enumerate(responses):
        image = response.images[0]
        assert image.id == f"client{i}" and image.status.code == "OK"
        assert len(image.top_classes) == i + 1
        assert image.HasField("attributive") == (i % 2 == 0)
        assert (image.top_classes[0].label == "espresso") == (i % 3 == 0), (i, image.top_classes[0].label)
        if i % 2 == 0:
            coverages[i] = image.attributive.region.mask.pixel_count
    cat_runs = sorted((i, n) for i, n in coverages.items() if i % 3)
    assert [n for _, n in cat_runs] == sorted(n for _, n in cat_runs)  # larger coverage -> more pixels, per client
    after = batch_histogram(service)
    batches, single = after[0] - before[0], after[1] - before[1]
    assert 0 < batches < CLIENTS  # fewer engine calls than requests
    assert batches - single >= 1  # at least one batch held more than one image
