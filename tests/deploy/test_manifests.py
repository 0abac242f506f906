"""The kustomize overlays render offline, validate against the Kubernetes schemas, and hang together:
probes, Services and NetworkPolicy ports name container ports that exist, resources and security are set."""
from __future__ import annotations

import kubernetes_validate
import pytest

from .manifests import PROBES, container_ports, containers, java_properties, one, quantity

# Kinds without a schema in kubernetes-validate (CRDs); each is checked structurally by its own test below.
CRD_KINDS = {"ServiceMonitor"}
# Oldest Kubernetes the manifests target (gRPC probes are GA from 1.27) and the newest schema bundled.
K8S_VERSIONS = ("1.27.0", kubernetes_validate.utils.latest_version())
EXPECTED = {("Namespace", "galore"), ("ServiceAccount", "galore-serve"), ("Deployment", "galore-serve"),
            ("Service", "galore-serve"), ("PodDisruptionBudget", "galore-serve"),
            ("HorizontalPodAutoscaler", "galore-serve"), ("NetworkPolicy", "galore-serve"),
            ("ServiceMonitor", "galore-serve")}


def pod_labels(objects):
    return one(objects, "Deployment")["spec"]["template"]["metadata"]["labels"]


def selects(selector: dict, labels: dict) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def test_overlay_renders_the_expected_objects(objects):
    kinds = {(obj["kind"], obj["metadata"]["name"]) for obj in objects if obj["kind"] != "ConfigMap"}
    assert kinds == EXPECTED
    config_maps = [obj["metadata"]["name"] for obj in objects if obj["kind"] == "ConfigMap"]
    assert len(config_maps) == 1 and config_maps[0].startswith("galore-torchserve-config-")  # content-hashed name
    assert all(obj["metadata"].get("namespace") == "galore" for obj in objects if obj["kind"] != "Namespace")


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_object_validates_offline_against_the_kubernetes_schema(objects, version):
    unvalidated = set()
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            unvalidated.add(obj["kind"])
        except kubernetes_validate.ValidationError as exc:
            path = ".".join(str(p) for p in exc.path)
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} invalid for Kubernetes {version}: {path}: "
                        f"{exc.message}")
    assert unvalidated == CRD_KINDS


