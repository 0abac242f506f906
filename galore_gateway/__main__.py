"""``python -m galore_gateway``: the galore.v1.Explainer gRPC gateway in front of TorchServe or the KServe host."""
from __future__ import annotations

import argparse
import asyncio
import logging

from prometheus_client import start_http_server

from .config import Backend, GatewayConfig

DEFAULTS = GatewayConfig()
from .metrics import REGISTRY
from .server import serve


def parse_args(argv=None) -> GatewayConfig:
    parser = argparse.ArgumentParser(prog="python -m galore_gateway", description=__doc__)
    parser.add_argument("--listen", default=DEFAULTS.listen, help=f"gRPC address to serve (default {DEFAULTS.listen})")
    parser.add_argument("--metrics-port", type=int, default=DEFAULTS.metrics_port,
                        help=f"Prometheus /metrics port; 0: off (default {DEFAULTS.metrics_port})")
    parser.add_argument("--metrics-host", default=DEFAULTS.metrics_host,
                        help="address /metrics listens on (0.0.0.0 in a pod, so Prometheus can scrape it)")
    parser.add_argument("--backend", choices=[b.value for b in Backend], default=DEFAULTS.backend.value,
                        help=f"the host behind the gateway (default {DEFAULTS.backend.value})")
    parser.add_argument("--kserve-grpc", help=f"KServe host OIP gRPC host:port (default {DEFAULTS.kserve_grpc})")
    parser.add_argument("--ts-config", help="TorchServe config.properties: gRPC ports and size limits")
    parser.add_argument("--torchserve-inference",
                        help=f"TorchServe gRPC inference host:port (default {DEFAULTS.torchserve_inference})")
    parser.add_argument("--torchserve-management",
                        help=f"TorchServe gRPC management host:port (default {DEFAULTS.torchserve_management})")
    parser.add_argument("--model", default=DEFAULTS.model, help=f"the backend's model name (default {DEFAULTS.model})")
    parser.add_argument("--ts-key-file", help="TorchServe key_file.json, when TorchServe token auth is on")
    parser.add_argument("--default-timeout", type=float, default=DEFAULTS.default_timeout_s,
                        help=f"seconds, when the caller sets none (default {DEFAULTS.default_timeout_s:g})")
    parser.add_argument("--max-inflight", type=int,
                        help="Explain calls forwarded at once; more are refused as overloaded (UNAVAILABLE). "
                             "Default: 3/4 of --ts-config's job_queue_size, else 48")
    args = parser.parse_args(argv)
    overrides = dict(listen=args.listen, metrics_host=args.metrics_host, metrics_port=args.metrics_port,
                     model=args.model, default_timeout_s=args.default_timeout, max_inflight=args.max_inflight,
                     torchserve_inference=args.torchserve_inference, torchserve_management=args.torchserve_management,
                     torchserve_key_file=args.ts_key_file, backend=Backend(args.backend),
                     kserve_grpc=args.kserve_grpc)
    if args.ts_config:
        return GatewayConfig.with_torchserve_config(args.ts_config, **overrides)
    return GatewayConfig(**{k: v for k, v in overrides.items() if v is not None})


def main(argv=None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s gateway %(levelname)s %(message)s")
    config = parse_args(argv)
    if config.metrics_port:
        start_http_server(config.metrics_port, addr=config.metrics_host, registry=REGISTRY)
    asyncio.run(serve(config))


if __name__ == "__main__":
    main()
