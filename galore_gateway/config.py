"""Gateway settings, parsed once from the command line and TorchServe's config.properties; the backend is
TorchServe or the KServe host (galore_kserve), one module each (torchserve.py, kserve.py)."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

from galore.options import DEFAULT_MODEL
from galore_wire.contract import DEFAULT_GRPC_ADDRESS, DEFAULT_PORTS, DEFAULT_TIMEOUT_S, HOST, KSERVE_PORTS

TORCHSERVE_DEFAULT_MAX_BYTES = 6553500  # TorchServe's default max_request_size / max_response_size
ENVELOPE_BYTES = 4096  # room for the PredictionsRequest wrapper around the caller's bytes
INFLIGHT_SHARE_OF_QUEUE = 3  # quarters of TorchServe's job_queue_size the gateway may fill


class Backend(enum.Enum):
    """Which host runs the handler: TorchServe (the default) or the KServe host."""

    TORCHSERVE = "torchserve"
    KSERVE = "kserve"


def read_properties(path: str | Path) -> dict[str, str]:
    """Java .properties subset TorchServe uses: ``key=value`` lines, ``#`` comments."""
    values = {}
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line and not line.startswith(("#", "!")) and "=" in line:
            key, value = line.split("=", 1)
            values[key.strip()] = value.strip()
    return values


@dataclass(frozen=True)
class GatewayConfig:
    """listen: gRPC address served; metrics_port: Prometheus /metrics on 127.0.0.1 (0 = off).

    backend: TorchServe (torchserve_* addresses) or the KServe host (kserve_grpc, its OIP v2 gRPC address).
    Byte limits follow TorchServe's max_request_size / max_response_size so both hops accept the same sizes (with
    either backend: local.py passes the same config.properties).
    default_timeout_s: deadline for the TorchServe call when the caller sets none.
    max_inflight: Explain calls the gateway forwards at once. Read from TorchServe's config it is 3/4 of
    job_queue_size, so gRPC overload is shed here (before the request reaches TorchServe) and REST overload by
    TorchServe's full queue (503).
    """

    listen: str = DEFAULT_GRPC_ADDRESS
    backend: Backend = Backend.TORCHSERVE
    kserve_grpc: str = f"{HOST}:{KSERVE_PORTS.grpc}"  # the KServe host's OIP v2 gRPC address (backend kserve)
    metrics_host: str = HOST
    metrics_port: int = DEFAULT_PORTS.gateway_metrics
    torchserve_inference: str = f"{HOST}:{DEFAULT_PORTS.ts_grpc}"
    torchserve_management: str = f"{HOST}:{DEFAULT_PORTS.ts_grpc_management}"
    model: str = DEFAULT_MODEL
    torchserve_key_file: str | None = None  # TorchServe's key_file.json when its token authorization is on
    max_request_bytes: int = TORCHSERVE_DEFAULT_MAX_BYTES
    max_response_bytes: int = TORCHSERVE_DEFAULT_MAX_BYTES
    default_timeout_s: float = DEFAULT_TIMEOUT_S
    health_poll_s: float = 1.0
    shutdown_grace_s: float = 10.0
    max_inflight: int = 48  # Explain calls forwarded at once; more are shed with UNAVAILABLE (overloaded)

    def __post_init__(self):
        if self.max_request_bytes <= ENVELOPE_BYTES or self.max_response_bytes <= ENVELOPE_BYTES:
            raise ValueError(f"max_request_bytes and max_response_bytes must exceed {ENVELOPE_BYTES}")
        if self.default_timeout_s <= 0 or self.health_poll_s <= 0 or self.shutdown_grace_s < 0:
            raise ValueError("timeouts must be positive")
        if not isinstance(self.backend, Backend):
            object.__setattr__(self, "backend", Backend(self.backend))
        if self.max_inflight < 1:
            raise ValueError(f"max_inflight must be >= 1, got {self.max_inflight}")

    @property
    def caller_max_request_bytes(self) -> int:
        """Largest ExplainRequest the gateway accepts: TorchServe's limit minus the envelope."""
        return self.max_request_bytes - ENVELOPE_BYTES

    @classmethod
    def with_torchserve_config(cls, path: str | Path, **overrides) -> "GatewayConfig":
        """Takes the TorchServe addresses and size limits from its config.properties, then ``overrides``."""
        props = read_properties(path)
        values = {}
        ports = {"inference": DEFAULT_PORTS.ts_grpc, "management": DEFAULT_PORTS.ts_grpc_management}
        for kind, default_port in ports.items():
            host = props.get(f"grpc_{kind}_address", HOST)
            values[f"torchserve_{kind}"] = f"{host}:{props.get(f'grpc_{kind}_port', default_port)}"
        if "max_request_size" in props:
            values["max_request_bytes"] = int(props["max_request_size"])
        if "max_response_size" in props:
            values["max_response_bytes"] = int(props["max_response_size"])
        if "job_queue_size" in props:
            values["max_inflight"] = max(1, int(props["job_queue_size"]) * INFLIGHT_SHARE_OF_QUEUE // 4)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
