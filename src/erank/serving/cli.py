"""``erank serve``: run the HTTP rerank service.

    erank serve --model smollm2-135m --mode direct --host 127.0.0.1 --port 8000

The options other commands have too (``--model``, ``--engine``, ``--method``, ``--mode``,
``--instruction``, ``--truncate-length``, ``--device``, ``--threads``...) come from
:mod:`erank.commands.options`: the same names, help and checks. Every option can also come from
an ``ERANK_*`` environment variable (``ERANK_MAX_QUEUE=64``); options given on the command line
win. SIGTERM stops accepting connections, finishes the requests in flight and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any

from erank.commands import options
from erank.errors import InputError, require
from erank.serving.settings import ServeSettings, is_loopback

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = ["register", "run_server", "settings_from_args", "exposure_warnings"]

logger = logging.getLogger(__name__)


#: ``erank serve``'s own options: (flag, :class:`ServeSettings` field, type, help). The default in
#: the help is the field's default; every option is ``None`` (not given) unless written, so that
#: an ``ERANK_*`` variable can set it instead.
_OWN_OPTIONS: list[tuple[str, str, Callable[[str], Any], str]] = [
    (
        "--batch-tokens",
        "batch_tokens",
        options.positive_int,
        "the engine's token budget per forward pass; default the engine's",
    ),
    (
        "--served-model-name",
        "served_model_name",
        str,
        "the name /v1/models and responses report; default the model's",
    ),
    ("--host", "host", str, "address to listen on"),
    ("--port", "port", options.positive_int, "port"),
    ("--max-documents", "max_documents", options.positive_int, "documents in one request; 413 beyond"),
    ("--max-body-bytes", "max_body_bytes", options.positive_int, "request body size; 413 beyond"),
    ("--max-queue", "max_queue", options.positive_int, "requests waiting or running; 429 beyond"),
    ("--max-batch-pairs", "max_batch_pairs", options.positive_int, "pairs per model call"),
    ("--max-wait-ms", "max_wait_ms", float, "wait for more pairs before a model call, in ms"),
    ("--request-timeout", "request_timeout_s", float, "504 after this many seconds"),
    ("--log-level", "log_level", str, "uvicorn log level"),
    (
        "--max-instruction-tokens",
        "max_instruction_tokens",
        options.positive_int,
        "a request's instruction is cut to this, and the answer says so",
    ),
    (
        "--max-request-tokens",
        "max_request_tokens",
        options.positive_int,
        "prompt tokens of one request; 413 beyond",
    ),
    (
        "--max-batch-tokens",
        "max_batch_tokens",
        options.positive_int,
        "prompt tokens per model call; default the engine's --batch-tokens",
    ),
    (
        "--api-key",
        "api_key",
        str,
        "require this key (Authorization: Bearer KEY); prefer ERANK_API_KEY or --api-key-file, "
        "which other users of the machine cannot see",
    ),
    ("--api-key-file", "api_key_file", str, "a file of accepted keys, one a line"),
    (
        "--allowed-hosts",
        "allowed_hosts",
        str,
        "comma-separated Host names answered, or '*'; default loopback names on a loopback bind, else any",
    ),
    ("--model-alias", "model_aliases", str, "comma-separated extra model names"),
    ("--body-timeout", "body_timeout_s", float, "408 when a body takes longer to arrive, in seconds"),
    ("--idle-timeout", "idle_timeout_s", float, "close connections silent this long, in seconds"),
    ("--max-connections", "max_connections", options.positive_int, "open connections; 503 beyond"),
]

#: On/off options: (flag, field, the value the flag sets, help).
_SWITCHES: list[tuple[str, str, bool, str]] = [
    ("--no-cross-batching", "cross_batching", False, "score one request per model call (for comparison)"),
    (
        "--allow-any-model",
        "allow_any_model",
        True,
        "accept any model name in requests (by default a name of another model is a 404)",
    ),
    ("--swagger-ui", "docs", True, "serve Swagger UI at /docs (its assets load from a CDN)"),
]

#: The shared options (erank.commands.options) whose default here comes from ServeSettings via
#: ERANK_* first: argparse leaves them None when not given.
_SHARED_FROM_ENV = ("engine", "method", "truncate_length")


def _default_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    p = options.add_command(
        subparsers,
        "serve",
        "run the HTTP rerank service (Cohere/Jina, TEI and erank endpoints)",
        "Run the HTTP rerank service. Options default to ERANK_* environment variables, "
        "then to the defaults shown.",
    )
    options.add_model_options(p)
    options.add_instruction(p)
    options.add_truncate_length(p)
    options.add_alias(p, "--max-tokens-per-doc", new="--truncate-length")
    options.add_runtime_options(p)
    d = ServeSettings()
    for flag, field, kind, text in _OWN_OPTIONS:
        default = getattr(d, field)
        shown = text if default is None or "default" in text else f"{text} (default {_default_text(default)})"
        p.add_argument(flag, dest=field, type=kind, default=None, help=shown)
    for flag, field, value, text in _SWITCHES:
        p.add_argument(flag, dest=field, action="store_const", const=value, default=None, help=text)
    # --docs is the documents file in rerank: here it was Swagger UI
    p.add_argument(
        "--docs", dest="docs", action=options.DeprecatedAlias, nargs=0, const=True, use="--swagger-ui"
    )
    p.set_defaults(func=_run, **dict.fromkeys(_SHARED_FROM_ENV))
    options.add_check(p, _resolve)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Defaults < ``ERANK_*`` environment < command-line options."""
    given = {f.name: getattr(args, f.name, None) for f in fields(ServeSettings)}
    given["max_tokens_per_doc"] = getattr(args, "truncate_length", None)
    return ServeSettings.from_env(**given)


