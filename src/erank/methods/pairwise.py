"""Pairwise ranking prompting (PRP): "which of these two passages is more relevant?".

Every comparison is asked in both orders (A/B then B/A) in one batched forward pass; the
answer is read from the log-probabilities of ``A`` and ``B`` after ``Passage``. Document ``i``
beats ``j`` when it wins in both orders; a split verdict is a tie (half a point each).

* ``variant="sliding"`` (``"pairwise"``): ``top_k`` bubble passes from the bottom of the
  first-stage list to the top (PRP-sliding-k): ``sum(n-1-p for p < k)`` comparisons.
* ``variant="allpairs"`` (``"pairwise-allpairs"``): every pair, score = wins (PRP-allpair):
  ``n(n-1)/2`` comparisons, all in one batch.

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> r = Reranker(method="pairwise", top_k=1)                                      # doctest: +SKIP
>>> r.rerank("capital of France", ["Bread.", "Paris is the capital of France."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

from typing import Literal

from erank.engines.base import Engine, LogprobRequest
from erank.errors import InputError
from erank.methods._common import (
    allpairs_scores,
    bubble_topk,
    check_positive,
    single_token_ids,
    two_way_probability,
)
from erank.methods.base import Job, Method
from erank.prompts import render_template, template_text
from erank.types import DocumentScore

__all__ = ["PairwiseMethod", "PairwiseAllPairsMethod", "pair_outcome"]

ANSWER_PREFIX = "Passage"


def pair_outcome(p_a_first: float, p_a_second: float) -> float:
    """The first document's share of one comparison asked in both orders.

    ``p_a_first`` is P(A) when the first document is shown as A, ``p_a_second`` P(A) when it is
    shown as B. 1.0 when it wins in both orders, 0.0 when it loses in both, 0.5 otherwise.

    >>> pair_outcome(0.9, 0.2), pair_outcome(0.2, 0.9), pair_outcome(0.9, 0.9)
    (1.0, 0.0, 0.5)
    """
    first_wins_1 = p_a_first > 0.5
    first_wins_2 = p_a_second < 0.5
    if first_wins_1 and first_wins_2:
        return 1.0
    if not first_wins_1 and not first_wins_2:
        return 0.0
    return 0.5


class PairwiseMethod(Method):
    """PRP with both orders; all-pairs or sliding (bubble) top-k aggregation.

    Args:
        engine: the engine that runs the model.
        variant: ``"sliding"`` or ``"allpairs"``.
        top_k: bubble passes of the sliding variant (the top ``top_k`` are sorted), default 10.
        template: template name or text with ``{instruction}``, ``{query}``, ``{doc_a}``, ``{doc_b}``.
    """

    name = "pairwise"

    def __init__(
        self,
        engine: Engine,
        *,
        variant: Literal["sliding", "allpairs"] = "sliding",
        top_k: int = 10,
        template: str | None = None,
    ) -> None:
        super().__init__(engine)
        if variant not in ("sliding", "allpairs"):
            raise InputError(f"variant must be 'sliding' or 'allpairs', got {variant!r}")
        self.variant = variant
        self.top_k = check_positive("top_k", top_k)
        if variant == "allpairs":
            self.name = "pairwise-allpairs"
        self.template = template_text(template, "pairwise")
        enc = engine.tokenizer.encode
        self.a_ids = single_token_ids(enc, [" A", "A"])
        self.b_ids = single_token_ids(enc, [" B", "B"])
        if not self.a_ids or not self.b_ids:
            raise InputError("the tokenizer writes neither 'A' nor ' A' (or 'B') as one token")

    @property
    def mode(self) -> str:
        return self.variant

    def build_prompt(self, query: str, doc_a: str, doc_b: str, instruction: str) -> str:
        """The user message comparing ``doc_a`` (Passage A) with ``doc_b`` (Passage B)."""
        return render_template(
            self.template, instruction=instruction, query=query, doc_a=doc_a, doc_b=doc_b
        ).rstrip("\n")

    def _rank(self, job: Job) -> list[DocumentScore]:
        texts = job.texts
        job.counters["comparisons"] = 0

        def ask(pairs: list[tuple[int, int]]) -> list[float]:
            reqs = []
            for i, j in pairs:
                for a, b in ((i, j), (j, i)):
                    prompt = job.chat(
                        self.build_prompt(job.query, texts[a], texts[b], job.instruction), ANSWER_PREFIX
                    )
                    reqs.append(LogprobRequest(prompt_ids=prompt, token_ids=self.a_ids + self.b_ids))
            res = job.logprobs(reqs)
            job.count("comparisons", len(pairs))
            out = []
            for k in range(len(pairs)):
                p1 = two_way_probability(res[2 * k].steps[0], self.a_ids, self.b_ids)
                p2 = two_way_probability(res[2 * k + 1].steps[0], self.a_ids, self.b_ids)
                out.append(pair_outcome(p1, p2))
            return out

        n = len(texts)
        if self.variant == "allpairs":
            pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
            table = dict(zip(pairs, ask(pairs), strict=True))
            wins = allpairs_scores(n, lambda i, j: table[(i, j)])
            return [DocumentScore(index=i, score=wins[i], truncated=job.truncated[i]) for i in range(n)]
        order = bubble_topk(range(n), self.top_k, lambda upper, lower: ask([(lower, upper)])[0] == 1.0)
        return job.from_order(order)


class PairwiseAllPairsMethod(PairwiseMethod):
    """:class:`PairwiseMethod` with ``variant="allpairs"`` (registered as ``"pairwise-allpairs"``)."""

    def __init__(self, engine: Engine, *, top_k: int = 10, template: str | None = None) -> None:
        super().__init__(engine, variant="allpairs", top_k=top_k, template=template)
