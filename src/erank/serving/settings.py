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
import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from erank.commands.options import DEFAULT_TRUNCATE_LENGTH
from erank.errors import InputError

__all__ = ["ServeSettings", "ENV_PREFIX", "is_loopback"]

ENV_PREFIX = "ERANK_"


@dataclass
class ServeSettings:
    """What ``erank serve`` runs and the limits it enforces.

    Attributes:
        model: a hub id, a model folder, a ``.gguf`` file, or ``None`` for the embedded default.
        method: the ranking method (``erank``, ``yesno``...; see ``erank.methods``).
        mode: ERank mode, ``direct`` or ``reasoning`` (default: the reranker's default).
        max_new_tokens: the generation budget of reasoning mode (default: the method's own).
        engine: the engine name (``transformers``...).
        device: ``cpu``, ``cuda``...; default: CUDA when available.
        threads: torch CPU threads (default: torch's own choice).
        batch_tokens: the engine's token budget per forward pass.
        served_model_name: the name reported by ``/v1/models`` and in responses.
        host, port: where to listen.
        max_documents: more documents in one request get a 413.
        max_tokens_per_doc: documents (and the query) are cut to this many tokens; a request may
            ask for fewer, never more. The command line's ``--truncate-length``, with the same
            default as every other command.
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
        max_instruction_tokens: a request's ``instruction`` is cut to this many tokens, and the
            response says so (``meta.warnings``, ``/score``'s ``warnings``, TEI's
            ``X-Erank-Instruction-Truncated`` header). The server's own default is not cut.
        max_request_tokens: the prompt tokens of one request (all its pairs) at most; beyond,
            a 413 before any of it reaches the model.
        max_batch_tokens: prompt tokens per model call at most (``None``: the engine's own
            forward-pass budget, ``batch_tokens``). A model call is the unit nothing can
            interrupt: a request behind it waits for one call at most.
        api_key: a key every request but ``/health`` and ``/ready`` must bring (``Authorization:
            Bearer KEY``); several keys separated by commas.
        api_key_file: a file of keys, one a line (``#`` comments and blank lines skipped).
        allowed_hosts: comma-separated ``Host`` names the server answers (``*``: any). Default:
            the loopback names when it listens on a loopback address, any otherwise.
        allow_any_model: accept any ``model`` name in a request (default: only the served
            model's names, see :attr:`model_aliases`; others get a 404).
        model_aliases: comma-separated extra names a request's ``model`` may give.
        body_timeout_s: the whole request body must arrive within this many seconds (408 then).
        idle_timeout_s: a connection that sends nothing (before its first request, while
            sending headers, or between requests) for this long is closed.
        max_connections: open connections at most; one more is answered 503 and closed.
        docs: serve Swagger UI at ``/docs`` (off by default; its assets come from a CDN).
    """

    model: str | None = None
    method: str = "erank"
    mode: str | None = None
    max_new_tokens: int | None = None
    engine: str = "transformers"
    device: str | None = None
    threads: int | None = None
    batch_tokens: int | None = None
    served_model_name: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    max_documents: int = 1000
    max_tokens_per_doc: int = DEFAULT_TRUNCATE_LENGTH
    max_body_bytes: int = 32 * 1024 * 1024
    max_queue: int = 256
    max_batch_pairs: int = 64
    max_wait_ms: float = 5.0
    cross_batching: bool = True
    request_timeout_s: float = 120.0
    retry_after_s: int = 1
    instruction: str | None = None
    log_level: str = "info"
    max_instruction_tokens: int = 256
    max_request_tokens: int = 262_144
    max_batch_tokens: int | None = None
    api_key: str | None = None
    api_key_file: str | None = None
    allowed_hosts: str | None = None
    allow_any_model: bool = False
    model_aliases: str | None = None
    body_timeout_s: float = 10.0
    idle_timeout_s: float = 5.0
    max_connections: int = 1024
    docs: bool = False

    def __post_init__(self) -> None:
        positive = (
            "max_documents",
            "max_tokens_per_doc",
            "max_body_bytes",
            "max_queue",
            "max_batch_pairs",
            "max_instruction_tokens",
            "max_request_tokens",
            "max_connections",
        )
        for name in positive:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        for name in ("max_batch_tokens", "max_new_tokens", "threads", "batch_tokens"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value <= 0):
                raise InputError(f"{name} must be a positive integer, got {value!r}")
        if self.max_wait_ms < 0:
            raise InputError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        for name in ("request_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if getattr(self, name) <= 0:
                raise InputError(f"{name} must be positive, got {getattr(self, name)}")
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
        """The settings, with API keys masked (safe to log)."""
        values = dataclasses.asdict(self)
        if values["api_key"]:
            values["api_key"] = "***"
        return values

    def api_keys(self) -> list[str]:
        """Every accepted key: ``api_key`` (comma-separated) and the lines of ``api_key_file``."""
        keys = [k.strip() for k in (self.api_key or "").split(",") if k.strip()]
        if self.api_key_file:
            path = Path(self.api_key_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
            except OSError as exc:
                raise InputError(f"cannot read the API key file {path}: {exc.strerror or exc}") from None
            lines = [line.strip() for line in text.splitlines()]
            keys += [line for line in lines if line and not line.startswith("#")]
            if not keys:
                raise InputError(f"the API key file {path} holds no key (one key a line)")
        return keys

    def host_allow_list(self) -> frozenset[str] | None:
        """``Host`` names answered (lower case, no port); ``None``: any."""
        if self.allowed_hosts is not None and self.allowed_hosts.strip():
            names = {h.strip().lower() for h in self.allowed_hosts.split(",") if h.strip()}
            return None if "*" in names else frozenset(names)
        if is_loopback(self.host):
            return frozenset({"localhost", "127.0.0.1", "::1", "[::1]", self.host.lower()})
        return None

    def load_reranker(self) -> Any:
        """The :class:`~erank.reranker.Reranker` these settings describe (this loads the model)."""
        from erank.commands.options import reranker_from

        if self.threads:
            import torch

            torch.set_num_threads(self.threads)
        return reranker_from(self, batch_tokens=self.batch_tokens)

    def model_names(self) -> list[str]:
        """Extra names a request's ``model`` may give (``model_aliases``)."""
        return [n.strip() for n in (self.model_aliases or "").split(",") if n.strip()]


def is_loopback(host: str) -> bool:
    """``True`` for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


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
