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
from erank.serving.settings import ServeSettings

__all__ = ["register", "run_server", "settings_from_args"]

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
    ]
    return ServeSettings.from_env(**{n: getattr(args, n, None) for n in names})


def _run(args: argparse.Namespace) -> int:
    return run_server(settings_from_args(args))


def _ignore_signal(signum: int, frame: Any) -> None:
    logger.debug("signal %d after shutdown ignored", signum)


def run_server(settings: ServeSettings, reranker: Any = None) -> int:
    """Serve until SIGTERM or SIGINT; in-flight requests finish first. Returns 0 after a clean stop."""
    uvicorn: Any = require("uvicorn", "serve", "the HTTP server")
    from erank.serving.app import create_app

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
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        lifespan="on",
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    server = uvicorn.Server(config)
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
