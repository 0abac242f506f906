"""How the client retries a call the service could not take (UNAVAILABLE, HTTP 503): one policy, spoken in each
transport's own standard, so that the retries behave as every other gRPC or HTTP client's do.

- gRPC: the channel's service config (gRFC A6). ``retryPolicy`` retries UNAVAILABLE only (Explain has no side
  effects) with exponential backoff and gRPC's built-in jitter; ``retryThrottling`` is the retry budget (a token
  bucket per channel: each failed attempt costs a token, each success returns ``budget_ratio``; below half the
  tokens no call is retried, so a service that fails most calls is not stormed); a server's
  ``grpc-retry-pushback-ms`` trailer (the gateway's estimate of its queue) replaces the backoff of that retry.
- REST: urllib3's ``Retry`` on the session: HTTP 503 and refused connections are retried with jittered
  exponential backoff; a ``Retry-After`` header replaces the backoff of that retry.

The deadline of a gRPC call covers every attempt; a REST call's timeout applies to each attempt.

Example:
    >>> policy = RetryPolicy(retries=2, initial_backoff_s=0.1)
    >>> policy.grpc_service_config("galore.v1.Explainer")["methodConfig"][0]["retryPolicy"]["maxAttempts"]
    3
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from urllib3.util.retry import Retry

GRPC_MAX_ATTEMPTS = 5  # gRPC clamps retryPolicy.maxAttempts at 5 (gRFC A6): at most 4 retries
RETRYABLE_GRPC_CODES = ("UNAVAILABLE",)
RETRYABLE_HTTP_STATUSES = frozenset({503})  # the service's and TorchServe's "overloaded / not ready"


@dataclass(frozen=True)
class RetryPolicy:
    """``retries`` attempts after the first (0 to 4); the n-th retry waits about ``initial_backoff_s`` *
    ``multiplier`` ** (n - 1) seconds, at most ``max_backoff_s``, jittered; ``budget_tokens`` / ``budget_ratio``
    are gRPC's retryThrottling ``maxTokens`` / ``tokenRatio``."""

    retries: int = 3
    initial_backoff_s: float = 0.2
    max_backoff_s: float = 5.0
    multiplier: float = 2.0
    budget_tokens: int = 10
    budget_ratio: float = 0.1

    def __post_init__(self):
        if not isinstance(self.retries, int) or not 0 <= self.retries < GRPC_MAX_ATTEMPTS:
            raise ValueError(f"retries: must be an integer from 0 to {GRPC_MAX_ATTEMPTS - 1} (gRPC makes at most "
                             f"{GRPC_MAX_ATTEMPTS} attempts), got {self.retries!r}")
        if not self.initial_backoff_s > 0 or self.max_backoff_s < self.initial_backoff_s:
            raise ValueError(f"backoff: need 0 < backoff_s <= max_backoff_s, got {self.initial_backoff_s} and "
                             f"{self.max_backoff_s}")
        if self.multiplier < 1:
            raise ValueError(f"multiplier: must be >= 1, got {self.multiplier}")
        if not 1 <= self.budget_tokens <= 1000 or not 0 < self.budget_ratio <= self.budget_tokens:
            raise ValueError("retry budget: need 1 <= budget_tokens <= 1000 and 0 < budget_ratio <= budget_tokens")

    def grpc_service_config(self, service: str) -> dict:
        """The service config for every method of ``service`` (e.g. "galore.v1.Explainer")."""
        config: dict = {"methodConfig": [{"name": [{"service": service}]}]}
        if self.retries:
            config["methodConfig"][0]["retryPolicy"] = {
                "maxAttempts": self.retries + 1, "initialBackoff": f"{self.initial_backoff_s:.3f}s",
                "maxBackoff": f"{self.max_backoff_s:.3f}s", "backoffMultiplier": self.multiplier,
                "retryableStatusCodes": list(RETRYABLE_GRPC_CODES)}
            config["retryThrottling"] = {"maxTokens": self.budget_tokens, "tokenRatio": self.budget_ratio}
        return config

    def grpc_channel_options(self, service: str, max_message_bytes: int) -> list[tuple[str, object]]:
        """Channel arguments: the service config, and a retry buffer as large as the largest request (gRPC
        commits, i.e. stops retrying, a call whose request exceeds the per-call buffer: 256 KiB by default)."""
        return [("grpc.enable_retries", int(self.retries > 0)),
                ("grpc.service_config", json.dumps(self.grpc_service_config(service))),
                ("grpc.per_rpc_retry_buffer_size", max_message_bytes)]

    def http_retry(self) -> Retry:
        """urllib3's Retry: 503 and refused connections; retry n (n >= 2) waits ``initial_backoff_s`` *
        2 ** (n - 2) plus up to ``initial_backoff_s`` of jitter (the first: only the jitter), or ``Retry-After``."""
        return Retry(total=self.retries, connect=self.retries, read=0, status=self.retries, other=0,
                     allowed_methods=None, status_forcelist=RETRYABLE_HTTP_STATUSES,
                     backoff_factor=self.initial_backoff_s / 2, backoff_jitter=self.initial_backoff_s,
                     backoff_max=self.max_backoff_s, respect_retry_after_header=True, raise_on_status=False,
                     retry_after_max=int(max(1, self.max_backoff_s * 4)))


NO_RETRIES = RetryPolicy(retries=0)
