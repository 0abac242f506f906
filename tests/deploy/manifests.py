"""Helpers over rendered Kubernetes manifests: render an overlay, pick objects, parse quantities and properties."""
from __future__ import annotations

import re
import subprocess
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from tests.tools import require_tool

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
OVERLAYS = ("cpu", "gpu")
PROBES = ("startupProbe", "readinessProbe", "livenessProbe")

_SUFFIX = {"": 1, "m": Decimal("0.001"), "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12,
           "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}
_QUANTITY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)(m|k|M|G|T|Ki|Mi|Gi|Ti)?$")


def render(overlay: str) -> list[dict]:
    """`kubectl kustomize deploy/k8s/overlays/<overlay>` -> list of objects (offline, no API server)."""
    kubectl = require_tool("kubectl", purpose="render the kustomize overlays")
    completed = subprocess.run([kubectl, "kustomize", str(K8S / "overlays" / overlay)],
                               capture_output=True, text=True, timeout=60)
    if completed.returncode != 0:
        pytest.fail(f"kubectl kustomize overlays/{overlay} failed:\n{completed.stderr}")
    return [doc for doc in yaml.safe_load_all(completed.stdout) if doc]


def one(objects: list[dict], kind: str) -> dict:
    """The single object of `kind`; fails if there is not exactly one."""
    found = [obj for obj in objects if obj["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def containers(objects: list[dict]) -> dict[str, dict]:
    """Container name -> container spec of the Deployment's pod template."""
    spec = one(objects, "Deployment")["spec"]["template"]["spec"]
    return {c["name"]: c for c in spec["containers"]}


def container_ports(container: dict) -> dict[str, int]:
    """Port name -> containerPort number of one container."""
    return {p["name"]: p["containerPort"] for p in container.get("ports", [])}


def quantity(value) -> Decimal:
    """Kubernetes resource quantity ("250m", "3Gi", 2) -> Decimal in base units; ValueError if malformed."""
    match = _QUANTITY.match(str(value))
    if match is None:
        raise ValueError(f"not a Kubernetes quantity: {value!r}")
    return Decimal(match.group(1)) * _SUFFIX[match.group(2) or ""]


def java_properties(text: str) -> dict[str, str]:
    """key=value lines of a Java .properties file (comments and blank lines skipped)."""
    pairs = (line.split("=", 1) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}
