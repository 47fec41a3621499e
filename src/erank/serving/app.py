"""The FastAPI application: Cohere/Jina, TEI and erank endpoints over one micro-batched model.

>>> from erank.serving import create_app, ServeSettings          # doctest: +SKIP
>>> app = create_app(settings=ServeSettings(mode="direct"))       # loads the default model  # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

Every request's (query, document) pairs are tokenised off the event loop, queued in a
:class:`~erank.serving.batcher.MicroBatcher` and scored by the single model worker thread together
with the pairs of concurrent requests.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from dataclasses import dataclass
from typing import Any

from erank.errors import ERankError, InputError, MissingExtraError, require
from erank.models import DEFAULT_MODEL
from erank.serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from erank.serving.metrics import ServeMetrics
from erank.serving.schemas import CohereRerankRequest, DocumentObject, ScoreRequest, TEIRerankRequest
from erank.serving.settings import ServeSettings
from erank.types import DocumentScore, ranking_from_scores

try:  # FastAPI resolves the endpoints' annotations from this module's globals
    from fastapi import Request
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("fastapi", "serve", "the HTTP server") from _exc

__all__ = ["create_app", "RerankService", "HTTPError"]

logger = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

ENDPOINTS = {
    "/v1/rerank",
    "/v2/rerank",
    "/rerank",
    "/score",
    "/health",
    "/ready",
    "/metrics",
    "/v1/models",
    "/openapi.json",
    "/docs",
}


class HTTPError(Exception):
    """An error answered with ``status`` and a JSON body ``{"message", "error", "error_type", "field"}``."""

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
    # "message" is what Cohere clients read, "error"/"error_type" what TEI clients read.
    body: dict[str, Any] = {"message": message, "error": message, "error_type": kind}
    if field is not None:
        body["field"] = field
    return body


# ---------------------------------------------------------------------------------------- service
@dataclass
class Prepared:
    """A request's pairs, ready for the model."""

    items: list[Any]
    key: Any
    truncated: list[bool]
    prompt_tokens: int


