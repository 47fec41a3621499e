"""What every ranking method shares: input validation, truncation, result assembly.

A method turns (query, documents, instruction) into a :class:`~erank.types.RerankResult` using an
:class:`~erank.engines.base.Engine`. Methods build prompts and parse outputs; they never touch
torch or an HTTP client directly.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
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


def _plain(value: Any) -> Any:
    """A JSON-friendly, short form of a constructor argument (long texts as a hash)."""
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return value if len(value) <= 64 else "sha256:" + hashlib.sha256(value.encode()).hexdigest()[:16]
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    return _plain(repr(value))


def _recording(init: Callable[..., None]) -> Callable[..., None]:
    """Wrap a method's ``__init__`` so the instance remembers the arguments it was built with.

    Every constructor in the class chain records its bound arguments (defaults applied, ``**kwargs``
    flattened); a parent's record of a forwarded argument replaces the child's, so the record holds
    the values the method actually uses.
    """
    sig = inspect.signature(init)

    @functools.wraps(init)
    def wrapper(self: Method, *args: Any, **kwargs: Any) -> None:
        try:
            bound = sig.bind(self, *args, **kwargs)
        except TypeError:
            init(self, *args, **kwargs)  # let the constructor raise its own error
            return
        bound.apply_defaults()
        record: dict[str, Any] = self.__dict__.setdefault("_arguments", {})
        for name, value in list(bound.arguments.items())[2:]:  # self, engine
            kind = sig.parameters[name].kind
            if kind is inspect.Parameter.VAR_KEYWORD:
                record.update(value)
            elif kind is not inspect.Parameter.VAR_POSITIONAL:
                record[name] = value
        init(self, *args, **kwargs)

    return wrapper


class Method(ABC):
    """A ranking paradigm (ERank pointwise, yes/no, listwise, pairwise, setwise...)."""

    name: str = "method"
    default_instruction: str = "beir"
    #: True when every document is scored independently of the others (results of separate
    #: calls can be merged); False for listwise, pairwise, setwise and groupwise methods.
    pointwise: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None:
            cls.__init__ = _recording(init)  # type: ignore[method-assign]

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.truncate = Truncator(engine)
        #: Method-specific events of the last :meth:`rerank` call (``{"repaired_windows": 1}``
        #: for listwise...); empty for methods without such events (erank, yesno).
        self.last_counters: dict[str, int] = {}

    @property
    def mode(self) -> str:
        return ""

    def identity(self) -> dict[str, Any]:
        """What determines this method's scores, for caches and reports: the model and engine,
        the method, its mode, every constructor argument (defaults included) and a hash of the
        prompt template it resolved. Two methods with equal identities give equal scores; two
        configurations that differ in any argument (``window``, ``top_k``, ``answer_prefix``...)
        never share one.
        """
        ident: dict[str, Any] = {
            "model": self.engine.model_name,
            "engine": self.engine.name,
            "method": self.name,
            "class": f"{type(self).__module__}.{type(self).__qualname__}",
            "mode": self.mode,
            "arguments": _plain(getattr(self, "_arguments", {})),
        }
        template = getattr(self, "template", None)
        if isinstance(template, str):
            ident["prompt"] = hashlib.sha256(template.encode()).hexdigest()[:16]
        return ident

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
