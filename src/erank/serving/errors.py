"""The one error shape of the HTTP service: ``{"message", "error", "error_type", "field"?}``.

``message`` is what Cohere clients read, ``error``/``error_type`` what TEI clients read. Every
error answer (the service's own, FastAPI's and Starlette's 404/405/400, the guard's 401/403/408/
429, an unexpected exception's 500) goes through :func:`error_body` and :func:`json_bytes`.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "HTTPError",
    "ClientGone",
    "error_body",
    "json_bytes",
    "send_error",
    "ERROR_KIND_KEY",
    "DEFAULT_KINDS",
]

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

#: Where a handler records the kind of the error it answered (the guard counts it once).
ERROR_KIND_KEY = "erank.error_kind"

#: The kind counted for an error status that no handler named.
DEFAULT_KINDS = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "body_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "invalid_input",
    429: "queue_full",
    499: "client_disconnected",
    500: "internal",
    503: "not_ready",
    504: "timeout",
}


class HTTPError(Exception):
    """An error answered with ``status`` and the JSON error body."""

    def __init__(
        self,
        status: int,
        kind: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.kind, self.message, self.field, self.headers = status, kind, message, field, headers


class ClientGone(Exception):
    """The client disconnected before its result was ready."""


def error_body(kind: str, message: str, field: str | None = None) -> dict[str, Any]:
    """The error body: ``message`` (Cohere), ``error`` and ``error_type`` (TEI), ``field`` if known."""
    body: dict[str, Any] = {"message": message, "error": message, "error_type": kind}
    if field is not None:
        body["field"] = field
    return body


def json_bytes(value: Any) -> bytes:
    """JSON that cannot fail on odd text: non-ASCII is escaped, so a lone surrogate echoed from a
    request is written as ``\\ud800`` instead of raising while encoding."""
    return json.dumps(value, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


async def send_error(
    send: Send,
    status: int,
    kind: str,
    message: str,
    field: str | None = None,
    headers: dict[str, str] | None = None,
    close: bool = False,
) -> None:
    """Answer an error from plain ASGI code (the guard), in the one shape."""
    data = json_bytes(error_body(kind, message, field))
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (headers or {}).items()]
    if close:
        raw.append((b"connection", b"close"))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": data})
