"""Concurrent clients each get their own answer (options never leak), on both hosts. That they share batches is
tests/reliability/test_batching_e2e.py's: it holds the workers so the calls queue, whatever the machine's speed."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from galore_api.v1 import explainer_pb2 as pb

CLIENTS = 8


def options_for(i: int) -> pb.ExplainOptions:
    """Different per client: top_k, and attributive only for even clients."""
    if i % 2:
        return pb.ExplainOptions(prediction_only=True, top_k=i + 1)
    return pb.ExplainOptions(kinds=[pb.EXPLANATION_KIND_ATTRIBUTIVE], top_k=i + 1,
                             threshold=pb.Threshold(coverage=0.05 * (i + 1)))


def test_concurrent_clients_get_their_own_answers(service, grpc_client, rest_client, chelsea, coffee):

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
