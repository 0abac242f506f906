"""TorchServe entry of the tests' gated archive (built by tests/reliability/gate.py, never by model_store/build.py's
commands): the real handler, whose engine call waits while the test holds the gate closed.

The archive's ``gate.txt`` names the gate folder. Each engine call appends a line to ``<gate>/entered`` when it
arrives, then waits while ``<gate>/closed`` exists (at most HOLD_LIMIT_S, so a test that forgets to open it fails
instead of hanging the suite), then runs the real engine. Everything before the engine call (decoding, the deadline
check that drops expired requests) runs as in production.
"""
from __future__ import annotations

import os
import time
from pathlib import Path

from handlers.galore_handler import GaloreHandler, entry_point

HOLD_LIMIT_S = 300.0
POLL_S = 0.01


class GatedEngine:
    """The engine, with ``explain`` held by the gate; every other attribute is the engine's."""

    def __init__(self, engine, folder: Path):
        self._engine, self._folder = engine, folder

    def __getattr__(self, name: str):
        return getattr(self._engine, name)

    def explain(self, requests, **kwargs):
        with open(self._folder / "entered", "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()} {len(requests)}\n")
        waited = time.monotonic()
        while (self._folder / "closed").exists() and time.monotonic() - waited < HOLD_LIMIT_S:
            time.sleep(POLL_S)
        return self._engine.explain(requests, **kwargs)


class GatedHandler(GaloreHandler):
    def initialize(self, context) -> None:
        super().initialize(context)
        model_dir = Path(context.system_properties["model_dir"])
        folder = Path((model_dir / "gate.txt").read_text(encoding="utf-8").strip())
        self.service.engine = GatedEngine(self.service.engine, folder)


handle = entry_point(GatedHandler())
