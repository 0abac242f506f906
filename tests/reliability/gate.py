"""A gate the tests hold closed to make the engine's work last exactly as long as they need: overload, full
queues, deadlines that pass in the queue and workers killed while holding a call then no longer depend on how fast
the engine or the machine is.

``build_gated_archive`` packs the default model with tests/reliability/gated_handler.py as its TorchServe entry;
the archive exists only in the tests' temporary folders (model_store/build.py has no flag for another entry).

    gate = Gate(tmp / "gate")
    archive = build_gated_archive(tmp / "store", gate)   # serve it as usual (LocalService)
    with gate.held():
        ...send calls; gate.wait_entered(n) returns once n engine calls are being held...
    # leaving the block opens the gate: the held calls run
"""
from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path

from galore.options import DEFAULT_MODEL
from model_store.build import archive

GATED_HANDLER = Path(__file__).with_name("gated_handler.py")


class Gate:
    """The test's side of the gate: a folder shared with the gated workers."""

    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        (self.folder / "closed").touch()

    def open(self) -> None:
        (self.folder / "closed").unlink(missing_ok=True)

    def calls(self) -> list[int]:
        """Images of each engine call that has arrived at the gate so far (held or passed), in arrival order."""
        try:
            lines = (self.folder / "entered").read_text(encoding="utf-8").splitlines()
        except FileNotFoundError:
            return []
        return [int(line.split()[1]) for line in lines]

    def entered(self) -> int:
        """Engine calls that have arrived at the gate so far."""
        return len(self.calls())

    def wait_entered(self, count: int, timeout_s: float = 120.0) -> None:
        """Returns once ``count`` engine calls have arrived; fails after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while self.entered() < count:
            assert time.monotonic() < deadline, f"{self.entered()} of {count} engine calls reached the gate"
            time.sleep(0.02)

    @contextlib.contextmanager
    def held(self):
        """Closed inside the block, open after it (also when the block fails)."""
        self.close()
        try:
            yield self
        finally:
            self.open()


def build_gated_archive(out: Path, gate: Gate, name: str = DEFAULT_MODEL) -> Path:
    """The default archive (same model config and batching) whose engine calls pass through ``gate``."""
    with tempfile.TemporaryDirectory(prefix="galore-gated-mar-") as tmp:
        staging = Path(tmp)
        (staging / "gate.txt").write_text(str(gate.folder.resolve()), encoding="utf-8")
        return archive(name, {"model": DEFAULT_MODEL}, out, staging, handler=GATED_HANDLER)