def _resolve(args: argparse.Namespace) -> None:
    """The preflight check of ``erank serve``: the settings (defaults, ``ERANK_*``, options) are
    resolved and checked, and written back to ``args``, so that the shared checks that follow
    (engine, method arguments, instruction, model) see what the server will load."""
    from erank.engines import ENGINES

    s = settings_from_args(args)
    if s.engine not in ENGINES:
        raise InputError(f"unknown engine {s.engine!r} (ERANK_ENGINE); one of: {', '.join(sorted(ENGINES))}")
    for f in fields(ServeSettings):
        if hasattr(args, f.name):
            setattr(args, f.name, getattr(s, f.name))
    args.truncate_length = s.max_tokens_per_doc


def _run(args: argparse.Namespace) -> int:
    return run_server(settings_from_args(args))


def _ignore_signal(signum: int, frame: Any) -> None:
    logger.debug("signal %d after shutdown ignored", signum)


def exposure_warnings(settings: ServeSettings) -> list[str]:
    """What is risky about where and how the server listens (logged as warnings at start)."""
    out = []
    if not is_loopback(settings.host) and not settings.api_keys():
        out.append(
            f"listening on {settings.host}, which is not a loopback address, without an API key: anyone who "
            "can reach this port can use the model; set --api-key-file or ERANK_API_KEY"
        )
    if settings.api_key and settings.api_key_file is None:
        out.append("prefer ERANK_API_KEY or --api-key-file to --api-key: other users can read command lines")
    return out


def run_server(settings: ServeSettings, reranker: Reranker | None = None) -> int:
    """Serve until SIGTERM or SIGINT; in-flight requests finish first. Returns 0 after a clean stop."""
    require("uvicorn", "serve", "the HTTP server")
    from erank.serving.app import create_app
    from erank.serving.server import build_server

    settings.api_keys()  # an unreadable key file is an error before the model loads
    for message in exposure_warnings(settings):
        logger.warning(message)
    if reranker is None:
        # Load before listening: a model that cannot load is a clear error and exit status 2,
        # not a server that answers 503 forever.
        logger.info("loading model %s", settings.model or "(embedded default)")
        reranker = settings.load_reranker()
    app = create_app(settings, reranker)
    server = build_server(app)
    main = threading.current_thread() is threading.main_thread()
    # uvicorn re-raises the signal it caught once it has shut down gracefully; with this handler
    # installed beforehand (it is what uvicorn restores) that re-raise is harmless and we exit 0.
    previous = signal.signal(signal.SIGTERM, _ignore_signal) if main else None
    try:
        server.run()
    finally:
        if main and previous is not None:
            signal.signal(signal.SIGTERM, previous)
    logger.info("server stopped")
    return 0
