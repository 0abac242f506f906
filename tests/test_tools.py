"""tests/tools.py: a missing tool skips the test locally and fails it under CI=true."""
from __future__ import annotations

import pytest

from tests.tools import require_tool

MISSING = "galore-no-such-tool"


def test_a_missing_tool_fails_under_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=f"CI=true: {MISSING} is not installed, needed to check"):
        require_tool(MISSING, purpose="check")


def test_a_missing_tool_skips_outside_ci_saying_why(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{MISSING} is not installed, needed to check"):
        require_tool(MISSING, purpose="check")


def test_a_present_tool_is_found_by_path(monkeypatch):
    monkeypatch.setenv("CI", "true")
    assert require_tool(MISSING, "sh", purpose="check").endswith("/sh")
