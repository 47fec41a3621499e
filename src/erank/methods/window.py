"""What the sliding-window methods share (listwise, FIRST): the window, the prompt, the pass.

A window of ``window`` candidates, labelled ``[1]..[w]`` (or ``[A]..``), is ranked by the model;
windows move ``step`` positions at a time from the bottom of the first-stage list to the top
(:func:`~erank.methods._common.sliding_window_order`). Every document gets the score
``n - rank``, so ``RerankResult.ranking`` is the final order. A subclass says how one window is
ranked (:meth:`WindowMethod._rank_window`).
"""

from __future__ import annotations

from erank.engines.base import Engine
from erank.methods._common import check_positive, format_passages, sliding_window_order
from erank.methods.base import Job, Method
from erank.prompts import render_template, template_text
from erank.types import DocumentScore

__all__ = ["WindowMethod"]


class WindowMethod(Method):
    """A sliding-window method.

    Args:
        engine: the engine that runs the model.
        window: documents per window (20).
        step: how far the window moves up each time (10).
        template: template name or text with ``{instruction}``, ``{query}``, ``{num}``, ``{passages}``.
        answer_prefix: text appended after the generation prompt.
    """

    #: the default template (a file of :mod:`erank.prompts`)
    template_name = "listwise"

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
        self.template = template_text(template, self.template_name)
        self.answer_prefix = answer_prefix

    def labels(self, n: int) -> list[str]:
        """The identifiers of a window of ``n`` passages: ``1..n``."""
        return [str(i + 1) for i in range(n)]

    def build_prompt(self, query: str, texts: list[str], instruction: str) -> str:
        """The user message for one window of passages (labelled by :meth:`labels`)."""
        return render_template(
            self.template,
            instruction=instruction,
            query=query,
            num=str(len(texts)),
            passages=format_passages(texts, self.labels(len(texts))),
        ).rstrip("\n")

    def _rank(self, job: Job) -> list[DocumentScore]:
        job.counters["windows"] = 0

        def rank_window(items: list[int]) -> list[int]:
            if len(items) == 1:
                return [0]
            job.count("windows")
            user = self.build_prompt(job.query, [job.texts[i] for i in items], job.instruction)
            return self._rank_window(job, user, len(items))

        order = sliding_window_order(range(len(job.texts)), self.window, self.step, rank_window)
        return job.from_order(order)

    def _rank_window(self, job: Job, user: str, n: int) -> list[int]:
        """The order (positions ``0..n-1``, best first) of one window, from its user message."""
        raise NotImplementedError
