"""Rendered Kubernetes manifests of the deploy/k8s overlays, rendered once per session."""
from __future__ import annotations

import pytest

from .manifests import OVERLAYS, render


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict]]:
    """Overlay name -> rendered objects."""
    return {overlay: render(overlay) for overlay in OVERLAYS}


@pytest.fixture(params=OVERLAYS)
def objects(request, rendered) -> list[dict]:
    """The rendered objects of one overlay (a test using it runs for cpu and gpu)."""
    return rendered[request.param]
