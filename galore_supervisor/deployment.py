"""``python -m galore_supervisor``: TorchServe (or the KServe host) + gateway on localhost, in the foreground
(``make serve``, ``make serve BACKEND=kserve``). A development tool: it runs from a source checkout.

Renders deploy/torchserve/config.properties with the chosen ports into the run directory (its size limits and
queue size also set the gateway's limits with either backend), starts TorchServe (quiet log4j2 config, no config
snapshots, token auth and model API off unless asked) or the KServe host on the same archive, and the gateway,
supervises both (a process that exits is started again after a backoff, as Kubernetes restarts a container) and
stops both on Ctrl-C / SIGTERM. The end-to-end tests use ``LocalService`` with free ports and a temporary run dir.

The checkout is ``LocalConfig.repo_root`` (``--repo-root``; default ``REPO_ROOT``, the one place the supervisor
learns where the repository is): deploy/torchserve/ there gives the config template, metrics and log4j2 config, and
its code is what the child processes import.

With the KServe backend, ``Ports.rest`` is its HTTP port (v1, v2, /metrics) and ``Ports.ts_grpc`` its OIP gRPC port;
the TorchServe-only ports are unused.
"""
from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from galore.options import DEFAULT_MODEL
from galore_gateway.config import Backend, read_properties
from galore_wire.contract import HOST, Ports

REPO_ROOT = Path(__file__).resolve().parents[1]
"""The source checkout this package lives in (galore_supervisor/ sits at its root): the default of
``LocalConfig.repo_root`` and ``--repo-root``. Nothing else here works out where the repository is."""
TS_DEPLOY = Path("deploy", "torchserve")  # relative to the repo root: config.properties, metrics.yaml, log4j2.xml


@dataclass(frozen=True)
class LocalConfig:
    model_store: Path
    run_dir: Path
    model: str = DEFAULT_MODEL
    ports: Ports = field(default_factory=Ports)
    token_auth: bool = False
    model_api: bool = False
    quiet: bool = True
    backend: Backend = Backend.TORCHSERVE
    repo_root: Path = REPO_ROOT

    def __post_init__(self):
        template = self.ts_deploy / "config.properties"
        if not template.is_file():
            raise FileNotFoundError(f"{template} not found: repo_root ({self.repo_root}, --repo-root) must be a "
                                    "galore-serve checkout")

    @property
    def ts_deploy(self) -> Path:
        """deploy/torchserve/ of the checkout: TorchServe's config template, metrics.yaml and log4j2.xml."""
        return self.repo_root / TS_DEPLOY

    @property
    def ts_config(self) -> Path:
        return self.run_dir / "config.properties"

    @property
    def rest_base(self) -> str:
        """The REST base URL galore_client takes: TorchServe's, or the KServe host's v1 routes (``/v1``)."""
        base = f"http://{HOST}:{self.ports.rest}"
        return f"{base}/v1" if self.backend is Backend.KSERVE else base

    @property
    def rest_url(self) -> str:
        """Where a REST Explain is POSTed."""
        if self.backend is Backend.KSERVE:
            return f"http://{HOST}:{self.ports.rest}/v1/models/{self.model}:explain"
        return f"http://{HOST}:{self.ports.rest}/predictions/{self.model}"

    @property
    def worker_metrics_url(self) -> str:
        """The engine's metrics (galore_images_total, ...): TorchServe's metrics port or the KServe host's /metrics."""
        port = self.ports.rest if self.backend is Backend.KSERVE else self.ports.metrics
        return f"http://{HOST}:{port}/metrics"


def render_ts_config(config: LocalConfig) -> Path:
    """Writes run_dir/config.properties: the deploy template with this deployment's ports and paths."""
    p = config.ports
    overrides = {
        "inference_address": f"http://{HOST}:{p.rest}",
        "management_address": f"http://{HOST}:{p.management}",
        "metrics_address": f"http://{HOST}:{p.metrics}",
        "grpc_inference_address": HOST, "grpc_inference_port": str(p.ts_grpc),
        "grpc_management_address": HOST, "grpc_management_port": str(p.ts_grpc_management),
        "metrics_config": str(config.ts_deploy / "metrics.yaml"),
        "model_store": str(config.model_store.resolve()),
        "disable_token_authorization": str(not config.token_auth).lower(),
        "enable_model_api": str(config.model_api).lower(),
    }
    lines, seen = [], set()
    for line in (config.ts_deploy / "config.properties").read_text(encoding="utf-8").splitlines():
        key = line.split("=", 1)[0].strip()
        if "=" in line and not line.lstrip().startswith("#") and key in overrides:
            line, _ = f"{key}={overrides[key]}", seen.add(key)
        lines.append(line)
    lines += [f"{key}={value}" for key, value in overrides.items() if key not in seen]
    config.run_dir.mkdir(parents=True, exist_ok=True)
    config.ts_config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return config.ts_config


