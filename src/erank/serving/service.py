"""The model behind the HTTP app: one :class:`~erank.Reranker`, its micro-batching queue, and the
walk of one request through them.

A request is prepared (validated, cut and tokenised by :meth:`erank.Reranker.prepare`, in a
thread), its units go into the :class:`~erank.serving.batcher.MicroBatcher`, the single worker
thread runs the units of concurrent requests together (:meth:`erank.Reranker.run`, one engine call
for ERank's pairs), and the request's own results are assembled by :meth:`erank.Reranker.finish`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import TYPE_CHECKING, Any

from erank.errors import ERankError, InputError, PromptBudgetError
from erank.models import DEFAULT_MODEL
from erank.serving.batcher import BatcherStoppedError, MicroBatcher, QueueFullError
from erank.serving.errors import ClientGone, HTTPError
from erank.serving.metrics import ServeMetrics
from erank.serving.settings import ServeSettings
from erank.types import DocumentScore, Prepared, Unit

if TYPE_CHECKING:
    from erank.reranker import Reranker

__all__ = ["GENERIC_MODEL_NAMES", "RerankService"]

logger = logging.getLogger(__name__)

#: Names a request's ``model`` may always give for "the model this server runs".
GENERIC_MODEL_NAMES = ("erank", "default")


class RerankService:
    """The model, its micro-batching queue and the per-request work around them.

    Args:
        settings: limits and batching parameters.
        reranker: an already built :class:`~erank.reranker.Reranker`; if ``None`` one is built from
            ``settings`` in a background thread at startup (``/ready`` says when it is loaded).
    """

    def __init__(
        self, settings: ServeSettings, reranker: Reranker | None = None, metrics: ServeMetrics | None = None
    ) -> None:
        self.settings = settings
        self.metrics = metrics or ServeMetrics()
        self.reranker: Reranker | None = None
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

    @property
    def loaded(self) -> Reranker:
        """The reranker, once loaded (a 503 before)."""
        if self.reranker is None:
            raise HTTPError(503, "not_ready", "the model is still loading; retry shortly")
        return self.reranker

    def _activate(self, reranker: Reranker) -> None:
        self.reranker = reranker
        s = self.settings
        batch_tokens = s.max_batch_tokens or int(getattr(reranker.engine, "batch_tokens", 0) or 8192)
        # Every method's units go through one queue: a unit is a pair's prompt (ERank) or a whole
        # request (methods that cannot split), weighted by its prompt tokens either way.
        self.batcher = MicroBatcher(
            self._score_items,
            max_batch_items=s.max_batch_pairs,
            max_batch_weight=batch_tokens,
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
        """Validate, cut and tokenise a request (runs in a thread pool, not on the event loop).

        A request's own instruction is cut to ``max_instruction_tokens``; the request's prompt
        tokens must stay within ``max_request_tokens`` (a 413 otherwise).
        """
        s = self.settings
        try:
            return self.loaded.prepare(
                query,
                texts,
                instruction or s.instruction,
                max_tokens,
                return_reasoning=return_reasoning,
                instruction_tokens=s.max_instruction_tokens if instruction is not None else None,
                max_prompt_tokens=s.max_request_tokens,
            )
        except PromptBudgetError as exc:
            raise HTTPError(
                413,
                "too_many_tokens",
                f"the request's prompts exceed {exc.limit} tokens (--max-request-tokens) by "
                f"document {exc.document} of {exc.documents}; send fewer documents, or a smaller "
                "max_tokens_per_doc",
                field="documents",
            ) from exc

    def _score_items(self, units: list[Unit], key: Any) -> list[Any]:
        """The worker thread's scorer: the units of the batch's requests in one reranker call."""
        return list(self.loaded.run(units))

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
        cut, through the shared queue: prepare (a thread), run (the worker, with the units of
        other requests), finish."""
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
            job = self.batcher.submit(prep.units, weights=[u.weight for u in prep.units])
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
                    result = self.loaded.finish(prep, job.future.result())
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
        return result.scores, result.usage.prompt_tokens, prep.instruction_truncated

    def relevance(self, score: float) -> float:
        """A 0..1 relevance (Cohere, Jina, TEI without raw scores): ERank's rank_score / scale."""
        scale = self.loaded.score_scale
        if scale:
            return max(0.0, min(1.0, score / float(scale)))
        return score


async def _wait_disconnect(request: Any) -> None:
    """Returns when the client disconnects (the request body has been read already)."""
    while True:
        message = await request.receive()
        if message.get("type") == "http.disconnect":
            return
