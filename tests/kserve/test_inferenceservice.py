"""deploy/kserve: the InferenceServices (CPU and GPU) validated offline against the pinned CRD's openAPIV3Schema,
strictly (an unknown field is an error), and consistent with the image, the host's ports and the k8s deployment."""
from __future__ import annotations

import copy
import gzip
from pathlib import Path

import jsonschema
import pytest
import yaml

from galore_wire.contract import KSERVE_PORTS

REPO = Path(__file__).resolve().parents[2]
KSERVE = REPO / "deploy" / "kserve"
MANIFESTS = sorted(KSERVE.glob("inferenceservice-*.yaml"))


def strict(schema: dict) -> dict:
    """OpenAPI v3 (Kubernetes structural schema) -> JSON Schema: objects with properties reject unknown fields
    unless marked x-kubernetes-preserve-unknown-fields; int-or-string takes either."""
    schema = dict(schema)
    if schema.get("x-kubernetes-int-or-string"):
        schema.pop("type", None)
        schema["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if "properties" in schema:
        schema["properties"] = {k: strict(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    if isinstance(schema.get("additionalProperties"), dict):
        schema["additionalProperties"] = strict(schema["additionalProperties"])
    if "items" in schema:
        schema["items"] = strict(schema["items"])
    for key in ("anyOf", "allOf", "oneOf"):
        if key in schema:
            schema[key] = [strict(s) for s in schema[key]]
    return schema


@pytest.fixture(scope="module")
def validator() -> jsonschema.Draft7Validator:
    with gzip.open(KSERVE / "crd" / "serving.kserve.io_inferenceservices.yaml.gz", "rt", encoding="utf-8") as f:
        crd = yaml.load(f, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # 1.9 MB: libyaml when present
    assert crd["spec"]["names"]["kind"] == "InferenceService"
    [version] = [v for v in crd["spec"]["versions"] if v["name"] == "v1beta1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta is validated by the API server itself
    return jsonschema.Draft7Validator(schema)


def load(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def errors(validator, manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def test_there_is_a_cpu_and_a_gpu_inferenceservice():
    assert [p.name for p in MANIFESTS] == ["inferenceservice-cpu.yaml", "inferenceservice-gpu.yaml"]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_manifest_is_valid_against_the_crd(validator, path):
    manifest = load(path)
    assert (manifest["apiVersion"], manifest["kind"]) == ("serving.kserve.io/v1beta1", "InferenceService")
    assert errors(validator, manifest) == []


@pytest.mark.parametrize("mutate, where", [
    (lambda m: m["spec"]["predictor"].__setitem__("containerz", []), "spec.predictor"),
    (lambda m: m["spec"]["predictor"].__setitem__("minReplicas", "one"), "spec.predictor.minReplicas"),
    (lambda m: m["spec"]["predictor"]["containers"][0]["ports"][0].__setitem__("containerPort", "8080"),
     "spec.predictor.containers.0.ports.0.containerPort"),
    (lambda m: m["spec"].pop("predictor"), "spec"),
])
def test_the_validation_catches_mistakes(validator, mutate, where):
    manifest = copy.deepcopy(load(MANIFESTS[0]))
    mutate(manifest)
    found = errors(validator, manifest)
    assert any(e.startswith(f"{where}: ") for e in found), found


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.stem)
def test_predictor_runs_the_kserve_role_of_the_same_image_on_the_hosts_port(path):
    predictor = load(path)["spec"]["predictor"]
    [container] = predictor["containers"]
    assert container["name"] == "kserve-container"  # KServe's name for the predictor's serving container
    assert container["image"].startswith("galore-serve:") and container["args"][0] == "kserve"
    assert [p["containerPort"] for p in container["ports"]] == [KSERVE_PORTS.http]
    args = container["args"]
    assert args[args.index("--http-port") + 1] == str(KSERVE_PORTS.http)
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == KSERVE_PORTS.http
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "batcher" not in predictor  # engine batching is the host's own (BENCHMARKS.md, "Two hosts")


def test_gpu_asks_for_one_gpu_and_the_cuda_image():
    [container] = load(KSERVE / "inferenceservice-gpu.yaml")["spec"]["predictor"]["containers"]
    assert container["image"].endswith("-cuda")
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    args = container["args"]
    assert args[args.index("--engine-workers") + 1] == "1"  # one engine per GPU: one model copy, one stream
    from galore_kserve.__main__ import parse_args
    assert parse_args(args[1:]).engine_workers == 1  # the host accepts the arguments as written
    [cpu] = load(KSERVE / "inferenceservice-cpu.yaml")["spec"]["predictor"]["containers"]
    assert "nvidia.com/gpu" not in cpu["resources"]["limits"]


def test_the_entrypoint_has_the_kserve_role():
    entrypoint = (REPO / "deploy" / "docker" / "entrypoint.sh").read_text(encoding="utf-8")
    assert "kserve)" in entrypoint and "python -m galore_kserve" in entrypoint
