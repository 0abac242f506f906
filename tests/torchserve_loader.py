"""An archive loaded by TorchServe's own Python model loader, the way `model_service_worker` loads it, and one
batch through its entry point: the in-process half of a worker, shared by the archive tests."""
from __future__ import annotations

import sys
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def loaded_archive(mar: Path, model_dir: Path, name: str, batch_size: int) -> Iterator:
    """Extract ``mar`` into ``model_dir`` and load its handler; yields TorchServe's service object."""
    from ts.model_loader import ModelLoaderFactory

    with zipfile.ZipFile(mar) as zipped:
        zipped.extractall(model_dir)
    sys.path.insert(0, str(model_dir))
    try:
        yield ModelLoaderFactory.get_model_loader().load(
            name, str(model_dir), "galore_handler.py", None, batch_size, limit_max_image_pixels=True)
    finally:
        sys.path.remove(str(model_dir))
        sys.modules.pop("galore_handler", None)  # the entry module holds its initialized handler: load afresh


def run_batch(service, requests: list[tuple[dict, dict]]) -> list[tuple[int, bytes]]:
    """One TorchServe batch: (input dict, headers) per request -> (HTTP status, body) per request."""
    from ts.context import RequestProcessor

    service.context.request_processor = [RequestProcessor(headers) for _, headers in requests]
    bodies = service._entry_point([row for row, _ in requests], service.context)
    return [(service.context.get_response_status(i)[0], body) for i, body in enumerate(bodies)]
