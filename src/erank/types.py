"""Plain data contracts shared by every part of erank.

Methods turn (query, documents) into a :class:`RerankResult`; engines never see these types.
Everything here is a dataclass with no behaviour beyond small conveniences, so results can be
serialised (``dataclasses.asdict``) for JSON output, serving and batch jobs.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from erank.errors import InputError

__all__ = [
    "Document",
    "DocumentScore",
    "Prepared",
    "RerankRequest",
    "RerankResult",
    "Scorer",
    "Unit",
    "Usage",
    "to_documents",
]


@dataclass
class Document:
    """One candidate document.

    ``content`` is the text the model reads. ``extra`` keeps every other key of a dict input
    (``id``, ``first_stage_score``, ``title`` ...) so results can be handed back unchanged.
    """

    content: str
    id: str | None = None
    first_stage_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    content_key: str = "content"

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(self.extra)
        out[self.content_key] = self.content
        if self.id is not None:
            out["id"] = self.id
        if self.first_stage_score is not None:
            out["first_stage_score"] = self.first_stage_score
        return out


@dataclass
class Usage:
    """What a query cost: the numbers efficiency comparisons need."""

    model_calls: int = 0
    prompt_tokens: int = 0
    generated_tokens: int = 0
    unparsed: int = 0
    truncated_documents: int = 0
    seconds: float = 0.0

    def add(self, other: Usage) -> None:
        self.model_calls += other.model_calls
        self.prompt_tokens += other.prompt_tokens
        self.generated_tokens += other.generated_tokens
        self.unparsed += other.unparsed
        self.truncated_documents += other.truncated_documents
        self.seconds += other.seconds


@dataclass
class DocumentScore:
    """Everything erank knows about one document after reranking.

    ``score`` is what ranks (for ERank: ``rank_score = s x P(s)``). ``label`` is the parsed
    integer ``s`` (``None`` when the output did not parse, or for methods without one),
    ``probability`` is ``P(s)``, ``distribution`` the probabilities of every score 0..max where the
    mode has them (``direct``), ``expected_score`` their expectation.
    """

    index: int
    score: float
    label: int | None = None
    probability: float | None = None
    distribution: list[float] | None = None
    expected_score: float | None = None
    parsed: bool = True
    reasoning: str | None = None
    output: str | None = None
    prompt_tokens: int = 0
    generated_tokens: int = 0
    truncated: bool = False


@dataclass
class RerankResult:
    """The result of reranking one query.

    ``scores`` is in input order (``scores[i].index == i``); ``ranking`` lists input indices from
    most to least relevant, ties broken by input order.
    """

    query: str
    instruction: str
    documents: list[Document]
    scores: list[DocumentScore]
    ranking: list[int]
    usage: Usage = field(default_factory=Usage)
    method: str = ""
    model: str = ""
    mode: str = ""

    def ranked(self) -> list[tuple[Document, DocumentScore]]:
        """``(document, score)`` pairs from most to least relevant."""
        return [(self.documents[i], self.scores[i]) for i in self.ranking]

    def as_dicts(self) -> list[dict[str, Any]]:
        """The official ERank output shape: input dicts plus ``rank_score``, sorted descending.

        Where the mode gives a score distribution (direct), ``expected_score`` is added too.
        """
        out = []
        for doc, sc in self.ranked():
            d = doc.as_dict()
            d["rank_score"] = sc.score
            if sc.expected_score is not None:
                d["expected_score"] = sc.expected_score
            out.append(d)
        return out


@dataclass
class Unit:
    """One piece of model work: what :meth:`Method.run` takes, from any query of one method.

    ``payload`` is the method's own (a tokenised prompt for ERank; the whole query for a method
    that cannot split); callers only pass it on. ``weight`` is its prompt tokens: exact when
    ``Prepared.exact_tokens`` is true, else an upper bound (one token per byte of text), so a
    batcher can bound the tokens of one call either way.
    """

    payload: Any
    weight: int
    return_reasoning: bool = False


@dataclass
class Prepared:
    """One query ready to run: its validated inputs and its units (:meth:`Method.prepare`)."""

    query: str
    instruction: str
    documents: list[Document]
    truncate_length: int | None
    return_reasoning: bool
    units: list[Unit] = field(default_factory=list)
    #: per document, whether its text was cut (known before running for methods that split)
    truncated: list[bool] = field(default_factory=list)
    #: whether the caller's instruction was cut to ``instruction_tokens``
    instruction_truncated: bool = False
    #: whether the units' weights are their exact prompt tokens
    exact_tokens: bool = False
    started: float = field(default_factory=time.perf_counter)

    @property
    def prompt_tokens(self) -> int | None:
        """The prompt tokens of all units when known before running, else ``None``."""
        return sum(u.weight for u in self.units) if self.exact_tokens else None


@dataclass
class RerankRequest:
    """One query to score (:meth:`erank.Reranker.score_many`): the arguments of ``score``."""

    query: str
    documents: Sequence[Any]
    instruction: str | None = None
    truncate_length: int | None = 2048
    return_reasoning: bool = False


@runtime_checkable
class Scorer(Protocol):
    """What every consumer of a reranker relies on (evaluation, batch, integrations).

    :class:`erank.Reranker` implements it, and so does the first stage
    (:class:`erank.retrieval.FirstStageReranker`), so an experiment treats both alike.
    """

    def score(
        self,
        query: str,
        docs: Sequence[Any],
        instruction: str | None = None,
        truncate_length: int | None = 2048,
    ) -> RerankResult:
        """Score ``docs`` for ``query``: one score per document, in input order, and the ranking."""
        ...

    def identity(self) -> dict[str, Any]:
        """What determines the scores (model, method, every argument): equal identities, equal
        scores. The key of the evaluation score cache."""
        ...

    @property
    def pointwise(self) -> bool:
        """True when a document's score does not depend on the other documents, so the results
        of separate calls can be merged (cached per document, scored in chunks)."""
        ...


def ranking_from_scores(scores: Sequence[float]) -> list[int]:
    """Indices sorted by score, highest first; ties keep input order (a stable sort)."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def to_documents(docs: Sequence[Any]) -> list[Document]:
    """Accept strings, dicts with ``content`` (or ``text``), or :class:`Document` objects."""
    if isinstance(docs, (str, bytes)) or not isinstance(docs, Sequence):
        raise InputError(
            f"documents must be a list of strings or dicts with a 'content' key, got {type(docs).__name__}"
        )
    out: list[Document] = []
    for i, d in enumerate(docs):
        if isinstance(d, Document):
            out.append(d)
        elif isinstance(d, str):
            out.append(Document(content=d))
        elif isinstance(d, Mapping):
            key = "content" if "content" in d else ("text" if "text" in d else None)
            if key is None:
                raise InputError(
                    f"document {i} is a dict without a 'content' (or 'text') key: keys {sorted(d)}"
                )
            content = d[key]
            if not isinstance(content, str):
                raise InputError(f"document {i}: '{key}' must be a string, got {type(content).__name__}")
            extra = {k: v for k, v in d.items() if k not in (key, "id", "first_stage_score")}
            fss = d.get("first_stage_score")
            if fss is not None and not isinstance(fss, (int, float)):
                raise InputError(
                    f"document {i}: 'first_stage_score' must be a number, got {type(fss).__name__}"
                )
            doc_id = d.get("id")
            out.append(
                Document(
                    content=content,
                    id=None if doc_id is None else str(doc_id),
                    first_stage_score=None if fss is None else float(fss),
                    extra=extra,
                    content_key=key,
                )
            )
        else:
            raise InputError(
                f"document {i} must be a string or a dict with a 'content' key, got {type(d).__name__}"
            )
    return out
