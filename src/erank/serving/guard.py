"""The ASGI layer in front of the FastAPI app: everything decided before a body is parsed.

In order, for every HTTP request:

1. ``Host`` allow-list (400 ``invalid_host``; on by default for loopback binds, against DNS
   rebinding from a local browser);
2. API key, when keys are configured (401 without one, 403 with a wrong one; ``/health`` and
   ``/ready`` stay open), compared in constant time;
3. the body: size limit (413), a deadline for the whole body (408), UTF-8 (400), a client that
   leaves while sending (499);
4. admission to the rerank endpoints: 503 while draining, 429 with ``Retry-After`` when
   ``max_queue`` requests are already admitted -- before any JSON parsing or tokenising;
5. a safety net: an exception that escapes the app is answered 500 in the error shape and the
   connection stays usable.

It also counts every answer (``erank_requests_total``, latency) and every error by kind
(``erank_errors_total``), whoever produced it.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from erank.serving.errors import DEFAULT_KINDS, ERROR_KIND_KEY, send_error
from erank.serving.metrics import ServeMetrics
from erank.serving.settings import ServeSettings

__all__ = ["Guard", "ENDPOINTS", "RERANK_PATHS", "OPEN_PATHS"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

RERANK_PATHS = frozenset({"/v1/rerank", "/v2/rerank", "/rerank", "/score"})
#: Paths answered without an API key (probes of load balancers and orchestrators).
OPEN_PATHS = frozenset({"/health", "/ready"})
ENDPOINTS = RERANK_PATHS | OPEN_PATHS | {"/metrics", "/v1/models", "/openapi.json", "/docs"}


class Guard:
    """Pure ASGI middleware; see the module docstring. ``service`` holds the admission counters."""

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics, service: Any) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.service = service
        self.state = app.state
        self.hosts = settings.host_allow_list()
        self._key_digests = [hashlib.sha256(k.encode("utf-8")).digest() for k in settings.api_keys()]

    @property
    def auth_enabled(self) -> bool:
        return bool(self._key_digests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = [0]
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        admitted = False
        try:
            admitted = await self._handle(scope, receive, send_status, path)
        except Exception as exc:  # noqa: BLE001 - the safety net: never a dropped connection
            if status[0] == 0:
                logger.exception("unhandled error on %s", path)
                scope[ERROR_KIND_KEY] = "internal"
                await send_error(send_status, 500, "internal", f"internal error: {type(exc).__name__}")
            elif status[0] == 500:
                # Starlette answered through the app's handler, then re-raised: logged here once,
                # and not re-raised, so that the server keeps the connection.
                logger.error("unhandled error on %s", path, exc_info=exc)
            else:
                logger.debug("error after the response started on %s: %r", path, exc)
        finally:
            if admitted:
                self.service.admitted -= 1
            code = status[0] or 499  # nothing sent: the client left first
            self.metrics.requests.labels(endpoint, str(code)).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)
            if code >= 400:
                kind = scope.get(ERROR_KIND_KEY) or DEFAULT_KINDS.get(code, f"http_{code}")
                self.metrics.errors.labels(kind).inc()

    async def _handle(self, scope: Scope, receive: Receive, send: Send, path: str) -> bool:
        """Answer the request; ``True`` when it was admitted (the caller releases the slot)."""
        headers = _headers(scope)

        async def refuse(
            status: int,
            kind: str,
            message: str,
            field: str | None = None,
            extra: dict[str, str] | None = None,
            close: bool = True,
        ) -> bool:
            scope[ERROR_KIND_KEY] = kind
            await send_error(send, status, kind, message, field, extra, close=close)
            return False

        if self.hosts is not None:
            host = _host_name(headers.get("host"))
            if host is not None and host not in self.hosts:
                return await refuse(
                    400,
                    "invalid_host",
                    f"the Host header names {host!r}, which this server does not answer to; "
                    f"allowed: {', '.join(sorted(self.hosts))} (--allowed-hosts)",
                    "host",
                )
        if self._key_digests and path not in OPEN_PATHS:
            given = _given_key(headers)
            auth = {"WWW-Authenticate": "Bearer"}
            if given is None:
                return await refuse(
                    401,
                    "unauthorized",
                    "this server needs an API key: send the header 'Authorization: Bearer KEY'",
                    "authorization",
                    auth,
                )
            if not self._key_ok(given):
                return await refuse(403, "forbidden", "the API key is not valid", "authorization", auth)

        app_receive = receive
        if scope.get("method") in ("POST", "PUT", "PATCH"):
            outcome = await self._read_body(headers, receive)
            if isinstance(outcome, tuple):
                status, kind, message, close = outcome
                if status == 499:  # the client left while sending: nobody to answer
                    scope[ERROR_KIND_KEY] = kind
                    return False
                return await refuse(status, kind, message, "body", close=close)
            app_receive = _replay(outcome, receive)

        admitted = False
        if path in RERANK_PATHS and scope.get("method") == "POST":
            service = self.service
            if service.draining:
                return await refuse(
                    503,
                    "shutting_down",
                    "the server is shutting down; send the request to another instance",
                    extra={"Retry-After": str(self.settings.retry_after_s)},
                )
            if service.admitted >= self.settings.max_queue:
                return await refuse(
                    429,
                    "queue_full",
                    f"the queue is full ({self.settings.max_queue} requests waiting or running); retry later",
                    extra={"Retry-After": str(self.settings.retry_after_s)},
                    close=False,
                )
            service.admitted += 1
            admitted = True
        try:
            await self.app(scope, app_receive, send)
        except BaseException:
            if admitted:
                self.service.admitted -= 1
            raise
        return admitted

    def _key_ok(self, given: str) -> bool:
        digest = hashlib.sha256(given.encode("utf-8", "surrogateescape")).digest()
        ok = False
        for known in self._key_digests:  # every key compared, in constant time
            ok |= hmac.compare_digest(digest, known)
        return ok

    async def _read_body(
        self, headers: dict[str, str], receive: Receive
    ) -> bytes | tuple[int, str, str, bool]:
        """The body, or ``(status, kind, message, close_connection)``."""
        limit = self.settings.max_body_bytes
        too_large = (
            413,
            "payload_too_large",
            f"the request body is larger than {limit} bytes (--max-body-bytes); send fewer or shorter documents",
            True,
        )
        length = headers.get("content-length")
        if length is not None:
            try:
                if int(length) > limit:
                    return too_large
            except ValueError:
                return (400, "bad_request", "the Content-Length header is not a number", True)
        timeout = self.settings.body_timeout_s
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        chunks: list[bytes] = []
        size = 0
        while True:
            left = deadline - loop.time()
            try:
                if left <= 0:
                    raise TimeoutError
                message = await asyncio.wait_for(receive(), left)
            except TimeoutError:
                return (
                    408,
                    "body_timeout",
                    f"the request body did not arrive within {timeout:g} s (--body-timeout)",
                    True,
                )
            if message["type"] == "http.disconnect":
                return (499, "client_disconnected", "client disconnected", True)
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return (
                400,
                "invalid_utf8",
                f"the request body is not valid UTF-8 (bad byte at offset {exc.start}); encode the text as UTF-8",
                False,
            )
        return body


def _headers(scope: Scope) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in scope.get("headers", []):
        out.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    return out


def _host_name(value: str | None) -> str | None:
    """``Host`` without the port, lower case (``[::1]:8000`` -> ``[::1]``)."""
    if value is None:
        return None  # HTTP/1.0 without Host: no browser sends that
    value = value.strip().lower()
    if value.startswith("["):
        end = value.find("]")
        return value[: end + 1] if end > 0 else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _given_key(headers: dict[str, str]) -> str | None:
    auth = headers.get("authorization")
    if auth is not None:
        scheme, _, token = auth.strip().partition(" ")
        if scheme.lower() == "bearer":
            return token.strip() or None
        return auth.strip() or None
    key = headers.get("x-api-key")
    return key.strip() if key and key.strip() else None


def _replay(body: bytes, receive: Receive) -> Receive:
    """The body once, then the server's ``receive`` again (a disconnect is still seen)."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
