"""The HTTP rerank service: ``erank serve``.

Cohere (``/v1/rerank``, ``/v2/rerank``; Jina clients too), TEI (``/rerank``) and erank's own
``/score``, plus ``/health``, ``/ready``, ``/metrics`` and ``/v1/models``, over one model with a
cross-request micro-batching queue. Needs the ``serve`` extra (fastapi, uvicorn, prometheus-client).

>>> from erank.serving import ServeSettings, create_app          # doctest: +SKIP
>>> app = create_app(ServeSettings(mode="direct"))               # doctest: +SKIP
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from erank.serving.settings import ServeSettings

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = ["ServeSettings", "create_app", "serve"]


def create_app(settings: ServeSettings | None = None, reranker: Reranker | None = None) -> Any:
    """The ASGI application (see :func:`erank.serving.app.create_app`)."""
    from erank.serving.app import create_app as _create_app

    return _create_app(settings, reranker)


def serve(settings: ServeSettings | None = None, reranker: Reranker | None = None) -> int:
    """Run the server until SIGTERM/SIGINT (see :func:`erank.serving.cli.run_server`)."""
    from erank.serving.cli import run_server

    return run_server(settings or ServeSettings.from_env(), reranker)
