"""What every ranking method shares: input validation, truncation, result assembly.

A method turns (query, documents, instruction) into a :class:`~erank.types.RerankResult` using an
:class:`~erank.engines.base.Engine`. Methods build prompts and parse outputs; they never touch
torch or an HTTP client directly.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

from erank.engines.base import Engine
from erank.errors import InputError
from erank.prompts import resolve_instruction
from erank.types import Document, DocumentScore, RerankResult, Usage, ranking_from_scores, to_documents

__all__ = ["Method", "validate_query", "validate_truncate_length", "Truncator"]


def validate_query(query: Any) -> str:
    if not isinstance(query, str):
        raise InputError(f"query must be a string, got {type(query).__name__}")
    if not query.strip():
        raise InputError("query is empty; pass the text of the query")
    return query


def validate_truncate_length(n: Any) -> int | None:
    if n is None:
        return None
    if isinstance(n, bool) or not isinstance(n, int):
        raise InputError(f"truncate_length must be a positive integer or None, got {n!r}")
    if n <= 0:
        raise InputError(f"truncate_length must be a positive integer (tokens), got {n}")
    return n


class Truncator:
    """Cuts a text to its first ``n`` tokens (tokenize, keep, decode: spec 2.2)."""

    def __init__(self, engine: Engine) -> None:
        self.tok = engine.tokenizer

    def __call__(self, text: str, n: int | None) -> tuple[str, bool]:
        if n is None or not text:
            return text, False
        # A cheap bound first: every token covers at least one UTF-8 byte, so a text of n bytes or
        # fewer never needs cutting.
        if len(text.encode("utf-8", "surrogatepass")) <= n:
            return text, False
        # Tokenise only a generous prefix of a huge document (the first n tokens of a prefix are
        # those of the whole text unless the prefix ends within them).
        if len(text) > n * 32:
            ids = self.tok.encode(text[: n * 32])
            if len(ids) > n + 8:
                return self.tok.decode(ids[:n]), True
        ids = self.tok.encode(text)
        if len(ids) <= n:
            return text, False
        return self.tok.decode(ids[:n]), True


class Method(ABC):
    """A ranking paradigm (ERank pointwise, yes/no, listwise, pairwise, setwise...)."""

    name: str = "method"
    default_instruction: str = "beir"
    #: True when every document is scored independently of the others (results of separate
    #: calls can be merged); False for listwise, pairwise and setwise methods.
    pointwise: bool = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.truncate = Truncator(engine)
        #: Method-specific events of the last :meth:`rerank` call (``{"repaired_windows": 1}``
        #: for listwise...); empty for methods without such events (erank, yesno).
        self.last_counters: dict[str, int] = {}

    @property
    def mode(self) -> str:
        return ""

    def rerank(
        self,
        query: str,
        documents: Sequence[Any],
        instruction: str | None = None,
        *,
        truncate_length: int | None = 2048,
        return_reasoning: bool = False,
    ) -> RerankResult:
        """Score and order ``documents`` for ``query``; see :class:`~erank.types.RerankResult`."""
        query = validate_query(query)
        n = validate_truncate_length(truncate_length)
        docs = to_documents(documents)
        instr = resolve_instruction(instruction, self.default_instruction)
        start = time.perf_counter()
        self.last_counters = {}
        if not docs:
            scores: list[DocumentScore] = []
            usage = Usage()
        else:
            scores, usage = self._score(query, docs, instr, n, return_reasoning)
        usage.seconds = time.perf_counter() - start
        usage.unparsed = sum(1 for s in scores if not s.parsed)
        usage.truncated_documents = sum(1 for s in scores if s.truncated)
        return RerankResult(
            query=query,
            instruction=instr,
            documents=docs,
            scores=scores,
            ranking=self._ranking(scores),
            usage=usage,
            method=self.name,
            model=self.engine.model_name,
            mode=self.mode,
        )

    def _truncate_inputs(
        self, query: str, docs: list[Document], truncate_length: int | None
    ) -> tuple[str, list[tuple[str, bool]]]:
        """The query and every document cut to ``truncate_length`` tokens (``(text, was_cut)`` each)."""
        q, _ = self.truncate(query, truncate_length)
        return q, [self.truncate(d.content, truncate_length) for d in docs]

    def _ranking(self, scores: list[DocumentScore]) -> list[int]:
        return ranking_from_scores([s.score for s in scores])

    @abstractmethod
    def _score(
        self,
        query: str,
        docs: list[Document],
        instruction: str,
        truncate_length: int | None,
        return_reasoning: bool,
    ) -> tuple[list[DocumentScore], Usage]:
        """Per-document scores in input order, and the usage."""
