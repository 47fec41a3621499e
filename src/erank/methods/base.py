"""What every ranking method shares: input validation, truncation, result assembly, batching.

A method turns (query, documents, instruction) into a :class:`~erank.types.RerankResult` using an
:class:`~erank.engines.base.Engine`. Methods build prompts and parse outputs; they never touch
torch or an HTTP client directly.

Every rerank runs in three steps, public so that a caller can batch the work of several queries
into one engine call (the HTTP server's queue, :meth:`erank.Reranker.score_many`):

1. :meth:`Method.prepare` validates the inputs and cuts them into :class:`Unit` s of model work
   (one tokenised prompt per document for a pointwise method that can split; one unit for the
   whole query otherwise);
2. :meth:`Method.run` runs units of any queries, in one engine call where the method can;
3. :meth:`Method.finish` assembles one query's unit results into its :class:`RerankResult`.

:meth:`Method.rerank` is exactly ``finish(prepared, run(prepared.units))``.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.errors import InputError, PromptBudgetError
from erank.methods._common import scores_from_order
from erank.prompts import resolve_instruction
from erank.types import (
    Document,
    DocumentScore,
    Prepared,
    RerankResult,
    Unit,
    Usage,
    ranking_from_scores,
    to_documents,
)

__all__ = [
    "Job",
    "Method",
    "Prepared",
    "PromptBudgetError",
    "Truncator",
    "Unit",
    "validate_query",
    "validate_truncate_length",
]


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


@dataclass
class Job:
    """One whole query's work for a method that scores it at once (listwise, pairwise, yes/no...).

    It holds the texts cut to the query's ``truncate_length`` and is the only way such a method
    calls its engine: :meth:`logprobs` and :meth:`generate` count the model calls and tokens in
    :attr:`usage`; :attr:`counters` are the method's events (``last_counters``).
    """

    engine: Engine
    query: str
    texts: list[str]
    truncated: list[bool]
    instruction: str
    return_reasoning: bool
    usage: Usage = field(default_factory=Usage)
    counters: dict[str, int] = field(default_factory=dict)
    #: the model's raw outputs, in order (a method that reports them with ``return_reasoning``)
    outputs: list[str] = field(default_factory=list)

    def chat(self, user: str, suffix: str = "") -> list[int]:
        """Token ids of ``user`` as one chat turn, generation prompt added, plus ``suffix``."""
        tok = self.engine.tokenizer
        return tok.encode_prompt(tok.chat_prompt(user) + suffix)

    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        """:meth:`Engine.logprobs`, counted in :attr:`usage`."""
        if not requests:
            return []
        self.usage.model_calls += len(requests)
        self.usage.prompt_tokens += sum(len(r.prompt_ids) for r in requests)
        return self.engine.logprobs(requests)

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        """:meth:`Engine.generate`, counted in :attr:`usage`."""
        if not requests:
            return []
        gens = self.engine.generate(requests)
        self.usage.model_calls += len(requests)
        self.usage.prompt_tokens += sum(len(r.prompt_ids) for r in requests)
        self.usage.generated_tokens += sum(len(g.token_ids) for g in gens)
        return gens

    def count(self, event: str, n: int = 1) -> None:
        self.counters[event] = self.counters.get(event, 0) + n

    def from_order(self, order: Sequence[int]) -> list[DocumentScore]:
        """Scores ``n - rank`` in input order for a final ``order`` (best first)."""
        return scores_from_order(order, self.truncated)


def _byte_bound(text: str, n: int | None) -> int:
    """An upper bound of the tokens of ``text`` cut to ``n``: every token covers at least a byte."""
    size = len(text.encode("utf-8", "surrogatepass"))
    return size if n is None else min(size, n)


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


class Method:
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

    @property
    def score_scale(self) -> float | None:
        """What a score is divided by for a 0..1 relevance where the scores have a fixed top
        (ERank's ``rank_score``: its ``scale``, 10), else ``None`` (the scores are used as they are)."""
        return None

    # ------------------------------------------------------------------ the three steps
    def prepare(
        self,
        query: str,
        documents: Sequence[Any],
        instruction: str | None = None,
        *,
        truncate_length: int | None = 2048,
        return_reasoning: bool = False,
        instruction_tokens: int | None = None,
        max_prompt_tokens: int | None = None,
    ) -> Prepared:
        """Validate the inputs and cut the query's work into units (step 1 of 3).

        Args:
            instruction_tokens: cut the instruction to this many tokens
                (``Prepared.instruction_truncated`` says whether it was).
            max_prompt_tokens: raise :class:`PromptBudgetError` as soon as the query's prompts pass
                this many tokens; checked where the tokens are known before running
                (``Prepared.exact_tokens``), by methods that split into prompts.
        """
        prepared = self._begin(query, documents, instruction, truncate_length, return_reasoning)
        if instruction_tokens is not None:
            prepared.instruction, prepared.instruction_truncated = self.truncate(
                prepared.instruction, instruction_tokens
            )
        if prepared.documents:
            self._split(prepared, max_prompt_tokens)
        return prepared

    def run(self, units: Sequence[Unit]) -> list[Any]:
        """The results of ``units`` of any queries of this method, in order (step 2 of 3).

        The default runs each unit, a whole query, on its own (an error of one query is raised by
        its own :meth:`finish`, so the other queries of a batch are not lost); a method that splits
        (:class:`~erank.methods.erank.ERankMethod`) runs all its units in one engine call.
        """
        out: list[Any] = []
        for unit in units:
            self.last_counters = {}
            try:
                scores, usage = self._score(*unit.payload)
            except Exception as exc:  # noqa: BLE001 - raised by finish, for its own query only
                out.append(exc)
                continue
            out.append((scores, usage, dict(self.last_counters)))
        return out

    def finish(self, prepared: Prepared, results: Sequence[Any]) -> RerankResult:
        """One query's :class:`RerankResult` from the results of its units (step 3 of 3)."""
        if len(results) != len(prepared.units):
            raise InputError(f"{len(results)} results for {len(prepared.units)} units")
        if prepared.units:
            scores, usage = self._collect(prepared, results)
        else:
            scores, usage = [], Usage()
            self.last_counters = {}
        usage.seconds = time.perf_counter() - prepared.started
        usage.unparsed = sum(1 for s in scores if not s.parsed)
        usage.truncated_documents = sum(1 for s in scores if s.truncated)
        return RerankResult(
            query=prepared.query,
            instruction=prepared.instruction,
            documents=prepared.documents,
            scores=scores,
            ranking=self._ranking(scores),
            usage=usage,
            method=self.name,
            model=self.engine.model_name,
            mode=self.mode,
        )

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
        prepared = self.prepare(
            query,
            documents,
            instruction,
            truncate_length=truncate_length,
            return_reasoning=return_reasoning,
        )
        return self.finish(prepared, self.run(prepared.units))

    # ------------------------------------------------------------------ hooks
    def _begin(
        self,
        query: Any,
        documents: Sequence[Any],
        instruction: str | None,
        truncate_length: Any,
        return_reasoning: bool,
    ) -> Prepared:
        """The validated inputs, no units yet."""
        query = validate_query(query)
        n = validate_truncate_length(truncate_length)
        docs = to_documents(documents)
        instr = resolve_instruction(instruction, self.default_instruction)
        return Prepared(
            query=query,
            instruction=instr,
            documents=docs,
            truncate_length=n,
            return_reasoning=return_reasoning,
        )

    def _split(self, prepared: Prepared, max_prompt_tokens: int | None) -> None:
        """Fill ``prepared.units``. The default: one unit, the whole query, weighted by a bound of
        its tokens (``max_prompt_tokens`` is not checked: the tokens are not known yet)."""
        n = prepared.truncate_length
        weight = _byte_bound(prepared.query, n) + sum(_byte_bound(d.content, n) for d in prepared.documents)
        p = prepared
        payload = (p.query, p.documents, p.instruction, n, p.return_reasoning)
        p.units = [Unit(payload=payload, weight=weight, return_reasoning=p.return_reasoning)]

    def _collect(self, prepared: Prepared, results: Sequence[Any]) -> tuple[list[DocumentScore], Usage]:
        """Per-document scores in input order and the usage, from the units' results."""
        if isinstance(results[0], Exception):
            raise results[0]
        scores, usage, counters = results[0]
        self.last_counters = dict(counters)
        return scores, usage

    def _ranking(self, scores: list[DocumentScore]) -> list[int]:
        return ranking_from_scores([s.score for s in scores])

    def _score(
        self,
        query: str,
        docs: list[Document],
        instruction: str,
        truncate_length: int | None,
        return_reasoning: bool,
    ) -> tuple[list[DocumentScore], Usage]:
        """Per-document scores in input order, and the usage, for one whole query (a unit's
        payload, ``docs`` not empty): the query and documents cut to ``truncate_length`` tokens,
        then :meth:`_rank`."""
        q, _ = self.truncate(query, truncate_length)
        cut = [self.truncate(d.content, truncate_length) for d in docs]
        job = Job(
            engine=self.engine,
            query=q,
            texts=[c[0] for c in cut],
            truncated=[c[1] for c in cut],
            instruction=instruction,
            return_reasoning=return_reasoning,
        )
        scores = self._rank(job)
        self.last_counters = job.counters
        return scores, job.usage

    def _rank(self, job: Job) -> list[DocumentScore]:
        """Per-document scores in input order for one whole query. Every method implements it, or
        overrides :meth:`_split`, :meth:`run` and :meth:`_collect` to split a query into smaller
        units."""
        raise NotImplementedError(f"{type(self).__name__} implements neither _rank nor _split/run/_collect")
