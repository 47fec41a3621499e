"""``erank serve``: run the HTTP rerank service.

    erank serve --model smollm2-135m --mode direct --host 127.0.0.1 --port 8000

Every option can also come from an ``ERANK_*`` environment variable (``ERANK_MAX_QUEUE=64``);
options given on the command line win. SIGTERM stops accepting connections, finishes the
requests in flight and exits with status 0.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from typing import Any

from erank.errors import require
from erank.serving.settings import ServeSettings, is_loopback

__all__ = ["register", "run_server", "settings_from_args", "exposure_warnings"]

logger = logging.getLogger(__name__)


def register(subparsers: Any) -> None:
    """Add the ``serve`` subcommand."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "serve",
        help="run the HTTP rerank service (Cohere/Jina, TEI and erank endpoints)",
        description="Run the HTTP rerank service. Options default to ERANK_* environment variables, "
        "then to the defaults shown.",
    )
    d = ServeSettings()
    p.add_argument(
        "--model", default=None, help="hub id, model folder or .gguf file (default: the embedded model)"
    )
    p.add_argument("--mode", choices=["direct", "reasoning"], default=None, help="ERank mode")
    p.add_argument("--engine", default=None, help=f"engine name (default {d.engine})")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1... (default: CUDA when available)")
    p.add_argument(
        "--batch-tokens", type=int, default=None, help="the engine's token budget per forward pass"
    )
    p.add_argument("--served-model-name", default=None, help="the name /v1/models and responses report")
    p.add_argument("--host", default=None, help=f"address to listen on (default {d.host})")
    p.add_argument("--port", type=int, default=None, help=f"port (default {d.port})")
    p.add_argument("--max-documents", type=int, default=None, help=f"413 beyond (default {d.max_documents})")
    p.add_argument(
        "--max-tokens-per-doc",
        type=int,
        default=None,
        help=f"documents are cut to this (default {d.max_tokens_per_doc})",
    )
    p.add_argument(
        "--max-body-bytes", type=int, default=None, help=f"413 beyond (default {d.max_body_bytes})"
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=None,
        help=f"requests waiting or running; 429 beyond (default {d.max_queue})",
    )
    p.add_argument(
        "--max-batch-pairs",
        type=int,
        default=None,
        help=f"pairs per model call (default {d.max_batch_pairs})",
    )
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=None,
        help=f"wait for more pairs before a call (default {d.max_wait_ms})",
    )
    p.add_argument(
        "--no-cross-batching",
        dest="cross_batching",
        action="store_const",
        const=False,
        default=None,
        help="score one request per model call (for comparison)",
    )
    p.add_argument(
        "--request-timeout",
        dest="request_timeout_s",
        type=float,
        default=None,
        help="504 after this many seconds",
    )
    p.add_argument("--instruction", default=None, help="default task instruction (name or text)")
    p.add_argument("--log-level", default=None, help="uvicorn log level (default info)")
    p.add_argument(
        "--max-instruction-tokens",
        type=int,
        default=None,
        help=f"a request's instruction is cut to this, and the answer says so (default {d.max_instruction_tokens})",
    )
    p.add_argument(
        "--max-request-tokens",
        type=int,
        default=None,
        help=f"prompt tokens of one request; 413 beyond (default {d.max_request_tokens})",
    )
    p.add_argument(
        "--max-batch-tokens",
        type=int,
        default=None,
        help="prompt tokens per model call (default: the engine's --batch-tokens)",
    )
    p.add_argument(
        "--api-key",
        default=None,
        help="require this key (Authorization: Bearer KEY); prefer ERANK_API_KEY or --api-key-file, "
        "which other users of the machine cannot see",
    )
    p.add_argument("--api-key-file", default=None, help="a file of accepted keys, one a line")
    p.add_argument(
        "--allowed-hosts",
        default=None,
        help="comma-separated Host names answered, or '*' (default: loopback names on a loopback bind, else any)",
    )
    p.add_argument(
        "--allow-any-model",
        action="store_const",
        const=True,
        default=None,
        help="accept any model name in requests (default: 404 for names of other models)",
    )
    p.add_argument(
        "--model-alias", dest="model_aliases", default=None, help="comma-separated extra model names"
    )
    p.add_argument(
        "--body-timeout",
        dest="body_timeout_s",
        type=float,
        default=None,
        help=f"408 when a body takes longer to arrive (default {d.body_timeout_s:g} s)",
    )
    p.add_argument(
        "--idle-timeout",
        dest="idle_timeout_s",
        type=float,
        default=None,
        help=f"close connections silent this long (default {d.idle_timeout_s:g} s)",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help=f"open connections; 503 beyond (default {d.max_connections})",
    )
    p.add_argument(
        "--docs",
        action="store_const",
        const=True,
        default=None,
        help="serve Swagger UI at /docs (its assets load from a CDN)",
    )
    p.set_defaults(func=_run)


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    """Defaults < ``ERANK_*`` environment < command-line options."""
    names = [
        "model",
        "mode",
        "engine",
        "device",
        "batch_tokens",
        "served_model_name",
        "host",
        "port",
        "max_documents",
        "max_tokens_per_doc",
        "max_body_bytes",
        "max_queue",
        "max_batch_pairs",
        "max_wait_ms",
        "cross_batching",
        "request_timeout_s",
        "instruction",
        "log_level",
        "max_instruction_tokens",
        "max_request_tokens",
        "max_batch_tokens",
        "api_key",
        "api_key_file",
        "allowed_hosts",
        "allow_any_model",
        "model_aliases",
        "body_timeout_s",
        "idle_timeout_s",
        "max_connections",
        "docs",
    ]
    return ServeSettings.from_env(**{n: getattr(args, n, None) for n in names})


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


def run_server(settings: ServeSettings, reranker: Any = None) -> int:
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
        from erank.reranker import Reranker

        logger.info("loading model %s", settings.model or "(embedded default)")
        reranker = Reranker(
            settings.model,
            engine=settings.engine,
            mode=settings.mode,
            device=settings.device,
            batch_tokens=settings.batch_tokens,
        )
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
