"""The FastAPI application: Cohere/Jina, TEI and erank endpoints over one micro-batched model.

>>> from erank.serving import create_app, ServeSettings          # doctest: +SKIP
>>> app = create_app(settings=ServeSettings(mode="direct"))       # loads the default model  # doctest: +SKIP
>>> import uvicorn; uvicorn.run(app, host="127.0.0.1", port=8000)  # doctest: +SKIP

Every request's (query, document) pairs are tokenised off the event loop, queued in a
:class:`~erank.serving.batcher.MicroBatcher` and scored by the single model worker thread together
with the pairs of concurrent requests. In front of the app, :class:`~erank.serving.guard.Guard`
decides everything that needs no parsing (Host, API key, body limits, admission).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from erank.errors import MissingExtraError, require
from erank.serving.checks import (
    FREE_TEXT_PATTERN,
    _check_instruction,
    _check_query,
    _document_out,
    _document_texts,
    _instruction_warning,
    _max_tokens,
    _top_n,
    _truncation_warning,
    check_strings,
    check_text,
)
from erank.serving.errors import ERROR_KIND_KEY, ClientGone, HTTPError, error_body, json_bytes
from erank.serving.guard import Guard
from erank.serving.metrics import ServeMetrics
from erank.serving.schemas import (
    CohereRerankRequest,
    CohereRerankResponse,
    ErrorBody,
    HealthResponse,
    ModelsResponse,
    ReadyResponse,
    ScoreRequest,
    ScoreResponse,
    TEIRerankItem,
    TEIRerankRequest,
)
from erank.serving.service import RerankService
from erank.serving.settings import ServeSettings
from erank.types import DocumentScore, ranking_from_scores

try:  # FastAPI resolves the endpoints' annotations from this module's globals
    from fastapi import Request
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("fastapi", "serve", "the HTTP server") from _exc

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = ["create_app", "RerankService", "HTTPError", "check_strings", "check_text"]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------- app
_DESCRIPTIONS = {
    400: "the body is not valid JSON or UTF-8, or the Host header is not one this server answers to",
    401: "an API key is needed (Authorization: Bearer KEY)",
    403: "the API key is not valid",
    404: "the model named in the request is not served here",
    408: "the request body did not arrive within --body-timeout",
    413: "too many documents, too many prompt tokens, or a body larger than --max-body-bytes",
    422: "a field is missing, of the wrong type, or empty",
    429: "the queue is full; retry after Retry-After seconds",
    500: "an unexpected error (a bug: please report it)",
    503: "the model is loading, failed to load, or the server is shutting down",
    504: "the request took longer than --request-timeout",
}


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {code: {"model": ErrorBody, "description": _DESCRIPTIONS[code]} for code in codes}


def create_app(settings: ServeSettings | None = None, reranker: Reranker | None = None) -> Any:
    """The ASGI app. ``reranker``: a ready :class:`~erank.reranker.Reranker` (else built from ``settings``).

    >>> from erank.serving import create_app                             # doctest: +SKIP
    >>> app = create_app(reranker=Reranker(mode="direct"))               # doctest: +SKIP
    """
    fastapi: Any = require("fastapi", "serve", "the HTTP server")
    from contextlib import asynccontextmanager

    from fastapi.exceptions import RequestValidationError
    from fastapi.openapi.utils import get_openapi
    from fastapi.responses import JSONResponse, PlainTextResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException

    class SafeJSONResponse(JSONResponse):
        """JSON that cannot fail on odd text (see :func:`~erank.serving.errors.json_bytes`)."""

        def render(self, content: Any) -> bytes:
            return json_bytes(content)

    settings = settings or ServeSettings.from_env()
    auth = bool(settings.api_keys())
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
        description="LLM reranking (ERank) with Cohere/Jina, TEI and erank endpoints. Every error has the "
        "body {message, error, error_type, field?}.",
        lifespan=lifespan,
        default_response_class=SafeJSONResponse,
        docs_url="/docs" if settings.docs else None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.service = service
    everywhere = (400, 500) + ((401, 403) if auth else ())
    rerank_errors = _errors(*sorted({*everywhere, 408, 413, 422, 429, 503, 504}))
    cohere_errors = _errors(*sorted({*everywhere, 404, 408, 413, 422, 429, 503, 504}))
    get_errors = _errors(*everywhere)
    open_errors = _errors(400, 500)

    def answer(
        request: Request,
        status: int,
        kind: str,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        request.scope[ERROR_KIND_KEY] = kind  # the guard counts it once, by this kind
        return SafeJSONResponse(error_body(kind, message, field), status_code=status, headers=headers)

    @app.exception_handler(HTTPError)
    async def _http_error(request: Request, exc: HTTPError) -> Any:
        return answer(request, exc.status, exc.kind, exc.message, exc.field, exc.headers)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Any:
        return answer(request, 499, "client_disconnected", "client disconnected")

    @app.exception_handler(StarletteHTTPException)
    async def _starlette(request: Request, exc: StarletteHTTPException) -> Any:
        path, status = request.url.path, exc.status_code
        if status == 404:
            return answer(
                request, 404, "not_found", f"there is no endpoint {path}; the endpoints are in /openapi.json"
            )
        if status == 405:
            allowed = (exc.headers or {}).get("Allow", "")
            return answer(
                request,
                405,
                "method_not_allowed",
                f"{request.method} is not allowed on {path}; use {allowed or 'another method'}",
                headers=dict(exc.headers or {}),
            )
        if status == 400:
            return answer(
                request,
                400,
                "invalid_json",
                "the request body could not be parsed: it is not JSON, or it is nested too deeply",
                "body",
            )
        return answer(request, status, f"http_{status}", str(exc.detail), headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> Any:
        errors = exc.errors()
        if any(e.get("type") == "json_invalid" for e in errors):
            first = errors[0]
            detail = (first.get("ctx") or {}).get("error", first.get("msg", ""))
            return answer(request, 400, "invalid_json", f"the body is not valid JSON: {detail}", "body")
        parts = []
        fields = []
        for e in errors[:10]:
            loc = [str(p) for p in e.get("loc", ()) if p != "body"]
            field = ".".join(loc) or "body"
            fields.append(field)
            parts.append(f"{field}: {e.get('msg', 'invalid')}")
        return answer(
            request,
            422,
            "invalid_input",
            "invalid request: " + "; ".join(parts),
            fields[0] if fields else None,
        )

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> Any:
        # Logged by the guard, which also keeps the connection open.
        return answer(request, 500, "internal", f"internal error: {type(exc).__name__}")

    # ------------------------------------------------------------ operations
    @app.get(
        "/health",
        summary="alive (open without an API key)",
        responses={200: {"model": HealthResponse}, **open_errors},
    )
    async def health() -> Any:
        return {"status": "ok"}

    @app.get(
        "/ready",
        summary="the model is loaded and the server is not draining (open without an API key)",
        responses={
            200: {"model": ReadyResponse},
            503: {"model": ReadyResponse, "description": _DESCRIPTIONS[503]},
            **open_errors,
        },
    )
    async def ready(request: Request) -> Any:
        if service.ready and not service.draining:
            return {"status": "ready", "model": service.model_name}
        if service.draining:
            status, kind, message = "draining", "shutting_down", "the server is shutting down"
        elif service.load_error:
            status, kind, message = "failed", "not_ready", service.load_error
        else:
            status, kind, message = "loading", "not_ready", "the model is still loading"
        request.scope[ERROR_KIND_KEY] = kind
        body = {"status": status, "model": service.model_name, **error_body(kind, message)}
        return SafeJSONResponse(body, status_code=503, headers={"Retry-After": "5"})

    @app.get(
        "/metrics",
        summary="Prometheus metrics (text)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **get_errors},
    )
    async def prometheus() -> Any:
        data, content_type = metrics.render()
        return PlainTextResponse(content=data, media_type=content_type)

    @app.get(
        "/v1/models", summary="the served model", responses={200: {"model": ModelsResponse}, **get_errors}
    )
    async def models() -> Any:
        name = service.model_name
        card = {"id": name, "object": "model", "created": 0, "owned_by": "erank"}
        return {"object": "list", "data": [card], "models": [{"name": name, "endpoints": ["rerank"]}]}

    # ------------------------------------------------------------ rerank
    async def _cohere(body: CohereRerankRequest, request: Request, version: str) -> dict[str, Any]:
        check_strings(body.model_dump(exclude_none=True), "")
        service.check_model(body.model)
        query = _check_query(body.query)
        instruction = _check_instruction(body.instruction)
        warnings: list[str] = []
        texts = _document_texts(body.documents, settings, body.rank_fields, warnings)
        n_tokens = _max_tokens(body.max_tokens_per_doc, settings)
        top = _top_n(body.top_n, len(texts), warnings)
        scores, tokens, instr_cut = await service.score(request, query, texts, instruction, n_tokens)
        _record(scores, tokens, request.url.path)
        _truncation_warning([s.truncated for s in scores], n_tokens, warnings)
        _instruction_warning(instr_cut, settings, warnings)
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

    cohere_responses: dict[int | str, dict[str, Any]] = {
        200: {"model": CohereRerankResponse},
        **cohere_errors,
    }

    @app.post("/v1/rerank", summary="Cohere v1 / Jina rerank", responses=cohere_responses)
    async def rerank_v1(body: CohereRerankRequest, request: Request) -> Any:
        return await _cohere(body, request, "1")

    @app.post("/v2/rerank", summary="Cohere v2 rerank", responses=cohere_responses)
    async def rerank_v2(body: CohereRerankRequest, request: Request) -> Any:
        return await _cohere(body, request, "2")

    @app.post(
        "/rerank",
        summary="TEI rerank",
        responses={200: {"model": list[TEIRerankItem]}, **rerank_errors},
    )
    async def rerank_tei(body: TEIRerankRequest, request: Request) -> Any:
        check_strings(body.model_dump(exclude_none=True), "")
        query = _check_query(body.query)
        instruction = _check_instruction(body.instruction)
        texts = _document_texts(body.texts, settings)
        n_tokens = settings.max_tokens_per_doc
        scores, tokens, instr_cut = await service.score(request, query, texts, instruction, n_tokens)
        _record(scores, tokens, request.url.path)
        out = []
        for i in ranking_from_scores([s.score for s in scores]):
            value = scores[i].score if body.raw_scores else service.relevance(scores[i].score)
            item: dict[str, Any] = {"index": i, "score": value}
            if body.return_text:
                item["text"] = texts[i]
            out.append(item)
        truncated = sum(1 for s in scores if s.truncated)
        headers = {"X-Erank-Truncated-Documents": str(truncated)}
        if instr_cut:
            headers["X-Erank-Instruction-Truncated"] = str(settings.max_instruction_tokens)
        return SafeJSONResponse(out, headers=headers)

    @app.post(
        "/score",
        summary="everything erank knows per document",
        responses={200: {"model": ScoreResponse}, **rerank_errors},
    )
    async def score(body: ScoreRequest, request: Request) -> Any:
        check_strings(body.model_dump(exclude_none=True), "")
        query = _check_query(body.query)
        instruction = _check_instruction(body.instruction)
        warnings: list[str] = []
        texts = _document_texts(body.documents, settings, None, warnings)
        n_tokens = _max_tokens(body.max_tokens_per_doc, settings)
        top = _top_n(body.top_n, len(texts), warnings)
        started = time.perf_counter()
        scores, tokens, instr_cut = await service.score(
            request, query, texts, instruction, n_tokens, body.return_reasoning
        )
        _record(scores, tokens, request.url.path)
        _truncation_warning([s.truncated for s in scores], n_tokens, warnings)
        _instruction_warning(instr_cut, settings, warnings)
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
        reranker_ = service.loaded
        return {
            "id": str(uuid.uuid4()),
            "model": service.model_name,
            "method": reranker_.method_name,
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

    # ------------------------------------------------------------ schema
    def openapi() -> dict[str, Any]:
        """FastAPI's schema plus what only the running server knows: its limits, the model names
        it accepts, and the API-key scheme when keys are set."""
        if app.openapi_schema is not None:
            return dict(app.openapi_schema)
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        comps = schema.get("components", {}).get("schemas", {})
        for name, field in (
            ("CohereRerankRequest", "documents"),
            ("ScoreRequest", "documents"),
            ("TEIRerankRequest", "texts"),
        ):
            prop = comps.get(name, {}).get("properties", {}).get(field)
            if prop is not None:
                prop["minItems"], prop["maxItems"] = 1, settings.max_documents
        from erank.prompts import instruction_names

        for name in ("CohereRerankRequest", "ScoreRequest", "TEIRerankRequest"):
            prop = comps.get(name, {}).get("properties", {}).get("instruction")
            if prop is not None:  # a known name, or free text (a name-like typo is a 422)
                text = {"type": "string", "pattern": FREE_TEXT_PATTERN}
                prop["anyOf"] = [
                    {"type": "string", "enum": sorted(instruction_names())},
                    text,
                    {"type": "null"},
                ]
        model = comps.get("CohereRerankRequest", {}).get("properties", {}).get("model")
        if model is not None and not settings.allow_any_model:
            model["anyOf"] = [{"type": "string", "enum": service.model_names()}, {"type": "null"}]
        if auth:
            schema["components"]["securitySchemes"] = {"apiKey": {"type": "http", "scheme": "bearer"}}
            for path, operations in schema.get("paths", {}).items():
                if path not in ("/health", "/ready"):
                    for op in operations.values():
                        op["security"] = [{"apiKey": []}]
        if service.ready:  # the served model's names are final once it is loaded
            app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
    return Guard(app, settings, metrics, service)
