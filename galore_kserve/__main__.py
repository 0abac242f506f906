"""``python -m galore_kserve``: the KServe host (v1 ``:predict`` / ``:explain``, OIP v2 REST and gRPC) serving a
model archive. ``make serve BACKEND=kserve`` starts it with the gateway (galore_supervisor/deployment.py)."""
from __future__ import annotations

import argparse
import logging
import tempfile
import warnings
from pathlib import Path

from galore.options import DEFAULT_MODEL
from galore_wire.contract import HOST, KSERVE_PORTS, MAX_MESSAGE_BYTES


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m galore_kserve", description=__doc__)
    parser.add_argument("--archive", type=Path, default=Path("model_store") / f"{DEFAULT_MODEL}.mar",
                        help="model archive (.mar) built by `make archive`")
    parser.add_argument("--model-name", help="name in the routes (default: the archive's model name)")
    parser.add_argument("--host", default=HOST, help=f"address both servers bind (default {HOST}; 0.0.0.0 in a pod)")
    parser.add_argument("--http-port", type=int, default=KSERVE_PORTS.http, help="v1 / v2 REST, /metrics")
    parser.add_argument("--grpc-port", type=int, default=KSERVE_PORTS.grpc, help="OIP v2 gRPC")
    parser.add_argument("--engine-workers", type=int,
                        help="engines, each with its own thread (default: the archive's minWorkers)")
    parser.add_argument("--job-queue-size", type=int, default=None,
                        help="requests that may wait for an engine; one more gets UNAVAILABLE (503), as TorchServe's "
                             "job_queue_size (default 100, TorchServe's default; make serve passes "
                             "deploy/torchserve/config.properties')")
    parser.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (CUDA when available)")
    parser.add_argument("--work-dir", type=Path, help="where the archive is unpacked (default: a temp dir)")
    parser.add_argument("--verbose", action="store_true", help="KServe's per-request access and timing logs")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    # KServe 0.21's ModelServer sets fastapi's ORJSONResponse as its default response class, which fastapi now
    # deprecates: a library matter we cannot change, printed once per process on the operator's console otherwise.
    warnings.filterwarnings("ignore", message="ORJSONResponse is deprecated")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s kserve-host %(levelname)s %(name)s: %(message)s")
    import json
    import zipfile

    import torch

    from .archive import open_archive
    from .batcher import DEFAULT_JOB_QUEUE_SIZE
    from .model import GaloreModel
    from .server import GaloreModelServer

    work_dir = args.work_dir or Path(tempfile.mkdtemp(prefix="galore-kserve-"))
    archive = open_archive(args.archive, work_dir / "model")
    with zipfile.ZipFile(args.archive) as mar:
        manifest = json.loads(mar.read("MAR-INF/MANIFEST.json"))
    name = args.model_name or manifest.get("model", {}).get("modelName") or DEFAULT_MODEL
    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    workers = args.engine_workers or archive.workers
    if workers < 1:
        raise SystemExit(f"--engine-workers: must be >= 1, got {workers}")
    queue = DEFAULT_JOB_QUEUE_SIZE if args.job_queue_size is None else args.job_queue_size
    if queue < 1:
        raise SystemExit(f"--job-queue-size: must be >= 1, got {queue}")
    model = GaloreModel(name, archive, device=device, workers=workers, max_queued=queue)
    model.load()
    limit = max(archive.config.max_request_bytes, archive.config.max_response_bytes) or MAX_MESSAGE_BYTES
    server = GaloreModelServer(args.host, limit, http_port=args.http_port, grpc_port=args.grpc_port)
    if not args.verbose:  # as TorchServe's quiet log config: no line per request
        for name in ("uvicorn.access", "kserve.trace"):
            logging.getLogger(name).setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
