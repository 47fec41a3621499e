"""FIRST: listwise reranking read from the logits of the first generated identifier.

The prompt is the listwise one with single-token letter identifiers (``[A]..[T]``); the answer
is started with ``[`` and one forward pass gives the log-probability of every identifier at the
next position. The window's order is the identifiers sorted by that log-probability (ties in
their current order). Windows slide from the bottom to the top as in :mod:`erank.methods.listwise`.

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> r = Reranker(method="first")                                                 # doctest: +SKIP
>>> r.rerank("capital of France", ["Bread.", "Paris is the capital of France."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from erank.engines.base import Engine, LogprobRequest
from erank.errors import InputError
from erank.methods._common import (
    chat_ids,
    check_positive,
    format_passages,
    letter_labels,
    scores_from_order,
    sliding_window_order,
)
from erank.methods.base import Method
from erank.prompts import render_template, template_text
from erank.types import Document, DocumentScore, Usage

__all__ = ["FirstMethod", "order_from_logits"]


def order_from_logits(step: Mapping[int, float], label_ids: Sequence[int]) -> list[int]:
    """Positions ``0..len(label_ids)-1`` sorted by the log-probability of their label, best first.

    >>> order_from_logits({10: -3.0, 11: -0.5, 12: -1.0}, [10, 11, 12])
    [1, 2, 0]
    """
    return sorted(range(len(label_ids)), key=lambda p: -step.get(label_ids[p], float("-inf")))


class FirstMethod(Method):
    """FIRST: one forward pass per window, the order from the first identifier's logits.

    Args:
        engine: the engine that runs the model.
        window: documents per window (20; at most 26, the letter identifiers).
        step: how far the window moves up each time (10).
        template: template name or text with ``{instruction}``, ``{query}``, ``{num}``, ``{passages}``.
        answer_prefix: text appended after the generation prompt, before ``[``.
    """

    name = "first"

    def __init__(
        self,
        engine: Engine,
        *,
        window: int = 20,
        step: int = 10,
        template: str | None = None,
        answer_prefix: str = "",
    ) -> None:
        super().__init__(engine)
        self.window = check_positive("window", window, 2)
        self.step = check_positive("step", step)
        labels = letter_labels(window)
        self.label_ids: list[int] = []
        for lab in labels:
            ids = engine.tokenizer.encode(lab)
            if len(ids) != 1:
                raise InputError(
                    f"FIRST needs single-token identifiers; the tokenizer writes {lab!r} as {ids}"
                )
            self.label_ids.append(ids[0])
        self.template = template_text(template, "first")
        self.answer_prefix = answer_prefix

    def build_prompt(self, query: str, texts: list[str], instruction: str) -> str:
        """The user message for one window of passages (labels ``[A]..``)."""
        return render_template(
            self.template,
            instruction=instruction,
            query=query,
            num=str(len(texts)),
            passages=format_passages(texts, letter_labels(len(texts))),
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
        windows = 0

        def rank_window(items: list[int]) -> list[int]:
            nonlocal windows
            if len(items) == 1:
                return [0]
            prompt = chat_ids(
                self.engine,
                self.build_prompt(q, [cut[i][0] for i in items], instruction),
                self.answer_prefix + "[",
            )
            ids = self.label_ids[: len(items)]
            res = self.engine.logprobs([LogprobRequest(prompt_ids=prompt, token_ids=ids)])[0]
            usage.model_calls += 1
            usage.prompt_tokens += len(prompt)
            windows += 1
            return order_from_logits(res.steps[0], ids)

        order = sliding_window_order(range(len(docs)), self.window, self.step, rank_window)
        self.last_counters = {"windows": windows}
        return scores_from_order(order, [c[1] for c in cut]), usage
