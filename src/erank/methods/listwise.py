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
from erank.methods._common import (
    chat_ids,
    check_positive,
    format_passages,
    parse_permutation,
    scores_from_order,
    sliding_window_order,
)
from erank.methods.base import Method
from erank.prompts import render_template, template_text
from erank.types import Document, DocumentScore, Usage

__all__ = ["ListwiseMethod"]

logger = logging.getLogger(__name__)


class ListwiseMethod(Method):
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
        super().__init__(engine)
        self.window = check_positive("window", window, 2)
        self.step = check_positive("step", step)
        self.max_new_tokens = (
            check_positive("max_new_tokens", max_new_tokens) if max_new_tokens else 6 * window + 16
        )
        self.template = template_text(template, "listwise")
        self.answer_prefix = answer_prefix

    def build_prompt(self, query: str, texts: list[str], instruction: str) -> str:
        """The user message for one window of passages (labels ``[1]..[len(texts)]``)."""
        return render_template(
            self.template,
            instruction=instruction,
            query=query,
            num=str(len(texts)),
            passages=format_passages(texts),
        ).rstrip("\n")

    def _score(
        self,
        query: str,
        docs: list[Document],
        instruction: str,
        truncate_length: int | None,
        return_reasoning: bool,
    ) -> tuple[list[DocumentScore], Usage]:
        q, cut = self._truncate_inputs(query, docs, truncate_length)
        usage = Usage()
        outputs: list[str] = []
        counters = {"windows": 0, "repaired_windows": 0}

        def rank_window(items: list[int]) -> list[int]:
            if len(items) == 1:
                return [0]
            prompt = chat_ids(
                self.engine, self.build_prompt(q, [cut[i][0] for i in items], instruction), self.answer_prefix
            )
            g = self.engine.generate(
                [GenerateRequest(prompt_ids=prompt, max_new_tokens=self.max_new_tokens)]
            )[0]
            usage.model_calls += 1
            usage.prompt_tokens += len(prompt)
            usage.generated_tokens += len(g.token_ids)
            perm, repaired = parse_permutation(g.text, len(items))
            counters["windows"] += 1
            counters["repaired_windows"] += int(repaired)
            outputs.append(g.text)
            return perm

        order = sliding_window_order(range(len(docs)), self.window, self.step, rank_window)
        if counters["repaired_windows"]:
            logger.info(
                "listwise: repaired %d of %d window outputs",
                counters["repaired_windows"],
                counters["windows"],
            )
        self.last_counters = counters
        scores = scores_from_order(order, [c[1] for c in cut])
        if return_reasoning:
            for s in scores:
                s.output = "\n---\n".join(outputs)
        return scores, usage
