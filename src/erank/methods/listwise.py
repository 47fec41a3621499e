"""Listwise reranking with a sliding window (RankGPT, RankZephyr, Rearank, ReasonRank).

The model reads a window of candidates labelled ``[1]..[w]`` and writes a permutation
(``[3] > [1] > ...``). Windows of ``window`` documents move ``step`` positions at a time from the
bottom of the first-stage list to the top. A malformed permutation is repaired the way the field
does it (unknown or repeated identifiers dropped, missing ones appended in their previous order)
and counted in ``last_counters["repaired_windows"]``.

Every document gets the score ``n - rank`` so ``RerankResult.ranking`` is the final order.

>>> from erank import Reranker                                                    # doctest: +SKIP
>>> r = Reranker(method="listwise", window=20, step=10)                           # doctest: +SKIP
>>> r.rerank("capital of France", ["Bread.", "Paris is the capital of France."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

import logging

from erank.engines.base import Engine, GenerateRequest
from erank.methods._common import check_positive, parse_permutation
from erank.methods.base import Job
from erank.methods.window import WindowMethod
from erank.types import DocumentScore

__all__ = ["ListwiseMethod"]

logger = logging.getLogger(__name__)


class ListwiseMethod(WindowMethod):
    """Sliding-window listwise permutation generation.

    Args:
        engine: the engine that runs the model.
        window: documents per window (20).
        step: how far the window moves up each time (10).
        max_new_tokens: the generation budget per window; default ``6 * window + 16``.
        template: template name or text with ``{instruction}``, ``{query}``, ``{num}``, ``{passages}``.
        answer_prefix: text appended after the generation prompt (e.g. an empty think block).
    """

    name = "listwise"
    template_name = "listwise"

    def __init__(
        self,
        engine: Engine,
        *,
        window: int = 20,
        step: int = 10,
        max_new_tokens: int | None = None,
        template: str | None = None,
        answer_prefix: str = "",
    ) -> None:
        super().__init__(engine, window=window, step=step, template=template, answer_prefix=answer_prefix)
        self.max_new_tokens = (
            check_positive("max_new_tokens", max_new_tokens) if max_new_tokens else 6 * window + 16
        )

    def _rank(self, job: Job) -> list[DocumentScore]:
        job.counters["repaired_windows"] = 0
        scores = super()._rank(job)
        if job.counters["repaired_windows"]:
            logger.info(
                "listwise: repaired %d of %d window outputs",
                job.counters["repaired_windows"],
                job.counters["windows"],
            )
        if job.return_reasoning:
            for s in scores:
                s.output = "\n---\n".join(job.outputs)
        return scores

    def _rank_window(self, job: Job, user: str, n: int) -> list[int]:
        prompt = job.chat(user, self.answer_prefix)
        g = job.generate([GenerateRequest(prompt_ids=prompt, max_new_tokens=self.max_new_tokens)])[0]
        perm, repaired = parse_permutation(g.text, n)
        job.count("repaired_windows", int(repaired))
        job.outputs.append(g.text)
        return perm
