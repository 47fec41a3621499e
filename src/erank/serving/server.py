"""uvicorn, with the connection limits and the drain that ``erank serve`` promises.

* :class:`GuardedH11Protocol`: at most ``max_connections`` open connections (one more is answered
  503 in the error shape and closed); a connection must send a complete request head within
  ``idle_timeout_s`` of opening or of its previous answer (slow or silent clients are closed);
  between requests uvicorn's keep-alive timeout (the same ``idle_timeout_s``) applies. The body's
  own deadline (``body_timeout_s``) is the guard's (:mod:`erank.serving.guard`).
* :class:`DrainingServer`: the first SIGTERM/SIGINT starts a drain: ``/ready`` answers 503, new
  rerank requests get 503, the admitted ones finish; then uvicorn shuts down. A second signal
  stops at once (uvicorn's own shutdown, which still lets running requests end).

>>> from erank.serving.server import build_server                    # doctest: +SKIP
>>> build_server(create_app(settings, reranker)).run()                # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import logging
import time
from types import FrameType
from typing import Any

from erank.errors import require
from erank.serving.errors import error_body, json_bytes

__all__ = ["build_server", "DrainingServer", "guarded_protocol"]

logger = logging.getLogger(__name__)


def guarded_protocol(max_connections: int, idle_timeout_s: float, metrics: Any = None) -> type[Any]:
    """uvicorn's h11 protocol class with a connection limit and a deadline for request heads."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    body = json_bytes(
        error_body(
            "too_many_connections",
            f"the server has {max_connections} connections open (--max-connections); retry later",
        )
    )
    refusal = (
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n".encode()
        + body
    )

    class GuardedH11Protocol(H11Protocol):  # type: ignore[misc]
        _head_timer: asyncio.TimerHandle | None = None
        _armed_for: Any = None
        _refused = False

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                logger.warning("connection refused: %d connections open", len(self.connections) - 1)
                if metrics is not None:
                    metrics.errors.labels("too_many_connections").inc()
                transport.write(refusal)
                # Closed once the request is read (closing with it unread would reset the
                # connection before the client reads the answer), or after the idle timeout.
                self._refused = True
                self._head_timer = self.loop.call_later(idle_timeout_s, transport.close)
                return
            self._arm()

        def data_received(self, data: bytes) -> None:
            if self._refused:
                self.loop.call_later(0.05, self.transport.close)
                return
            super().data_received(data)
            if self._head_timer is not None and self.cycle is not self._armed_for:
                self._disarm()  # a request head arrived: the guard's body deadline takes over

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._head_timer = self.loop.call_later(idle_timeout_s, self._head_timeout)

        def _disarm(self) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None

        def _head_timeout(self) -> None:
            self._head_timer = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                logger.debug("closing a connection without a complete request after %g s", idle_timeout_s)
                self.transport.close()

    return GuardedH11Protocol


def _make_server_class() -> type[Any]:
    uvicorn: Any = require("uvicorn", "serve", "the HTTP server")

    class _DrainingServer(uvicorn.Server):  # type: ignore[misc,name-defined]
        def __init__(self, config: Any, service: Any, drain_timeout_s: float) -> None:
            super().__init__(config)
            self.service = service
            self.drain_timeout_s = drain_timeout_s
            self.drain_deadline: float | None = None

        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            if self.drain_deadline is None and not self.should_exit and self.service is not None:  # type: ignore[has-type]
                self.drain_deadline = time.monotonic() + self.drain_timeout_s
                self.service.begin_drain()
                logger.info(
                    "draining: /ready answers 503; waiting for %d admitted requests", self.service.admitted
                )
                return
            super().handle_exit(sig, frame)

        async def on_tick(self, counter: int) -> bool:
            if self.drain_deadline is not None and not self.should_exit:  # type: ignore[has-type]
                if self.service.admitted <= 0 or time.monotonic() > self.drain_deadline:
                    self.should_exit = True
            result: bool = await super().on_tick(counter)
            return result

    return _DrainingServer


def DrainingServer(config: Any, service: Any, drain_timeout_s: float) -> Any:  # noqa: N802 - a class factory
    """A ``uvicorn.Server`` that drains on the first signal (see the module docstring)."""
    return _make_server_class()(config, service, drain_timeout_s)


def build_server(
    app: Any, host: str | None = None, port: int | None = None, log_level: str | None = None
) -> Any:
    """The server for ``app`` (from :func:`erank.serving.create_app`), with its settings' limits."""
    uvicorn: Any = require("uvicorn", "serve", "the HTTP server")
    settings = app.settings
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=settings.port if port is None else port,
        log_level=log_level or settings.log_level,
        lifespan="on",
        http=guarded_protocol(settings.max_connections, settings.idle_timeout_s, app.metrics),
        timeout_keep_alive=max(1, round(settings.idle_timeout_s)),
        timeout_graceful_shutdown=int(settings.request_timeout_s) + 5,
    )
    return DrainingServer(config, app.service, settings.request_timeout_s + 5)
