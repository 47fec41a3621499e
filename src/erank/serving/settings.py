"""Settings of the HTTP service, from arguments or ``ERANK_*`` environment variables.

Every field of :class:`ServeSettings` can be set with an environment variable named after it in
capitals with the prefix ``ERANK_`` (``ERANK_MAX_DOCUMENTS=500``, ``ERANK_MODE=direct``...).
Command-line options override the environment, which overrides the defaults.

>>> from erank.serving.settings import ServeSettings
>>> ServeSettings.from_env({"ERANK_MAX_QUEUE": "8"}).max_queue
8
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from erank.errors import InputError

__all__ = ["ServeSettings", "ENV_PREFIX"]

ENV_PREFIX = "ERANK_"


@dataclass
class ServeSettings:
    """What ``erank serve`` runs and the limits it enforces.

    Attributes:
        model: a hub id, a model folder, a ``.gguf`` file, or ``None`` for the embedded default.
        mode: ERank mode, ``direct`` or ``reasoning`` (default: the reranker's default).
        engine: the engine name (``transformers``...).
        device: ``cpu``, ``cuda``...; default: CUDA when available.
        batch_tokens: the engine's token budget per forward pass.
        served_model_name: the name reported by ``/v1/models`` and in responses.
        host, port: where to listen.
        max_documents: more documents in one request get a 413.
        max_tokens_per_doc: documents (and the query) are cut to this many tokens; a request may
            ask for fewer, never more.
        max_body_bytes: a larger request body gets a 413.
        max_queue: requests waiting or running at once; one more gets a 429 with ``Retry-After``.
        max_batch_pairs: at most this many (query, document) pairs per engine call.
        max_wait_ms: how long the batcher waits for more pairs before an engine call.
        cross_batching: batch pairs of concurrent requests together (``False``: one request per
            engine call, for comparison).
        request_timeout_s: a request that takes longer gets a 504 and its pending pairs are dropped.
        retry_after_s: the ``Retry-After`` value sent with a 429.
        instruction: the default task instruction (a name from ``instructions.yaml`` or text).
        log_level: uvicorn's log level.
    """

    model: str | None = None
    mode: str | None = None
    engine: str = "transformers"
    device: str | None = None
    batch_tokens: int | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_documents: int = 1000
    max_tokens_per_doc: int = 4096
    max_body_bytes: int = 32 * 1024 * 1024
    max_queue: int = 256
    max_batch_pairs: int = 64
    max_wait_ms: float = 5.0
    cross_batching: bool = True
    request_timeout_s: float = 120.0
    retry_after_s: int = 1
    instruction: str | None = None
    log_level: str = "info"

    def __post_init__(self) -> None:
        for name in ("max_documents", "max_tokens_per_doc", "max_body_bytes", "max_queue", "max_batch_pairs"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.request_timeout_s <= 0:
            raise InputError(f"request_timeout_s must be positive, got {self.request_timeout_s}")
        if not 0 < self.port < 65536:
            raise InputError(f"port must be within 1..65535, got {self.port}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Defaults, then ``ERANK_*`` variables, then ``overrides`` (those not ``None``)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(ENV_PREFIX + f.name.upper())
            if raw is not None and raw != "":
                values[f.name] = _convert(f, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _convert(f: dataclasses.Field[Any], raw: str) -> Any:
    kind = str(f.type)
    name = ENV_PREFIX + f.name.upper()
    try:
        if kind.startswith("bool"):
            low = raw.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError(raw)
        if kind.startswith("int"):
            return int(raw)
        if kind.startswith("float"):
            return float(raw)
    except ValueError:
        raise InputError(f"environment variable {name}={raw!r} is not a valid {kind.split(' ')[0]}") from None
    return raw
