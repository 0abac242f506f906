"""The container's TorchServe config, the gateway's arguments and the local config agree where they must:
ports the containers declare, size limits on both hops, handler settings, and one source of galore_images_total."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .manifests import K8S, REPO, container_ports, containers, java_properties, one

CONTAINER_CONFIG = K8S / "base" / "torchserve"
LOCAL_CONFIG = REPO / "deploy" / "torchserve"
CONFIG_MOUNT = "/home/model-server/config"
# Keys whose container value differs from local serving on purpose (addresses and paths), or exist only here.
CONTAINER_ONLY = {"inference_address", "metrics_address", "metrics_config", "model_store", "load_models",
                  "async_logging"}


def container_properties() -> dict[str, str]:
    return java_properties((CONTAINER_CONFIG / "config.properties").read_text())


def test_container_config_keeps_every_local_setting_except_addresses_and_paths():
    local = java_properties((LOCAL_CONFIG / "config.properties").read_text())
    container = container_properties()
    shared = set(local) - CONTAINER_ONLY
    assert {k: container.get(k) for k in shared} == {k: local[k] for k in shared}
    assert set(container) - set(local) <= CONTAINER_ONLY


@pytest.mark.parametrize("name", ["metrics.yaml", "log4j2.xml"])
def test_metrics_declarations_and_logging_are_copies_of_the_local_ones(name):
    """kustomize reads files only below the kustomization, so the ConfigMap holds copies; they must not drift."""
    assert (CONTAINER_CONFIG / name).read_bytes() == (LOCAL_CONFIG / name).read_bytes(), \
        f"deploy/k8s/base/torchserve/{name} must be a copy of deploy/torchserve/{name}"


def test_container_logging_goes_to_stdout_only():
    """No log files: the root filesystem is read-only and kubectl logs reads stdout."""
    log4j = (CONTAINER_CONFIG / "log4j2.xml").read_text()
    assert "<Console" in log4j and "RollingFile" not in log4j and "<File" not in log4j


def gateway_args(objects) -> list[str]:
    args = containers(objects)["gateway"]["args"]
    assert args[0] == "gateway"  # the image entrypoint's role
    return args[1:]


def test_gateway_arguments_parse_and_match_the_pod_ports(rendered):
    from galore_gateway.__main__ import parse_args

    objects = rendered["cpu"]
    args = [arg.replace(CONFIG_MOUNT, str(CONTAINER_CONFIG)) for arg in gateway_args(objects)]
    config = parse_args(args)
    ports = container_ports(containers(objects)["gateway"])
    assert config.listen == f"0.0.0.0:{ports['grpc']}"
    assert (config.metrics_host, config.metrics_port) == ("0.0.0.0", ports["metrics"])
    properties = container_properties()
    assert config.torchserve_inference == f"127.0.0.1:{properties['grpc_inference_port']}"
    assert config.torchserve_management == f"127.0.0.1:{properties['grpc_management_port']}"
    assert config.max_request_bytes == int(properties["max_request_size"])
    assert config.max_response_bytes == int(properties["max_response_size"])
    mounts = {m["mountPath"] for m in containers(objects)["gateway"]["volumeMounts"]}
    assert CONFIG_MOUNT in mounts


def test_images_counter_has_one_source_so_the_adapter_sum_counts_each_image_once():
    from galore_gateway.metrics import REGISTRY

    declared = yaml.safe_load((LOCAL_CONFIG / "metrics.yaml").read_text())["model_metrics"]["counter"]
    assert "galore_images_total" in {metric["name"] for metric in declared}
    gateway_names = {sample.name for family in REGISTRY.collect() for sample in family.samples}
    assert not any(name.startswith("galore_images_total") for name in gateway_names)


def test_image_bakes_in_the_archive_the_config_loads():
    archive = re.search(r"^ARCHIVE := (\S+)$", (REPO / "Makefile").read_text(), flags=re.M).group(1)
    dockerfile = (REPO / "Dockerfile").read_text()
    assert f"COPY --from=build /src/{archive} /home/model-server/model-store/" in dockerfile
    assert container_properties()["load_models"] == Path(archive).name


def test_gateway_process_does_not_load_torch():
    """The gateway container's memory request assumes a gRPC proxy, not a second copy of torch."""
    code = "import sys, galore_gateway.__main__; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert (result.returncode, result.stdout.strip()) == (0, "False"), result.stderr
