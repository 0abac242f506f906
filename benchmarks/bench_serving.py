"""Shared pieces of the serving benchmarks: archives, a deployment with given TorchServe settings, load points,
worker memory. Nothing here is a test; the scripts beside it print figures.

Deployments are started exactly as `make serve` does (galore_supervisor.deployment.LocalService) on free loopback ports.
TorchServe settings a benchmark varies:
  batch_size / max_batch_delay_ms  baked into the archive's model-config (model_store.build);
  workers                          scaled through TorchServe's management API after start;
  threads                          OMP_NUM_THREADS of the TorchServe process (torch intra-op threads per worker);
                                   0 leaves it to the environment, where LocalService defaults it to 1.
"""
from __future__ import annotations

import os
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psutil
import requests
import torch

from galore.options import DEFAULT_MODEL  # noqa: E402
from galore_cli import loadtest
from galore_cli.machine import cpu_seconds, describe
from galore_cli.load_report import LoadSummary
from galore_cli.load_transports import open_sender, sample_images
from galore_client.settings import ExplainSettings
from galore_client.client import KSERVE_V1
from galore_gateway.config import Backend
from galore_supervisor.deployment import LocalConfig, LocalService, Ports, free_ports

REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class ServeSettings:
    arch: str = DEFAULT_MODEL  # or a torchvision architecture with random weights (resnet50, vgg16)
    batch_size: int | None = None  # None: deploy/torchserve/model-config.yaml
    max_batch_delay_ms: int | None = None
    workers: int = 1
    threads: int = 0  # OMP_NUM_THREADS for the workers; 0: the environment's (LocalService default: 1)
    backend: str = "torchserve"  # or "kserve": the KServe host (galore_kserve) behind the gateway

    @property
    def model(self) -> str:
        return self.arch


def machine() -> str:
    return f"{describe()}, {psutil.virtual_memory().total / 2**30:.0f} GiB"



def build_archive(settings: ServeSettings, out: Path) -> Path:
    """The .mar for ``settings`` in ``out``; torchvision archs get seeded random weights and ImageNet labels."""
    from model_store.build import build_default, build_torchvision

    batching = dict(batch_size=settings.batch_size, max_batch_delay_ms=settings.max_batch_delay_ms)
    if settings.arch == DEFAULT_MODEL:
        return build_default(out, **batching)
    import torchvision

    from galore.zoo import imagenet_labels

    torch.manual_seed(0)
    weights = out / f"{settings.arch}-random.pt"
    labels = out / "imagenet_labels.txt"
    torch.save(getattr(torchvision.models, settings.arch)(weights=None, num_classes=1000).state_dict(), weights)
    labels.write_text("\n".join(imagenet_labels()) + "\n")
    try:
        return build_torchvision(out, settings.arch, weights, labels, **batching)
    finally:
        weights.unlink()


def scale_workers(management_port: int, model: str, workers: int) -> None:
    reply = requests.put(f"http://127.0.0.1:{management_port}/models/{model}",
                         params={"min_worker": workers, "max_worker": workers, "synchronous": "true"}, timeout=600)
    if reply.status_code != 200:
        raise RuntimeError(f"scaling {model} to {workers} workers failed: {reply.status_code} {reply.text}")


def worker_pids(service: LocalService) -> list[int]:
    """TorchServe's Python worker processes of this deployment."""
    root = psutil.Process(service.torchserve.pid)
    return [p.pid for p in root.children(recursive=True)
            if any("model_service_worker" in part for part in p.cmdline())]


def server_cpu_seconds(service: LocalService) -> float:
    """CPU seconds (user + system) used so far by the backend (TorchServe and its workers, or the KServe host) and
    the gateway, children included."""
    roots = [psutil.Process(pid) for pid in (service.backend.pid, service.gateway.pid)]
    return cpu_seconds(proc for root in roots for proc in (root, *root.children(recursive=True)))


def worker_rss_mib(service: LocalService) -> float:
    """Resident memory of all workers, MiB."""
    return sum(psutil.Process(pid).memory_info().rss for pid in worker_pids(service)) / 2**20


@dataclass
class Deployment:
    service: LocalService
    settings: ServeSettings
    cold_start_s: float  # LocalService.start() to the gateway's health check answering SERVING

    @property
    def ports(self) -> Ports:
        return self.service.config.ports


@contextmanager
def deployment(settings: ServeSettings):
    """Builds the archive, starts TorchServe + gateway with ``settings``, yields a Deployment, always stops."""
    with tempfile.TemporaryDirectory(prefix="galore-bench-") as tmp:
        tmp = Path(tmp)
        store = tmp / "model_store"
        store.mkdir()
        build_archive(settings, store)
        ports = Ports(*free_ports(7))
        config = LocalConfig(model_store=store, run_dir=tmp / "run", model=settings.model, ports=ports,
                             model_api=settings.workers != 1,  # scaling goes through the model API
                             backend=Backend(settings.backend))
        saved = os.environ.get("OMP_NUM_THREADS")
        if settings.threads:
            os.environ["OMP_NUM_THREADS"] = str(settings.threads)
        service = LocalService(config)
        try:
            started = time.perf_counter()
            service.start()
            service.wait_serving(timeout_s=600)
            cold = time.perf_counter() - started
            if settings.workers != 1:
                scale_workers(ports.management, settings.model, settings.workers)
            yield Deployment(service, settings, cold)
        finally:
            service.stop()
            if saved is None:
                os.environ.pop("OMP_NUM_THREADS", None)
            else:
                os.environ["OMP_NUM_THREADS"] = saved


def load(dep: Deployment, transport: str, kinds: tuple[str, ...], concurrency: int, seconds: float,
         images_per_request: int = 1, count: int = 1_000_000) -> LoadSummary:
    """One closed-loop load point against ``dep`` (no progress bar)."""
    port = dep.ports.grpc if transport == "grpc" else dep.ports.rest
    target = f"127.0.0.1:{port}"
    if transport == "rest" and dep.settings.backend == "kserve":
        target += KSERVE_V1  # the KServe host's v1 routes (galore_client.client.RestClient)
    config = loadtest.LoadConfig(
        transport=transport, target=target, model=dep.settings.model, concurrency=concurrency, rate=None,
        count=count, duration_s=seconds, images_per_request=images_per_request, timeout_s=600.0,
        arch=dep.settings.arch, progress=False, json_path=None,
        settings=ExplainSettings(kinds=kinds, prediction_only=not kinds))  # every other option: the engine default
    sender = open_sender(transport, target, dep.settings.model, 600.0)
    try:
        return loadtest.run(config, sample_images(), sender)
    finally:
        sender.close()
