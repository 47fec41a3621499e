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
from typing import Any

from erank.engines.base import Engine, LogprobRequest
from erank.errors import InputError
from erank.methods._common import letter_labels
from erank.methods.base import Job
from erank.methods.window import WindowMethod

__all__ = ["FirstMethod", "order_from_logits"]


def order_from_logits(step: Mapping[int, float], label_ids: Sequence[int]) -> list[int]:
    """Positions ``0..len(label_ids)-1`` sorted by the log-probability of their label, best first.

    >>> order_from_logits({10: -3.0, 11: -0.5, 12: -1.0}, [10, 11, 12])
    [1, 2, 0]
    """
    return sorted(range(len(label_ids)), key=lambda p: -step.get(label_ids[p], float("-inf")))


class FirstMethod(WindowMethod):
    """FIRST: one forward pass per window, the order from the first identifier's logits.

    Takes the arguments of :class:`~erank.methods.window.WindowMethod`: ``window`` (at most 26,
    the letter identifiers), ``step``, ``template`` and ``answer_prefix`` (text appended after the
    generation prompt, before ``[``).
    """

    name = "first"
    template_name = "first"

    def __init__(self, engine: Engine, **kwargs: Any) -> None:
        super().__init__(engine, **kwargs)
        self.label_ids: list[int] = []
        for lab in letter_labels(self.window):
            ids = engine.tokenizer.encode(lab)
            if len(ids) != 1:
                raise InputError(
                    f"FIRST needs single-token identifiers; the tokenizer writes {lab!r} as {ids}"
                )
            self.label_ids.append(ids[0])

    def labels(self, n: int) -> list[str]:
        """The identifiers of a window of ``n`` passages: ``A..``."""
        return letter_labels(n)

    def _rank_window(self, job: Job, user: str, n: int) -> list[int]:
        prompt = job.chat(user, self.answer_prefix + "[")
        ids = self.label_ids[:n]
        res = job.logprobs([LogprobRequest(prompt_ids=prompt, token_ids=ids)])[0]
        return order_from_logits(res.steps[0], ids)
