"""Prometheus helpers shared by trainer and evaluator.

Each process gets its own registry (so tests can build metrics more than once) served on a
port of its choosing. Names start with `finetune_`, values are in base units, counters end
in `_total` (prometheus_client adds the suffix), and the only label is the run's name.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, start_http_server

from common.cli import UserError

PREFIX = "finetune_"
# Seconds, from a fast GPU step to a slow CPU step or checkpoint upload.
DURATION_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


def new_registry() -> CollectorRegistry:
    return CollectorRegistry(auto_describe=True)


def serve(port: int, registry: CollectorRegistry, addr: str = "0.0.0.0") -> None:
    """Serve /metrics on port in a daemon thread, or fail with one sentence."""
    try:
        start_http_server(port, addr=addr, registry=registry)
    except OSError as exc:
        raise UserError(
            f"cannot serve metrics on port {port}: {exc.strerror or exc}; pick another "
            "--metrics-port."
        ) from exc
