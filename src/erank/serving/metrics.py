"""Prometheus metrics of the HTTP service, in a registry of their own (one per app)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from erank.errors import require

__all__ = ["ServeMetrics"]

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """Requests, latency, documents, tokens, queue depth, batch sizes and errors by kind."""

    def __init__(self) -> None:
        prom: Any = require("prometheus_client", "serve", "the /metrics endpoint")
        self._prom = prom
        self.registry = prom.CollectorRegistry()
        r = self.registry
        self.requests = prom.Counter(
            "erank_requests_total", "HTTP requests by endpoint and status", ["endpoint", "status"], registry=r
        )
        self.latency = prom.Histogram(
            "erank_request_latency_seconds",
            "HTTP request latency by endpoint",
            ["endpoint"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.documents = prom.Counter("erank_documents_total", "documents scored", ["endpoint"], registry=r)
        self.truncated = prom.Counter(
            "erank_truncated_documents_total", "documents cut to max_tokens_per_doc", registry=r
        )
        self.prompt_tokens = prom.Counter(
            "erank_prompt_tokens_total", "prompt tokens sent to the model", registry=r
        )
        self.generated_tokens = prom.Counter(
            "erank_generated_tokens_total", "tokens generated (reasoning mode)", registry=r
        )
        self.queue_depth = prom.Gauge("erank_queue_depth", "requests waiting or being scored", registry=r)
        self.queue_pairs = prom.Gauge("erank_queue_pairs", "pairs waiting for the model", registry=r)
        self.batch_pairs = prom.Histogram(
            "erank_batch_pairs", "pairs per model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_requests = prom.Histogram(
            "erank_batch_requests", "requests sharing one model call", buckets=_BATCH_BUCKETS, registry=r
        )
        self.batch_seconds = prom.Histogram(
            "erank_batch_seconds", "seconds per model call", buckets=_LATENCY_BUCKETS, registry=r
        )
        self.errors = prom.Counter("erank_errors_total", "errors by kind", ["kind"], registry=r)
        self.ready = prom.Gauge("erank_model_ready", "1 when the model is loaded", registry=r)

    def track_queue(self, depth: Callable[[], float], pairs: Callable[[], float]) -> None:
        self.queue_depth.set_function(depth)
        self.queue_pairs.set_function(pairs)

    def observe_batch(self, pairs: int, requests: int, seconds: float) -> None:
        self.batch_pairs.observe(pairs)
        self.batch_requests.observe(requests)
        self.batch_seconds.observe(seconds)

    def render(self) -> tuple[bytes, str]:
        return self._prom.generate_latest(self.registry), self._prom.CONTENT_TYPE_LATEST