@dataclass(frozen=True)
class Backoff:
    """Restart delays: ``initial_s`` doubling up to ``max_s``; back to ``initial_s`` once a process has stayed up
    ``reset_after_s`` (Kubernetes' CrashLoopBackOff, shorter)."""

    initial_s: float = 1.0
    max_s: float = 30.0
    reset_after_s: float = 60.0

    def delay(self, restarts_in_a_row: int) -> float:
        return min(self.max_s, self.initial_s * 2 ** restarts_in_a_row)


class LocalService:
    """Starts the backend (TorchServe or the KServe host) and the gateway as child process groups; ``stop`` ends
    both (and only those)."""

    def __init__(self, config: LocalConfig):
        self.config = config
        self.torchserve: subprocess.Popen | None = None
        self.kserve: subprocess.Popen | None = None
        self.gateway: subprocess.Popen | None = None

    @property
    def backend_name(self) -> str:
        return self.config.backend.value  # "torchserve" | "kserve": also the attribute holding its process

    @property
    def backend(self) -> subprocess.Popen | None:
        return getattr(self, self.backend_name)

    def _env(self) -> dict[str, str]:
        tmp = self.config.run_dir / "tmp"  # TorchServe keeps its pid file in the temp dir: one per deployment
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TMPDIR=str(tmp), TEMP=str(tmp), LOG_LOCATION=str(self.config.run_dir / "logs"),
                   METRICS_LOCATION=str(self.config.run_dir / "logs"))
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.config.repo_root), env.get("PYTHONPATH")]))
        # One torch intra-op thread per worker unless the caller says otherwise: measured 5-10x more images/s
        # than torch's default (one thread per core) on the 2-core machine (BENCHMARKS.md, "Threads").
        env.setdefault("OMP_NUM_THREADS", "1")
        return env

    def start(self) -> None:
        c = self.config
        archive = c.model_store / f"{c.model}.mar"
        if not archive.is_file():
            raise FileNotFoundError(f"{archive} not found; run `make archive`")
        render_ts_config(c)
        self.start_backend()
        self.start_gateway()

    def start_backend(self) -> None:
        (self.start_kserve if self.config.backend is Backend.KSERVE else self.start_torchserve)()

    def start_kserve(self) -> None:
        """(Re)starts the KServe host on the same archive, bound to loopback."""
        c = self.config
        if self.kserve is not None:
            self._end(self.kserve, grace_s=0)
        self.kserve = subprocess.Popen(
            [sys.executable, "-m", "galore_kserve", "--archive", str((c.model_store / f"{c.model}.mar").resolve()),
             "--model-name", c.model, "--host", HOST, "--http-port", str(c.ports.rest),
             "--grpc-port", str(c.ports.ts_grpc), "--work-dir", str(c.run_dir / "kserve")]
            + (["--job-queue-size", queue] if (queue := read_properties(c.ts_config).get("job_queue_size")) else [])
            + ([] if c.quiet else ["--verbose"]),
            cwd=c.repo_root, env=self._env(), start_new_session=True)

    def start_torchserve(self) -> None:
        """(Re)starts TorchServe; what is left of an earlier one (its workers) is killed first."""
        c = self.config
        if self.torchserve is not None:
            self._end(self.torchserve, grace_s=0)
        bindir = Path(sys.executable).parent
        cmd = [str(bindir / "torchserve"), "--start", "--foreground", "--ncs", "--model-store",
               str(c.model_store.resolve()), "--models", f"{c.model}={c.model}.mar", "--ts-config", str(c.ts_config)]
        cmd += [] if c.token_auth else ["--disable-token-auth"]
        cmd += ["--enable-model-api"] if c.model_api else []
        cmd += ["--log-config", str(c.ts_deploy / "log4j2.xml")] if c.quiet else []
        self.torchserve = subprocess.Popen(cmd, cwd=c.run_dir, env=self._env(), start_new_session=True)

    def start_gateway(self) -> None:
        c = self.config
        if self.gateway is not None:
            self._end(self.gateway, grace_s=0)
        self.gateway = subprocess.Popen(
            [sys.executable, "-m", "galore_gateway", "--listen", f"{HOST}:{c.ports.grpc}",
             "--metrics-port", str(c.ports.gateway_metrics), "--ts-config", str(c.ts_config), "--model", c.model,
             "--backend", c.backend.value, "--kserve-grpc", f"{HOST}:{c.ports.ts_grpc}"]
            + (["--ts-key-file", str(c.run_dir / "key_file.json")] if c.token_auth else []),
            cwd=c.repo_root, env=self._env(), start_new_session=True)

    def supervise(self, stopping, backoff: Backoff = Backoff(), poll_s: float = 0.5, log=None) -> None:
        """Until ``stopping()`` is true: a process that exited is started again after ``backoff``.

        Each process has its own backoff, so a crash-looping backend does not delay the gateway's restart; the
        gateway keeps answering (UNAVAILABLE, health NOT_SERVING) while the backend is away."""
        log = log or (lambda line: print(f"galore: {line}", file=sys.stderr, flush=True))
        starters = {self.backend_name: self.start_backend, "gateway": self.start_gateway}
        started = {name: time.monotonic() for name in starters}
        in_a_row = dict.fromkeys(starters, 0)
        due: dict[str, float] = {}
        while not stopping():
            now = time.monotonic()
            for name, start in starters.items():
                proc = getattr(self, name)
                if name in due:
                    if now >= due[name]:
                        del due[name]
                        start()
                        started[name] = time.monotonic()
                        log(f"{name} started again (pid {getattr(self, name).pid})")
                elif proc.poll() is not None:
                    if now - started[name] >= backoff.reset_after_s:
                        in_a_row[name] = 0
                    delay = backoff.delay(in_a_row[name])
                    in_a_row[name] += 1
                    due[name] = now + delay
                    log(f"{name} exited with code {proc.returncode}; restarting in {delay:.1f} s")
            time.sleep(poll_s)

    def wait_serving(self, timeout_s: float = 300.0) -> None:
        """Blocks until the gateway's health check says SERVING; raises if a process exits or time runs out."""
        deadline = time.monotonic() + timeout_s
        with grpc.insecure_channel(f"{HOST}:{self.config.ports.grpc}") as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                for name, proc in ((self.backend_name, self.backend), ("gateway", self.gateway)):
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {proc.returncode}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == \
                            health_pb2.HealthCheckResponse.SERVING:
                        return
                except grpc.RpcError:
                    pass
                time.sleep(0.5)
        raise TimeoutError(f"service not SERVING after {timeout_s:.0f} s")

    @staticmethod
    def _end(proc: subprocess.Popen | None, grace_s: float) -> None:
        if proc is None or proc.poll() is not None and not _group_alive(proc.pid):
            return
        _signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        deadline = time.monotonic() + grace_s
        while _group_alive(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _group_alive(proc.pid):
            _signal_group(proc.pid, signal.SIGKILL)
        proc.wait()

    def stop(self, grace_s: float = 20.0) -> None:
        """Gateway first (drains its RPCs), then the backend (TorchServe and its workers, or the KServe host)."""
        self._end(self.gateway, grace_s)
        self._end(self.backend, grace_s)

    def __enter__(self) -> "LocalService":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1 (held open together so they differ), for tests and benchmarks
    that start their own deployment."""
    sockets = []
    try:
        for _ in range(count):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except ProcessLookupError:
        pass


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def main(argv=None) -> None:
    d = Ports()
    parser = argparse.ArgumentParser(prog="python -m galore_supervisor", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo-root", type=Path, default=REPO_ROOT,
                        help=f"the galore-serve checkout: deploy/torchserve/ and the code the processes run "
                             f"(default {REPO_ROOT})")
    parser.add_argument("--model-store", type=Path, help="folder of <model>.mar (default REPO_ROOT/model_store)")
    parser.add_argument("--run-dir", type=Path, help="config, logs and temp files (default REPO_ROOT/.run)")
    parser.add_argument("--model", default=DEFAULT_MODEL, help="archive <model>.mar in --model-store")
    for name, default in d.__dict__.items():
        flag = {"grpc": "grpc-port", "gateway_metrics": "gateway-metrics-port", "rest": "rest-port",
                "management": "management-port", "metrics": "metrics-port", "ts_grpc": "ts-grpc-port",
                "ts_grpc_management": "ts-grpc-management-port"}[name]
        parser.add_argument(f"--{flag}", dest=name, type=int, default=default)
    parser.add_argument("--enable-token-auth", action="store_true", help="TorchServe token authorization on")
    parser.add_argument("--enable-model-api", action="store_true", help="TorchServe model (un)registration API on")
    parser.add_argument("--verbose", action="store_true",
                        help="TorchServe's default (verbose) logging; the KServe host's per-request logs")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default=Backend.TORCHSERVE.value,
                        help="the host behind the gateway: torchserve (default) or kserve (galore_kserve)")
    args = parser.parse_args(argv)
    ports = Ports(**{name: getattr(args, name) for name in d.__dict__})
    root = args.repo_root.resolve()
    config = LocalConfig(model_store=args.model_store or root / "model_store",
                         run_dir=(args.run_dir or root / ".run").resolve(), model=args.model, ports=ports,
                         token_auth=args.enable_token_auth, model_api=args.enable_model_api,
                         quiet=not args.verbose, backend=Backend(args.backend), repo_root=root)
    service = LocalService(config)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    signal.signal(signal.SIGINT, lambda *_: stopping.append(True))
    service.start()
    if config.backend is Backend.KSERVE:
        print(f"galore: gRPC Explain on {HOST}:{ports.grpc}, KServe v1 REST {config.rest_url}, OIP v2 REST "
              f"http://{HOST}:{ports.rest}/v2/models/{args.model}/infer and gRPC {HOST}:{ports.ts_grpc}, metrics "
              f":{ports.gateway_metrics} (gateway) {config.worker_metrics_url} (KServe). Ctrl-C stops.", flush=True)
    else:
        print(f"galore: gRPC Explain on {HOST}:{ports.grpc}, REST {config.rest_url}, "
              f"metrics :{ports.gateway_metrics} (gateway) :{ports.metrics} (TorchServe). Ctrl-C stops.", flush=True)
    try:
        service.supervise(lambda: bool(stopping))
    finally:
        service.stop()

