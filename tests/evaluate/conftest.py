"""Tiny hand-checkable models (tests/engine) and the default model for the faithfulness metrics."""
from __future__ import annotations

import pytest

from galore import Engine
from galore.evaluate import Scorer
from tests.engine.conftest import IDENTITY_PREP, gray_pool_model


@pytest.fixture(scope="session")
def tiny_engine() -> Engine:
    return Engine.from_module("tiny", gray_pool_model(), ["zero", "one", "two"], IDENTITY_PREP, layer="1",
                              device="cpu")


@pytest.fixture(scope="session")
def tiny_scorer(tiny_engine) -> Scorer:
    return Scorer.of(tiny_engine)


@pytest.fixture(scope="session")
def lite_engine() -> Engine:
    return Engine.default(device="cpu")