def test_strict_validation_rejects_a_misspelt_field(objects):
    deployment = one(objects, "Deployment")
    broken = {**deployment, "spec": {**deployment["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[-1], strict=True)


def test_every_probe_targets_a_port_its_container_declares(objects):
    for name, container in containers(objects).items():
        ports = container_ports(container)
        for probe_name in PROBES:
            probe = container.get(probe_name)
            assert probe, f"{name} has no {probe_name}"
            handler = probe.get("httpGet") or probe.get("tcpSocket") or probe.get("grpc")
            port = handler["port"]
            assert port in ports or port in ports.values(), f"{name}.{probe_name} port {port!r} not in {ports}"


def test_readiness_comes_from_grpc_health_and_torchserve_ping(objects):
    by_name = containers(objects)
    assert set(by_name) == {"torchserve", "gateway"}
    gateway = by_name["gateway"]
    assert gateway["readinessProbe"]["grpc"]["port"] == container_ports(gateway)["grpc"] == 50051
    assert "service" not in gateway["readinessProbe"]["grpc"]  # overall server health ("")
    torchserve = by_name["torchserve"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        ping = torchserve[probe]["httpGet"]
        assert ping["path"] == "/ping" and container_ports(torchserve)[ping["port"]] == 8080
    # The startup probe gives the model load minutes before liveness may restart the container.
    startup = torchserve["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    # TorchServe being down must not restart the gateway: its liveness is not the gRPC health check.
    assert "grpc" not in gateway["livenessProbe"]


def test_every_container_has_cpu_and_memory_requests_within_limits(objects):
    for name, container in containers(objects).items():
        resources = container["resources"]
        for resource in ("cpu", "memory"):
            request = quantity(resources["requests"][resource])
            limit = quantity(resources["limits"][resource])
            assert 0 < request <= limit, f"{name} {resource}: request {request} limit {limit}"


def test_gpu_overlay_requests_one_gpu_on_gpu_nodes_and_cpu_overlay_none(rendered):
    gpu_pod = one(rendered["gpu"], "Deployment")["spec"]["template"]["spec"]
    gpu = {c["name"]: c for c in gpu_pod["containers"]}
    assert gpu["torchserve"]["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert "nvidia.com/gpu" not in gpu["gateway"]["resources"]["limits"]
    assert gpu_pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in gpu_pod["tolerations"]
    assert {c["image"] for c in gpu_pod["containers"]} == {"galore-serve:0.1.0-cuda"}

    cpu_pod = one(rendered["cpu"], "Deployment")["spec"]["template"]["spec"]
    assert {c["image"] for c in cpu_pod["containers"]} == {"galore-serve:0.1.0-cpu"}
    assert "nodeSelector" not in cpu_pod and "tolerations" not in cpu_pod
    assert all("nvidia.com/gpu" not in c["resources"]["limits"] for c in cpu_pod["containers"])


def test_pods_meet_the_restricted_pod_security_standard(objects):
    pod = one(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert pod["automountServiceAccountToken"] is False
    for name, container in containers(objects).items():
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, name
        assert context["readOnlyRootFilesystem"] is True, name
        assert context["capabilities"]["drop"] == ["ALL"] and "add" not in context["capabilities"], name
        assert "privileged" not in context and "runAsUser" not in context, name
    # Read-only root: every container gets a writable /tmp, and only emptyDir/configMap volumes are used.
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert all(set(v) - {"name"} <= {"emptyDir", "configMap"} for v in volumes.values())
    for name, container in containers(objects).items():
        tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
        assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name
    namespace = one(objects, "Namespace")
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_service_ports_target_declared_container_ports_and_select_the_pods(objects):
    service = one(objects, "Service")
    assert selects(service["spec"]["selector"], pod_labels(objects))
    declared = {}
    for container in containers(objects).values():
        declared.update(container_ports(container))
    by_name = {p["name"]: p for p in service["spec"]["ports"]}
    assert set(by_name) == {"grpc", "http", "metrics", "ts-metrics"}
    for name, port in by_name.items():
        assert port["targetPort"] in declared, f"Service port {name} targets undeclared {port['targetPort']!r}"
        assert port["port"] == declared[port["targetPort"]]
    assert by_name["grpc"]["appProtocol"] == "grpc"


def test_network_policy_admits_only_clients_to_grpc_rest_and_prometheus_to_metrics(objects):
    policy = one(objects, "NetworkPolicy")["spec"]
    assert selects(policy["podSelector"]["matchLabels"], pod_labels(objects))
    assert set(policy["policyTypes"]) == {"Ingress", "Egress"}
    assert not policy.get("egress")  # Egress listed with no rule: the pod opens no connection out of itself
    declared = {}
    for container in containers(objects).values():
        declared.update(container_ports(container))

    allowed = {}
    for rule in policy["ingress"]:
        ports = [p["port"] for p in rule["ports"]]
        assert all(p in declared for p in ports), f"policy port not declared by a container: {ports}"
        assert all(p.get("podSelector", {}).get("matchLabels") for p in rule["from"]), "rule admits whole namespaces"
        for peer in rule["from"]:
            allowed[str(peer["podSelector"]["matchLabels"])] = set(ports)
    assert allowed == {str({"galore-serve/client": "true"}): {"grpc", "http"},
                       str({"app.kubernetes.io/name": "prometheus"}): {"metrics", "ts-metrics"}}
    prometheus_rule = next(r for r in policy["ingress"] if "metrics" in [p["port"] for p in r["ports"]])
    assert prometheus_rule["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}


def test_hpa_scales_the_deployment_on_images_per_second_per_pod(objects):
    hpa = one(objects, "HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    target = hpa["spec"]["scaleTargetRef"]
    deployment = one(objects, "Deployment")
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"]  # owned by the HPA
    assert 2 <= hpa["spec"]["minReplicas"] < hpa["spec"]["maxReplicas"]
    (metric,) = hpa["spec"]["metrics"]
    assert metric["type"] == "Pods"
    assert metric["pods"]["metric"]["name"] == "galore_images_processed_per_second"
    assert metric["pods"]["target"]["type"] == "AverageValue"
    assert quantity(metric["pods"]["target"]["averageValue"]) > 0
    assert hpa["spec"]["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 60


def test_pdb_covers_the_pods_and_keeps_some_serving(objects):
    pdb = one(objects, "PodDisruptionBudget")["spec"]
    assert selects(pdb["selector"]["matchLabels"], pod_labels(objects))
    assert pdb["maxUnavailable"] == 1
    assert one(objects, "HorizontalPodAutoscaler")["spec"]["minReplicas"] > pdb["maxUnavailable"]


def test_service_monitor_scrapes_both_metrics_ports_of_the_service(objects):
    """ServiceMonitor is a CRD (no schema offline): its fields are checked here instead."""
    monitor = one(objects, "ServiceMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    service = one(objects, "Service")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    service_ports = {p["name"] for p in service["spec"]["ports"]}
    endpoints = monitor["spec"]["endpoints"]
    assert {e["port"] for e in endpoints} == {"metrics", "ts-metrics"} <= service_ports
    assert all(e["path"] == "/metrics" and e["interval"].endswith("s") for e in endpoints)
    assert set(monitor["spec"]) <= {"selector", "endpoints", "namespaceSelector", "jobLabel"}


def test_torchserve_config_map_is_mounted_where_the_config_points(objects):
    config_map = next(obj for obj in objects if obj["kind"] == "ConfigMap")
    assert set(config_map["data"]) == {"config.properties", "metrics.yaml", "log4j2.xml"}
    properties = java_properties(config_map["data"]["config.properties"])
    torchserve = containers(objects)["torchserve"]
    mount = next(m for m in torchserve["volumeMounts"] if m["name"] == "torchserve-config")
    volume = next(v for v in one(objects, "Deployment")["spec"]["template"]["spec"]["volumes"]
                  if v["name"] == "torchserve-config")
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    assert mount["mountPath"] == "/home/model-server/config" and mount["readOnly"] is True
    assert properties["metrics_config"] == f"{mount['mountPath']}/metrics.yaml"
    ports = container_ports(torchserve)
    assert properties["inference_address"] == f"http://0.0.0.0:{ports['http']}"
    assert properties["metrics_address"] == f"http://0.0.0.0:{ports['ts-metrics']}"
    assert properties["management_address"].startswith("http://127.0.0.1:")  # pod-local only
    assert properties["grpc_management_address"] == "127.0.0.1"
    assert (properties["grpc_inference_address"], properties["grpc_inference_port"]) == ("127.0.0.1", "7070")
    assert properties["metrics_mode"] == "prometheus"
    assert properties["disable_token_authorization"] == "true"
    assert properties["enable_model_api"] == "false"
    assert properties["model_store"] == "/home/model-server/model-store"
    assert properties["load_models"] == "efficientnet_lite0.mar"