class RerankService:
    """The model, its micro-batching queue and the per-request work around them.

    Args:
        settings: limits and batching parameters.
        reranker: an already built :class:`~erank.reranker.Reranker`; if ``None`` one is built from
            ``settings`` in a background thread at startup (``/ready`` says when it is loaded).
    """

    def __init__(
        self, settings: ServeSettings, reranker: Any = None, metrics: ServeMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServeMetrics()
        self.reranker: Any = None
        self.load_error: str | None = None
        self.batcher: MicroBatcher[Any, Any] | None = None
        self._ready = threading.Event()
        self._given = reranker
        self.metrics.track_queue(
            lambda: float(self.batcher.outstanding if self.batcher else 0),
            lambda: float(self.batcher.pending_items if self.batcher else 0),
        )

    # ---------------------------------------------------------------- lifecycle
    @property
    def ready(self) -> bool:
        return self._ready.is_set()

    @property
    def model_name(self) -> str:
        if self.settings.served_model_name:
            return self.settings.served_model_name
        if self.reranker is not None:
            return str(self.reranker.model_name)
        return str(self.settings.model or DEFAULT_MODEL)

    def start(self) -> None:
        """Load the model (in a thread unless one was given), then start the worker."""
        if self._given is not None:
            self._activate(self._given)
            return
        threading.Thread(target=self._load, name="erank-model-loader", daemon=True).start()

    def _load(self) -> None:
        from erank.reranker import Reranker

        s = self.settings
        try:
            logger.info(
                "loading model %s (engine %s, mode %s)", s.model or "default", s.engine, s.mode or "default"
            )
            reranker = Reranker(
                s.model, engine=s.engine, mode=s.mode, device=s.device, batch_tokens=s.batch_tokens
            )
        except Exception as exc:  # noqa: BLE001 - reported by /ready and the log
            self.load_error = f"{type(exc).__name__}: {exc}"
            logger.error("could not load the model: %s", self.load_error)
            return
        self._activate(reranker)

    def _activate(self, reranker: Any) -> None:
        self.reranker = reranker
        method = reranker.method
        self.pairwise = hasattr(method, "score_prompts") and hasattr(method, "build_prompt")
        self.scale = getattr(method, "scale", None)
        s = self.settings
        self.batcher = MicroBatcher(
            self._score_items,
            max_batch_items=s.max_batch_pairs if self.pairwise else max(1, s.max_batch_pairs // 16),
            max_wait_s=s.max_wait_ms / 1000.0,
            max_queue=s.max_queue,
            cross_request=s.cross_batching,
            on_batch=self.metrics.observe_batch,
        )
        self.batcher.start()
        self._ready.set()
        self.metrics.ready.set(1)
        logger.info("model %s ready (mode %s)", reranker.model_name, reranker.mode)

    def stop(self) -> None:
        """Finish the queued work, then release the model."""
        self.metrics.ready.set(0)
        if self.batcher is not None:
            self.batcher.stop(timeout=self.settings.request_timeout_s)
        if self.reranker is not None and self._given is None:
            self.reranker.close()

    # ---------------------------------------------------------------- work (threads)
    def prepare(
        self, query: str, texts: list[str], instruction: str | None, max_tokens: int, return_reasoning: bool
    ) -> Prepared:
        """Cut and tokenise every pair (runs in a thread pool, not on the event loop)."""
        from erank.prompts import resolve_instruction

        method = self.reranker.method
        instr = resolve_instruction(instruction or self.settings.instruction, method.default_instruction)
        if not self.pairwise:
            item = (query, texts, instr, max_tokens, return_reasoning)
            return Prepared(
                items=[item],
                key=("request", return_reasoning),
                truncated=[False] * len(texts),
                prompt_tokens=0,
            )
        tok = method.engine.tokenizer
        q, _ = method.truncate(query, max_tokens)
        prompts: list[list[int]] = []
        truncated: list[bool] = []
        for text in texts:
            cut_text, cut = method.truncate(text, max_tokens)
            truncated.append(cut)
            prompts.append(tok.encode_prompt(method.build_prompt(q, cut_text, instr)))
        return Prepared(
            items=prompts,
            key=("pairs", return_reasoning),
            truncated=truncated,
            prompt_tokens=sum(map(len, prompts)),
        )

    def _score_items(self, items: list[Any], key: Any) -> list[Any]:
        """The worker thread's scorer: one engine call for all pairs of the batch."""
        method = self.reranker.method
        kind, return_reasoning = key
        if kind == "pairs":
            return list(method.score_prompts(items, return_reasoning))
        return [
            method.rerank(query, texts, instr, truncate_length=n, return_reasoning=rr).scores
            for query, texts, instr, n, rr in items
        ]

    # ---------------------------------------------------------------- one request
    async def score(
        self,
        request: Any,
        query: str,
        texts: list[str],
        instruction: str | None,
        max_tokens: int,
        return_reasoning: bool = False,
    ) -> tuple[list[DocumentScore], int]:
        """Per-document scores (input order) and the prompt tokens, through the shared queue."""
        if not self.ready or self.batcher is None:
            if self.load_error:
                raise HTTPError(503, "not_ready", f"the model failed to load: {self.load_error}")
            raise HTTPError(
                503, "not_ready", "the model is still loading; retry shortly", headers={"Retry-After": "5"}
            )
        try:
            prep = await asyncio.to_thread(
                self.prepare, query, texts, instruction, max_tokens, return_reasoning
            )
        except InputError as exc:
            raise HTTPError(422, "invalid_input", str(exc), field="instruction") from exc
        try:
            job = self.batcher.submit(prep.items, prep.key)
        except QueueFullError as exc:
            raise HTTPError(
                429,
                "queue_full",
                f"{exc}; retry later",
                headers={"Retry-After": str(self.settings.retry_after_s)},
            ) from exc
        except BatcherStoppedError as exc:
            raise HTTPError(503, "shutting_down", str(exc)) from exc
        watcher: asyncio.Future[Any] = asyncio.ensure_future(_wait_disconnect(request))
        waiting: set[asyncio.Future[Any]] = {job.future, watcher}
        try:
            done, _ = await asyncio.wait(
                waiting,
                timeout=self.settings.request_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if job.future in done:
                try:
                    results = job.future.result()
                except ERankError as exc:
                    raise HTTPError(422, "invalid_input", str(exc)) from exc
                except Exception as exc:  # noqa: BLE001 - the model failed: say so, keep serving
                    raise HTTPError(
                        500, "model_error", f"the model failed on this request: {type(exc).__name__}"
                    ) from exc
            else:
                self.batcher.cancel(job)
                if watcher in done:
                    raise ClientGone()
                raise HTTPError(
                    504,
                    "timeout",
                    f"the request took longer than {self.settings.request_timeout_s:g} s and was dropped",
                )
        finally:
            watcher.cancel()
        if prep.key[0] == "pairs":
            scores: list[DocumentScore] = results
        else:
            scores = results[0]
        for i, sc in enumerate(scores):
            sc.index = i
            if prep.key[0] == "pairs":
                sc.truncated = prep.truncated[i]
        tokens = prep.prompt_tokens or sum(s.prompt_tokens for s in scores)
        return scores, tokens

    def relevance(self, score: float) -> float:
        """A 0..1 relevance (Cohere, Jina, TEI without raw scores): ERank's rank_score / scale."""
        if self.scale:
            return max(0.0, min(1.0, score / float(self.scale)))
        return score


async def _wait_disconnect(request: Any) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return


# ---------------------------------------------------------------------------------------- checks
def _check_text(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPError(
            422,
            "invalid_input",
            f"{field} is not valid Unicode (an unpaired surrogate at character {exc.start}); send valid UTF-8 text",
            field=field,
        ) from None


def _check_query(query: str) -> str:
    if not query.strip():
        raise HTTPError(422, "invalid_input", "query is empty; send the text of the query", field="query")
    _check_text(query, "query")
    return query


def _document_texts(
    documents: Sequence[str | DocumentObject], settings: ServeSettings, rank_fields: list[str] | None = None
) -> list[str]:
    if len(documents) > settings.max_documents:
        raise HTTPError(
            413,
            "too_many_documents",
            f"{len(documents)} documents in one request; the limit is {settings.max_documents} "
            "(split the request, or start the server with a larger --max-documents)",
            field="documents",
        )
    if not documents:
        raise HTTPError(
            422, "invalid_input", "documents is empty; send at least one document", field="documents"
        )
    texts: list[str] = []
    for i, d in enumerate(documents):
        field = f"documents[{i}]"
        if isinstance(d, str):
            text = d
        else:
            extra = d.model_extra or {}
            if rank_fields:
                values = {**extra, "text": d.text, "content": d.content}
                missing = [k for k in rank_fields if values.get(k) is None]
                if missing:
                    raise HTTPError(
                        422, "invalid_input", f"{field} lacks the rank_fields {missing}", field=field
                    )
                text = "\n".join(f"{k}: {values[k]}" for k in rank_fields)
            else:
                text_value = d.text if d.text is not None else d.content
                if text_value is None:
                    raise HTTPError(
                        422,
                        "invalid_input",
                        f"{field} is an object without a 'text' string",
                        field=field + ".text",
                    )
                text = text_value
        if not text.strip():
            raise HTTPError(
                422, "invalid_input", f"{field} is empty; remove it or send its text", field=field
            )
        _check_text(text, field)
        texts.append(text)
    return texts


def _max_tokens(requested: int | None, settings: ServeSettings) -> int:
    return settings.max_tokens_per_doc if requested is None else min(requested, settings.max_tokens_per_doc)


def _top_n(top_n: int | None, count: int, warnings: list[str]) -> int:
    if top_n is None:
        return count
    if top_n > count:
        warnings.append(f"top_n={top_n} is larger than the {count} documents; all {count} are returned")
        return count
    return top_n


def _truncation_warning(truncated: list[bool], max_tokens: int, warnings: list[str]) -> None:
    cut = [i for i, t in enumerate(truncated) if t]
    if cut:
        shown = cut[:20]
        more = "" if len(cut) <= 20 else f" and {len(cut) - 20} more"
        warnings.append(f"documents {shown}{more} were truncated to {max_tokens} tokens")


def _document_out(d: str | DocumentObject) -> dict[str, Any]:
    if isinstance(d, str):
        return {"text": d}
    return d.model_dump(exclude_none=True)


# ---------------------------------------------------------------------------------------- app
def create_app(settings: ServeSettings | None = None, reranker: Any = None) -> Any:
    """The ASGI app. ``reranker``: a ready :class:`~erank.reranker.Reranker` (else built from ``settings``).

    >>> from erank.serving import create_app                             # doctest: +SKIP
    >>> app = create_app(reranker=Reranker(mode="direct"))               # doctest: +SKIP
    """
    fastapi: Any = require("fastapi", "serve", "the HTTP server")
    from contextlib import asynccontextmanager

    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse, Response

    settings = settings or ServeSettings.from_env()
    metrics = ServeMetrics()
    service = RerankService(settings, reranker, metrics)

    @asynccontextmanager
    async def lifespan(app: Any) -> Any:
        service.start()
        try:
            yield
        finally:
            await asyncio.to_thread(service.stop)

    app = fastapi.FastAPI(
        title="erank",
        version="1",
        description="LLM reranking (ERank) with Cohere/Jina, TEI and erank endpoints.",
        lifespan=lifespan,
    )
    app.state.service = service

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Any:
        metrics.errors.labels(exc.kind).inc()
        return JSONResponse(
            error_body(exc.kind, exc.message, exc.field), status_code=exc.status, headers=exc.headers
        )

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Any:
        metrics.errors.labels("client_disconnected").inc()
        return JSONResponse(error_body("client_disconnected", "client disconnected"), status_code=499)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = errors[0]
            metrics.errors.labels("invalid_json").inc()
            detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
            return JSONResponse(
                error_body("invalid_json", f"the body is not valid JSON: {detail}", "body"), status_code=400
            )
        parts = []
        fields = []
        for e in errors[:10]:
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            field = ".".join(loc) or "body"
            fields.append(field)
            parts.append(f"{field}: {e.get('msg', 'invalid')}")
        metrics.errors.labels("invalid_input").inc()
        return JSONResponse(
            error_body(
                "invalid_input", "invalid request: " + "; ".join(parts), fields[0] if fields else None
            ),
            status_code=422,
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        logger.exception("unhandled error on %s", request.url.path)
        metrics.errors.labels("internal").inc()
        return JSONResponse(error_body("internal", f"internal error: {type(exc).__name__}"), status_code=500)

    # ------------------------------------------------------------ operations
    @app.get("/health", summary="alive")
    async def health() -> dict[str, Any]:
        return {"status": "ok"}

    @app.get("/ready", summary="the model is loaded")
    async def ready() -> Any:
        if service.ready:
            return {"status": "ready", "model": service.model_name}
        body = {"status": "failed" if service.load_error else "loading", "error": service.load_error}
        return JSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.get("/metrics", summary="Prometheus metrics")
    async def prometheus() -> Any:
        data, content_type = metrics.render()
        return Response(content=data, media_type=content_type)

    @app.get("/v1/models", summary="the served model")
    async def models() -> dict[str, Any]:
        name = service.model_name
        card = {"id": name, "object": "model", "created": 0, "owned_by": "erank"}
        return {"object": "list", "data": [card], "models": [{"name": name, "endpoints": ["rerank"]}]}

    # ------------------------------------------------------------ rerank
    async def _cohere(body: CohereRerankRequest, request: Request, version: str) -> dict[str, Any]:
        query = _check_query(body.query)
        texts = _document_texts(body.documents, settings, body.rank_fields)
        n_tokens = _max_tokens(body.max_tokens_per_doc, settings)
        warnings: list[str] = []
        top = _top_n(body.top_n, len(texts), warnings)
        scores, tokens = await service.score(request, query, texts, body.instruction, n_tokens)
        _record(scores, tokens, request.url.path)
        _truncation_warning([s.truncated for s in scores], n_tokens, warnings)
        results = []
        for i in ranking_from_scores([s.score for s in scores])[:top]:
            item: dict[str, Any] = {"index": i, "relevance_score": service.relevance(scores[i].score)}
            if body.return_documents:
                item["document"] = _document_out(body.documents[i])
            results.append(item)
        meta: dict[str, Any] = {
            "api_version": {"version": version},
            "billed_units": {"search_units": 1, "input_tokens": tokens},
            "tokens": {"input_tokens": tokens, "output_tokens": 0},
        }
        if warnings:
            meta["warnings"] = warnings
        return {
            "id": str(uuid.uuid4()),
            "results": results,
            "meta": meta,
            "model": service.model_name,
            "usage": {"total_tokens": tokens, "prompt_tokens": tokens},
        }

    @app.post("/v1/rerank", summary="Cohere v1 / Jina rerank")
    async def rerank_v1(body: CohereRerankRequest, request: Request) -> dict[str, Any]:
        return await _cohere(body, request, "1")

    @app.post("/v2/rerank", summary="Cohere v2 rerank")
    async def rerank_v2(body: CohereRerankRequest, request: Request) -> dict[str, Any]:
        return await _cohere(body, request, "2")

    @app.post("/rerank", summary="TEI rerank")
    async def rerank_tei(body: TEIRerankRequest, request: Request) -> Any:
        query = _check_query(body.query)
        texts = _document_texts(body.texts, settings)
        n_tokens = settings.max_tokens_per_doc
        scores, tokens = await service.score(request, query, texts, body.instruction, n_tokens)
        _record(scores, tokens, request.url.path)
        out = []
        for i in ranking_from_scores([s.score for s in scores]):
            value = scores[i].score if body.raw_scores else service.relevance(scores[i].score)
            item: dict[str, Any] = {"index": i, "score": value}
            if body.return_text:
                item["text"] = texts[i]
            out.append(item)
        truncated = sum(1 for s in scores if s.truncated)
        return JSONResponse(out, headers={"X-Erank-Truncated-Documents": str(truncated)})

    @app.post("/score", summary="everything erank knows per document")
    async def score(body: ScoreRequest, request: Request) -> dict[str, Any]:
        query = _check_query(body.query)
        texts = _document_texts(body.documents, settings)
        n_tokens = _max_tokens(body.max_tokens_per_doc, settings)
        warnings: list[str] = []
        top = _top_n(body.top_n, len(texts), warnings)
        started = time.perf_counter()
        scores, tokens = await service.score(
            request, query, texts, body.instruction, n_tokens, body.return_reasoning
        )
        _record(scores, tokens, request.url.path)
        _truncation_warning([s.truncated for s in scores], n_tokens, warnings)
        ranking = ranking_from_scores([s.score for s in scores])
        results = []
        for rank, i in enumerate(ranking[:top], start=1):
            sc = scores[i]
            item: dict[str, Any] = {
                "index": i,
                "rank": rank,
                "score": sc.score,
                "relevance_score": service.relevance(sc.score),
                "label": sc.label,
                "probability": sc.probability,
                "distribution": sc.distribution,
                "expected_score": sc.expected_score,
                "parsed": sc.parsed,
                "truncated": sc.truncated,
                "prompt_tokens": sc.prompt_tokens,
                "generated_tokens": sc.generated_tokens,
            }
            if body.return_reasoning:
                item["reasoning"] = sc.reasoning
                item["output"] = sc.output
            if body.return_documents:
                item["document"] = _document_out(body.documents[i])
            results.append(item)
        reranker_ = service.reranker
        return {
            "id": str(uuid.uuid4()),
            "model": service.model_name,
            "method": reranker_.method.name,
            "mode": reranker_.mode,
            "ranking": ranking,
            "results": results,
            "usage": {
                "documents": len(scores),
                "prompt_tokens": tokens,
                "generated_tokens": sum(s.generated_tokens for s in scores),
                "unparsed": sum(1 for s in scores if not s.parsed),
                "truncated_documents": sum(1 for s in scores if s.truncated),
                "seconds": time.perf_counter() - started,
            },
            "warnings": warnings,
        }

    def _record(scores: list[DocumentScore], tokens: int, path: str) -> None:
        metrics.documents.labels(path).inc(len(scores))
        metrics.prompt_tokens.inc(tokens)
        metrics.generated_tokens.inc(sum(s.generated_tokens for s in scores))
        metrics.truncated.inc(sum(1 for s in scores if s.truncated))

    return LimitsMiddleware(app, settings, metrics)


# ---------------------------------------------------------------------------------------- middleware
class LimitsMiddleware:
    """Pure ASGI: body size (413) and UTF-8 (400) checks, request count and latency metrics.

    The body is read here (up to the limit) and replayed to the app; after it the app's
    ``receive`` goes to the server again, so a client disconnect is still seen.
    """

    def __init__(self, app: Any, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.app = app
        self.settings = settings
        self.metrics = metrics
        self.state = app.state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        endpoint = path if path in ENDPOINTS else "other"
        status = [500]
        started = time.perf_counter()

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
            await send(message)

        try:
            app_receive = receive
            if scope.get("method") in ("POST", "PUT", "PATCH"):
                body, problem = await self._read_body(scope, receive)
                if problem is not None:
                    code, kind, message = problem
                    self.metrics.errors.labels(kind).inc()
                    await _send_json(send_status, code, error_body(kind, message, "body"))
                    return
                if body is None:  # client gone while sending
                    status[0] = 499
                    return
                app_receive = _replay(body, receive)
            await self.app(scope, app_receive, send_status)
        finally:
            self.metrics.requests.labels(endpoint, str(status[0])).inc()
            self.metrics.latency.labels(endpoint).observe(time.perf_counter() - started)

    async def _read_body(
        self, scope: Scope, receive: Receive
    ) -> tuple[bytes | None, tuple[int, str, str] | None]:
        limit = self.settings.max_body_bytes
        too_large = (
            413,
            "payload_too_large",
            f"the request body is larger than {limit} bytes (--max-body-bytes); send fewer or shorter documents",
        )
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > limit:
                        return None, too_large
                except ValueError:
                    return None, (400, "invalid_request", "the Content-Length header is not a number")
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return None, None
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None, too_large
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        try:
            body.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, (
                400,
                "invalid_utf8",
                f"the request body is not valid UTF-8 (bad byte at offset {exc.start}); encode the text as UTF-8",
            )
        return body, None


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": data})
