"""Security checks: what listens where (make serve and the pod), oversized messages refused on both transports at
the same limit (and at the gateway before they are buffered whole), and untrusted weights loaded weights-only."""
from __future__ import annotations

import os
import pickle
from pathlib import Path

import grpc
import psutil
import pytest
import requests
import torch
import yaml

from galore_api.v1 import explainer_pb2 as pb
from galore_gateway.config import ENVELOPE_BYTES, GatewayConfig, read_properties
from galore_wire.contract import FIELD_TRAILER
from tests.conftest import REPO

K8S_BASE = REPO / "deploy" / "k8s" / "base"
LOOPBACK = {"127.0.0.1", "::1", "::ffff:127.0.0.1"}
# Reached only from inside the pod / host: TorchServe's management API (REST and gRPC) and its gRPC inference API.
INTERNAL_KEYS = ("management_address", "grpc_inference_address", "grpc_management_address")


def listening(pid: int) -> set[tuple[str, int]]:
    root = psutil.Process(pid)
    found = set()
    for proc in (root, *root.children(recursive=True)):
        # psutil 6 renamed connections() to net_connections(); kserve 0.21 needs psutil < 6
        connections = getattr(proc, "net_connections", None) or proc.connections
        for conn in connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN:
                found.add((conn.laddr.ip, conn.laddr.port))
    return found


def test_make_serve_listens_on_loopback_only(service):
    sockets = listening(service.torchserve.pid) | listening(service.gateway.pid)
    ports = service.config.ports
    assert {port for _, port in sockets} >= {ports.grpc, ports.rest, ports.management, ports.ts_grpc,
                                             ports.ts_grpc_management, ports.metrics}
    assert {ip for ip, _ in sockets} <= LOOPBACK, sockets


def host(address: str) -> str:
    return address.split("://", 1)[-1].rsplit(":", 1)[0] if "://" in address else address


@pytest.mark.parametrize("config", [REPO / "deploy" / "torchserve" / "config.properties",
                                    K8S_BASE / "torchserve" / "config.properties"], ids=["local", "pod"])
def test_management_and_torchserve_grpc_bind_to_loopback(config):
    props = read_properties(config)
    assert {key: host(props[key]) for key in INTERNAL_KEYS} == dict.fromkeys(INTERNAL_KEYS, "127.0.0.1")


def test_the_pod_exposes_neither_management_nor_torchserve_grpc():
    deployment = yaml.safe_load((K8S_BASE / "deployment.yaml").read_text())
    props = read_properties(K8S_BASE / "torchserve" / "config.properties")
    internal = {int(props["management_address"].rsplit(":", 1)[1]), int(props["grpc_inference_port"]),
                int(props["grpc_management_port"])}
    declared = {p["containerPort"] for c in deployment["spec"]["template"]["spec"]["containers"]
                for p in c.get("ports", [])}
    assert declared and not declared & internal


def gateway_rss(service) -> int:
    return psutil.Process(service.gateway.pid).memory_info().rss


def oversized_request(total_bytes: int) -> bytes:
    """A serialized ExplainRequest of exactly ``total_bytes`` bytes (one image of filler bytes)."""
    image_bytes = total_bytes - 10
    for _ in range(4):
        body = pb.ExplainRequest(images=[pb.Image(data=b"\0" * image_bytes)]).SerializeToString()
        image_bytes -= len(body) - total_bytes
    assert len(body) == total_bytes
    return body


def test_oversized_messages_are_refused_on_both_transports_at_the_same_limit(service, rest_url):
    config = GatewayConfig.with_torchserve_config(service.config.ts_config)
    limit = read_properties(service.config.ts_config)["max_request_size"]
    assert config.caller_max_request_bytes + ENVELOPE_BYTES == config.max_request_bytes == int(limit)
    channel = grpc.insecure_channel(f"127.0.0.1:{service.config.ports.grpc}",
                                    options=[("grpc.max_send_message_length", -1)])
    explain = channel.unary_unary("/galore.v1.Explainer/Explain")
    try:
        # over the limit: refused by the gateway, which does not hold the message
        rss_before = gateway_rss(service)
        body = oversized_request(config.max_request_bytes + 1)
        with pytest.raises(grpc.RpcError) as refused:
            explain(body, timeout=120)
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert gateway_rss(service) - rss_before < len(body) // 2
        answer = requests.post(rest_url, data=body, headers={"Content-Type": "application/x-protobuf"}, timeout=120)
        assert answer.status_code == 413
        # at the limit the gateway accepts it (and the handler names the oversized image)
        body = oversized_request(config.caller_max_request_bytes)
        with pytest.raises(grpc.RpcError) as judged:
            explain(body, timeout=120)
        assert judged.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(judged.value.trailing_metadata())[FIELD_TRAILER] == "images[0].data"
        answer = requests.post(rest_url, data=body, headers={"Content-Type": "application/x-protobuf",
                                                             "Accept": "application/json"}, timeout=120)
        assert answer.status_code == 413 and answer.json()["status"]["field"] == "images[0].data"
    finally:
        channel.close()


class _Payload:
    """Pickles to a call of os.mkdir: what a hostile state dict would run on an unsafe torch.load."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.mkdir, (str(self.marker),)


def hostile_state_dict(tmp_path: Path) -> tuple[Path, Path]:
    marker = tmp_path / "payload-ran"
    path = tmp_path / "weights.pt"
    torch.save({"features.0.weight": torch.zeros(1), "extra": _Payload(marker)}, path)
    return path, marker


def test_a_pickle_payload_in_a_state_dict_is_refused_when_serving(tmp_path):
    from galore.zoo import torchvision_classifier

    path, marker = hostile_state_dict(tmp_path)
    with pytest.raises(pickle.UnpicklingError, match="[Ww]eights only"):
        torchvision_classifier("mobilenet_v3_small", 10, path)
    assert not marker.exists()


def test_a_pickle_payload_in_a_state_dict_is_refused_when_building_an_archive(tmp_path):
    from model_store.build import BuildError, build_torchvision

    path, marker = hostile_state_dict(tmp_path)
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(f"c{i}" for i in range(10)) + "\n")
    with pytest.raises(BuildError, match="not a weights-only state dict"):
        build_torchvision(tmp_path / "out", "mobilenet_v3_small", path, labels)
    assert not marker.exists()
