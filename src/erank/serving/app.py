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
import re
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from erank.errors import ERankError, InputError, MissingExtraError, require
from erank.models import DEFAULT_MODEL
from erank.serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from erank.serving.errors import ERROR_KIND_KEY, ClientGone, HTTPError, error_body, json_bytes
from erank.serving.guard import Guard
from erank.serving.metrics import ServeMetrics
from erank.serving.schemas import (
    CohereDocument,
    CohereRerankRequest,
    CohereRerankResponse,
    ErrorBody,
    HealthResponse,
    ModelsResponse,
    ReadyResponse,
    ScoreDocument,
    ScoreRequest,
    ScoreResponse,
    TEIRerankItem,
    TEIRerankRequest,
)
from erank.serving.settings import ServeSettings
from erank.types import DocumentScore, ranking_from_scores

try:  # FastAPI resolves the endpoints' annotations from this module's globals
    from fastapi import Request
except ImportError as _exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError("fastapi", "serve", "the HTTP server") from _exc

__all__ = ["create_app", "RerankService", "HTTPError", "check_strings", "check_text"]

logger = logging.getLogger(__name__)

#: Names a request's ``model`` may always give for "the model this server runs".
GENERIC_MODEL_NAMES = ("erank", "default")


# ---------------------------------------------------------------------------------------- service
@dataclass
class Prepared:
    """A request's pairs, ready for the model."""

    items: list[Any]
    key: Any
    truncated: list[bool]
    prompt_tokens: int
    weights: list[int] | None = None
    instruction_truncated: bool = False


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
        #: requests admitted to the rerank endpoints and not answered yet (the guard counts them)
        self.admitted = 0
        #: set by the first SIGTERM: /ready answers 503 and new rerank requests are refused
        self.draining = False
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

    def model_names(self) -> list[str]:
        """Every name a request's ``model`` may give: the served name, the name the server was
        started with (``--model``, its folder or file name), ``--model-alias`` names, and the
        generic ``erank`` and ``default``."""
        names = [self.model_name, *GENERIC_MODEL_NAMES, *self.settings.model_names()]
        if self.reranker is not None:
            names.append(str(self.reranker.model_name))
        given = self.settings.model
        if given is None:
            if self._given is None:  # the embedded default is what loads
                names.append(DEFAULT_MODEL)
        else:
            names.append(given)
            tail = given.rstrip("/").rsplit("/", 1)[-1]
            names += [tail, tail.removesuffix(".gguf")]
        return list(dict.fromkeys(n for n in names if n))

    def check_model(self, name: str | None) -> None:
        """A 404 for a ``model`` this server does not run (unless ``allow_any_model``)."""
        if name is None or self.settings.allow_any_model or name in self.model_names():
            return
        raise HTTPError(
            404,
            "model_not_found",
            f"model {name!r} is not served here; this server runs {self.model_name!r} "
            f"(accepted names: {', '.join(repr(n) for n in self.model_names())}; start it with "
            "--allow-any-model to accept any name)",
            field="model",
        )

    def begin_drain(self) -> None:
        """Refuse new work and report not ready; what was admitted finishes."""
        self.draining = True
        self.metrics.ready.set(0)

    def start(self) -> None:
        """Load the model (in a thread unless one was given), then start the worker."""
        if self._given is not None:
            self._activate(self._given)
            return
        threading.Thread(target=self._load, name="erank-model-loader", daemon=True).start()

    def _load(self) -> None:
        s = self.settings
        try:
            logger.info(
                "loading model %s (engine %s, method %s, mode %s)",
                s.model or "default",
                s.engine,
                s.method,
                s.mode or "default",
            )
            reranker = s.load_reranker()
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
        batch_tokens = s.max_batch_tokens or int(getattr(method.engine, "batch_tokens", 0) or 8192)
        self.batcher = MicroBatcher(
            self._score_items,
            max_batch_items=s.max_batch_pairs if self.pairwise else max(1, s.max_batch_pairs // 16),
            max_batch_weight=batch_tokens if self.pairwise else None,
            max_wait_s=s.max_wait_ms / 1000.0,
            max_queue=s.max_queue,
            cross_request=s.cross_batching,
            on_batch=self.metrics.observe_batch,
        )
        self.batcher.start()
        self._ready.set()
        self.metrics.ready.set(1)
        logger.info(
            "model %s ready (mode %s; at most %d prompt tokens per model call)",
            reranker.model_name,
            reranker.mode,
            batch_tokens,
        )

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
        """Cut and tokenise every pair (runs in a thread pool, not on the event loop).

        A request's own instruction is cut to ``max_instruction_tokens``; the request's prompt
        tokens must stay within ``max_request_tokens`` (a 413 otherwise).
        """
        from erank.prompts import resolve_instruction

        method = self.reranker.method
        s = self.settings
        instr = resolve_instruction(instruction or s.instruction, method.default_instruction)
        instruction_cut = False
        if instruction is not None:
            instr, instruction_cut = method.truncate(instr, s.max_instruction_tokens)
        if not self.pairwise:
            item = (query, texts, instr, max_tokens, return_reasoning)
            return Prepared(
                items=[item],
                key=("request", return_reasoning),
                truncated=[False] * len(texts),
                prompt_tokens=0,
                instruction_truncated=instruction_cut,
            )
        tok = method.engine.tokenizer
        q, _ = method.truncate(query, max_tokens)
        prompts: list[list[int]] = []
        truncated: list[bool] = []
        total = 0
        for i, text in enumerate(texts):
            cut_text, cut = method.truncate(text, max_tokens)
            truncated.append(cut)
            prompt = tok.encode_prompt(method.build_prompt(q, cut_text, instr))
            total += len(prompt)
            if total > s.max_request_tokens:
                raise HTTPError(
                    413,
                    "too_many_tokens",
                    f"the request's prompts exceed {s.max_request_tokens} tokens (--max-request-tokens) by "
                    f"document {i} of {len(texts)}; send fewer documents, or a smaller max_tokens_per_doc",
                    field="documents",
                )
            prompts.append(prompt)
        return Prepared(
            items=prompts,
            key=("pairs", return_reasoning),
            truncated=truncated,
            prompt_tokens=total,
            weights=[len(p) for p in prompts],
            instruction_truncated=instruction_cut,
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
    ) -> tuple[list[DocumentScore], int, bool]:
        """Per-document scores (input order), the prompt tokens and whether the instruction was
        cut, through the shared queue."""
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
            job = self.batcher.submit(prep.items, prep.key, weights=prep.weights)
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
                # Its pairs not yet in a model call are dropped now; a call already running is
                # not interrupted, and it is bounded (max_batch_tokens).
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
        return scores, tokens, prep.instruction_truncated

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
def check_strings(value: Any, field: str) -> None:
    """Every string in ``value`` (keys too, any depth) is valid Unicode: a lone UTF-16 surrogate
    (``"\\ud800"`` in the JSON) is a 422 naming the field, wherever it sits."""
    stack: list[tuple[Any, str]] = [(value, field)]
    while stack:  # iterative: a deeply nested document object cannot exhaust the stack
        item, where = stack.pop()
        if isinstance(item, str):
            _check_unicode(item, where)
        elif isinstance(item, dict):
            for k, v in item.items():
                inner = f"{where}.{k}" if where else str(k)
                _check_unicode(str(k), f"{inner} (a key)")
                stack.append((v, inner))
        elif isinstance(item, (list, tuple)):
            stack.extend((v, f"{where}[{i}]") for i, v in enumerate(item))


def _check_unicode(value: str, field: str) -> None:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise HTTPError(
            422,
            "invalid_input",
            f"{field} is not valid Unicode (an unpaired surrogate at character {exc.start}); send valid UTF-8 text",
            field=field.split(" ")[0],
        ) from None


def check_text(value: str, field: str, what: str) -> str:
    """One rule for every text field: not empty, not whitespace only, valid Unicode."""
    _check_unicode(value, field)
    if not value.strip():
        raise HTTPError(422, "invalid_input", f"{field} is empty; {what}", field=field)
    return value


def _check_query(query: str) -> str:
    return check_text(query, "query", "send the text of the query")


#: What an instruction name may hold; a text of these characters only must be a known name.
INSTRUCTION_NAME = re.compile(r"[A-Za-z0-9_./\-]+")
#: The schema's rule for free-text instructions: some character a name cannot hold.
FREE_TEXT_PATTERN = r"[^A-Za-z0-9_./\s-]|\S\s+\S"


def _check_instruction(instruction: str | None) -> str | None:
    if instruction is None:
        return None
    check_text(instruction, "instruction", "leave it out for the server's default, or send its text")
    from erank.prompts import instruction_names

    key = instruction.strip()
    if INSTRUCTION_NAME.fullmatch(key) and key not in instruction_names():
        raise HTTPError(
            422,
            "invalid_input",
            f"unknown instruction name {key!r}; known names: {', '.join(sorted(instruction_names()))} "
            "(or pass the instruction as free text, several words)",
            field="instruction",
        )
    return instruction


def _document_texts(
    documents: Sequence[str | CohereDocument | ScoreDocument],
    settings: ServeSettings,
    rank_fields: list[str] | None = None,
    warnings: list[str] | None = None,
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
    fallback: list[int] = []
    for i, d in enumerate(documents):
        field = f"documents[{i}]"
        if isinstance(d, str):
            texts.append(check_text(d, field, "remove it or send its text"))
            continue
        values: dict[str, Any] = dict(d.model_extra or {})
        # A Cohere object's fields are all text that rank_fields may name; an erank object's
        # other keys are metadata, returned as they came.
        texts_of = list(values) if isinstance(d, CohereDocument) else []
        for name in ("text", "content"):
            if getattr(d, name, None) is not None:
                values[name] = getattr(d, name)
                texts_of.append(name)
        for key in texts_of:
            check_text(values[key], f"{field}.{key}", "remove the field or send its text")
        text: str | None = None
        if rank_fields:
            lines = [f"{k}: {values[k]}" for k in rank_fields if isinstance(values.get(k), str)]
            if lines:
                text = "\n".join(lines)
            else:
                fallback.append(i)
        if text is None:
            text = values.get("text") if values.get("text") is not None else values.get("content")
        if text is None:
            wanted = (
                f"none of the rank_fields {rank_fields} and no 'text'" if rank_fields else "a 'text' string"
            )
            raise HTTPError(
                422, "invalid_input", f"{field} is an object without {wanted}", field=field + ".text"
            )
        texts.append(text)
    if fallback and warnings is not None and rank_fields:
        shown = fallback[:20]
        more = "" if len(fallback) <= 20 else f" and {len(fallback) - 20} more"
        warnings.append(
            f"documents {shown}{more} have none of the rank_fields {rank_fields}; their text was ranked"
        )
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


def _instruction_warning(cut: bool, settings: ServeSettings, warnings: list[str]) -> None:
    if cut:
        warnings.append(
            f"the instruction was cut to {settings.max_instruction_tokens} tokens (--max-instruction-tokens)"
        )


def _document_out(d: str | CohereDocument | ScoreDocument) -> dict[str, Any]:
    if isinstance(d, str):
        return {"text": d}
    return d.model_dump(exclude_none=True)


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


def create_app(settings: ServeSettings | None = None, reranker: Any = None) -> Any:
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
