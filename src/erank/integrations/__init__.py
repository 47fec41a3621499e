"""Rerankers for LangChain and LlamaIndex (optional extras ``langchain`` and ``llamaindex``).

The classes live in :mod:`erank.integrations.langchain` and :mod:`erank.integrations.llamaindex`,
which import their framework at import time; the factories here import it only when called and
raise :class:`~erank.errors.MissingExtraError` naming the extra when it is absent.

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> from erank.integrations import langchain_compressor, llamaindex_postprocessor  # doctest: +SKIP
>>> compressor = langchain_compressor(Reranker(), top_n=3)                      # doctest: +SKIP
>>> postprocessor = llamaindex_postprocessor(Reranker(), top_n=3)               # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from erank.errors import InputError, require
from erank.types import Scorer

__all__ = ["langchain_compressor", "llamaindex_postprocessor"]


def langchain_compressor(reranker: Scorer | None = None, *, top_n: int | None = 3, **kwargs: Any) -> Any:
    """A LangChain ``BaseDocumentCompressor`` that reranks with ``reranker`` (default: a new ``Reranker()``).

    ``kwargs``: ``instruction``, ``truncate_length``, ``score_key`` (see
    :class:`erank.integrations.langchain.ERankCompressor`).
    """
    require("langchain_core", "langchain", "the LangChain integration")
    from erank.integrations.langchain import ERankCompressor

    return ERankCompressor(reranker=_reranker(reranker), top_n=top_n, **kwargs)


def llamaindex_postprocessor(reranker: Scorer | None = None, *, top_n: int | None = 3, **kwargs: Any) -> Any:
    """A LlamaIndex ``BaseNodePostprocessor`` that reranks with ``reranker`` (default: a new ``Reranker()``).

    ``kwargs``: ``instruction``, ``truncate_length``, ``keep_retrieval_score`` (see
    :class:`erank.integrations.llamaindex.ERankPostprocessor`).
    """
    require("llama_index.core", "llamaindex", "the LlamaIndex integration")
    from erank.integrations.llamaindex import ERankPostprocessor

    return ERankPostprocessor(reranker=_reranker(reranker), top_n=top_n, **kwargs)


def _reranker(reranker: Scorer | None) -> Scorer:
    if reranker is None:
        from erank.reranker import Reranker

        return Reranker()
    return reranker


def check_settings(data: dict[str, Any]) -> None:
    """What both framework wrappers accept: ``top_n`` a non-negative integer or None, and a reranker
    with a ``score()`` method (an :class:`erank.Reranker` or any :class:`erank.types.Scorer`)."""
    top_n = data.get("top_n", 3)
    if top_n is not None and (isinstance(top_n, bool) or not isinstance(top_n, int) or top_n < 0):
        raise InputError(f"top_n must be a non-negative integer or None, got {top_n!r}")
    if data.get("reranker") is None or not callable(getattr(data["reranker"], "score", None)):
        raise InputError("reranker must be an erank Reranker (an object with a score() method)")
