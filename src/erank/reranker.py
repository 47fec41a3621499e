"""The one class most users need: :class:`Reranker`.

>>> from erank import Reranker, hybrid_scores                       # doctest: +SKIP
>>> reranker = Reranker()                                          # the embedded default model  # doctest: +SKIP
>>> docs = [{"content": "Paris is the capital of France.", "first_stage_score": 3.1},
...         {"content": "Bananas are yellow.", "first_stage_score": 0.4}]  # doctest: +SKIP
>>> results = reranker.rerank("capital of France", docs, "beir")   # doctest: +SKIP
>>> [r["content"] for r in hybrid_scores(results, alpha=0.2)]      # doctest: +SKIP
['Paris is the capital of France.', 'Bananas are yellow.']
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

from erank.engines import Engine, create_engine
from erank.errors import InputError
from erank.methods import Method, check_method_kwargs, create_method
from erank.models import default_method_settings
from erank.types import Prepared, RerankRequest, RerankResult, Unit

__all__ = ["Reranker", "load_reranker"]


class Reranker:
    """A reranker: a method (default ERank) on an engine (default transformers).

    Args:
        model: a hub id (``"Alibaba-NLP/ERank-4B"``), a local model folder, a ``.gguf`` file, or
            ``None`` for the embedded default model (SmolLM2-135M-Instruct).
        method: ``"erank"`` (default) or another registered method (``erank.methods.METHODS``).
        engine: an engine name (``erank.engines.ENGINES``) or an :class:`~erank.engines.Engine`.
        mode: ``"direct"`` or ``"reasoning"`` for ERank. Default: ``direct`` for the embedded
            135M models, ``reasoning`` (the checkpoints' reference behaviour) for any other.
            The embedded erank-smol also ranks by the expected score by default (``rule``).
        device, dtype, batch_tokens: passed to the engine.
        engine_kwargs: any other engine arguments.
        **method_kwargs: method arguments (``scale``, ``max_new_tokens``, ``template``...), checked
            by name before the model loads: a misspelt one raises :class:`~erank.errors.InputError`
            listing the method's arguments.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        method: str = "erank",
        engine: str | Engine = "transformers",
        mode: str | None = None,
        device: str | None = None,
        dtype: Any = None,
        batch_tokens: int | None = None,
        engine_kwargs: dict[str, Any] | None = None,
        **method_kwargs: Any,
    ) -> None:
        # Method name and arguments are checked before the engine loads the model.
        check_method_kwargs(method, {**method_kwargs, **({"mode": mode} if mode is not None else {})})
        if isinstance(engine, Engine):
            self.engine = engine
        else:
            kwargs = dict(engine_kwargs or {})
            for key, value in (("device", device), ("dtype", dtype), ("batch_tokens", batch_tokens)):
                if value is not None:
                    kwargs[key] = value
            self.engine = create_engine(engine, model, **kwargs)
        if method == "erank":
            # an engine passed in carries its own model: its name decides the presets
            preset = default_method_settings(self.engine.model_name if isinstance(engine, Engine) else model)
            mode = mode or preset.get("mode", "reasoning")
            if mode == "direct":
                for key in ("rule", "template"):
                    if key in preset:
                        method_kwargs.setdefault(key, preset[key])
        if mode is not None:
            method_kwargs["mode"] = mode
        self.method: Method = create_method(method, self.engine, **method_kwargs)

    @property
    def model_name(self) -> str:
        return self.engine.model_name

    @property
    def mode(self) -> str:
        return self.method.mode

    @property
    def pointwise(self) -> bool:
        """True when each document's score is independent of the others (``Method.pointwise``)."""
        return self.method.pointwise

    @property
    def method_name(self) -> str:
        return self.method.name

    @property
    def score_scale(self) -> float | None:
        """What a score is divided by for a 0..1 relevance (ERank: its scale, 10); ``None`` where
        the method's scores have no fixed top."""
        return self.method.score_scale

    def identity(self) -> dict[str, Any]:
        """What determines the scores: model, engine, method, mode and the method's arguments
        (:meth:`erank.methods.Method.identity`); the key of the evaluation score cache."""
        return self.method.identity()

    def score(
        self,
        query: str,
        docs: Sequence[Any],
        instruction: str | None = None,
        truncate_length: int | None = 2048,
        *,
        return_reasoning: bool = False,
    ) -> RerankResult:
        """The typed result: per document the integer, its probability, the distribution..."""
        return self.method.rerank(
            query, docs, instruction, truncate_length=truncate_length, return_reasoning=return_reasoning
        )

    # ------------------------------------------------------------------ batching
    def prepare(
        self,
        query: str,
        docs: Sequence[Any],
        instruction: str | None = None,
        truncate_length: int | None = 2048,
        *,
        return_reasoning: bool = False,
        instruction_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
    ) -> Prepared:
        """Validate one query and cut its work into units (:meth:`erank.methods.Method.prepare`).

        With :meth:`run` and :meth:`finish`, for callers that batch the units of several queries
        into one model call (the HTTP server); :meth:`score_many` does all three.
        """
        return self.method.prepare(
            query,
            docs,
            instruction,
            truncate_length=truncate_length,
            return_reasoning=return_reasoning,
            instruction_tokens=instruction_tokens,
            max_prompt_tokens=max_prompt_tokens,
        )

    def run(self, units: Sequence[Unit]) -> list[Any]:
        """The results of units of any queries prepared by this reranker, in one model call where
        the method can split a query (ERank), one query after another otherwise."""
        return self.method.run(units)

    def finish(self, prepared: Prepared, results: Sequence[Any]) -> RerankResult:
        """The :class:`RerankResult` of a prepared query from the results of its units."""
        return self.method.finish(prepared, results)

    def score_many(self, requests: Sequence[RerankRequest]) -> list[RerankResult]:
        """Score several queries with their units in one :meth:`run` (one model call for ERank).

        >>> from erank import RerankRequest, Reranker                            # doctest: +SKIP
        >>> r = Reranker(mode="direct")                                          # doctest: +SKIP
        >>> [res.ranking for res in r.score_many([RerankRequest("rust", ["Rust.", "Tea."]),
        ...                                        RerankRequest("tea", ["Rust.", "Tea."])])]  # doctest: +SKIP
        [[0, 1], [1, 0]]
        """
        prepared = [
            self.prepare(
                r.query,
                r.documents,
                r.instruction,
                r.truncate_length,
                return_reasoning=r.return_reasoning,
            )
            for r in requests
        ]
        results = self.run([u for p in prepared for u in p.units])
        out: list[RerankResult] = []
        at = 0
        for p in prepared:
            out.append(self.finish(p, results[at : at + len(p.units)]))
            at += len(p.units)
        return out

    def rerank(
        self,
        query: str,
        docs: Sequence[Any],
        instruction: str | None = None,
        truncate_length: int | None = 2048,
        *,
        top_k: int | None = None,
    ) -> list[dict[str, Any]]:
        """The official ERank shape: the input dicts plus ``"rank_score"``, highest first.

        String documents come back as ``{"content": text}``.
        """
        if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0):
            raise InputError(f"top_k must be a non-negative integer, got {top_k!r}")
        result = self.score(query, docs, self._instruction(instruction), truncate_length)
        return self._rows(result, docs)[:top_k]

    def _instruction(self, instruction: str | None) -> str | None:
        """The instruction :meth:`rerank` scores with (a subclass may read it another way)."""
        return instruction

    def _rows(self, result: RerankResult, docs: Sequence[Any]) -> list[dict[str, Any]]:
        """:meth:`rerank`'s rows, best first (:meth:`RerankResult.as_dicts`)."""
        return result.as_dicts()

    def as_langchain_compressor(self, top_n: int = 3, **kwargs: Any) -> Any:
        """This reranker as a LangChain document compressor (extra ``langchain``)."""
        from erank.integrations import langchain_compressor

        return langchain_compressor(self, top_n=top_n, **kwargs)

    def as_llamaindex_postprocessor(self, top_n: int = 3, **kwargs: Any) -> Any:
        """This reranker as a LlamaIndex node postprocessor (extra ``llamaindex``)."""
        from erank.integrations import llamaindex_postprocessor

        return llamaindex_postprocessor(self, top_n=top_n, **kwargs)

    def close(self) -> None:
        self.engine.close()

    def __repr__(self) -> str:
        return f"Reranker(model={self.model_name!r}, method={self.method.name!r}, mode={self.mode!r}, engine={self.engine.name!r})"


def load_reranker(model: str | os.PathLike[str] | None = None, **kwargs: Any) -> Reranker:
    """Same as :class:`Reranker` (a factory for symmetry with other toolkits)."""
    return Reranker(model, **kwargs)
