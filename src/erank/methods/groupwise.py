"""Groupwise reranking (GroupRank style): one prompt per group, an integer score for each document.

The candidate list is cut into consecutive groups of ``group_size`` documents (first-stage
order); each group is one prompt listing ``[1]..[g]`` and the model writes one line
``[k]: score`` per document (0..``max_score``). All groups are generated in one batch. A
document whose line is missing or out of range is *unparsed* and scores 0 (counted in
``usage.unparsed``). Ties keep first-stage order.

>>> parse_group_scores("[1]: 7\\n[2]: 12\\n[3]: 0", 3, 10)
[7, None, 0]

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> r = Reranker(method="groupwise", group_size=10)                              # doctest: +SKIP
>>> r.rerank("capital of France", ["Bread.", "Paris is the capital of France."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

import re

from erank.engines.base import Engine, GenerateRequest
from erank.methods._common import check_positive, format_passages
from erank.methods.base import Job, Method
from erank.prompts import render_template, template_text
from erank.types import DocumentScore

__all__ = ["GroupwiseMethod", "parse_group_scores", "group_bounds"]

_LINE = re.compile(r"\[\s*(\d+)\s*\]\s*[:=\-]?\s*(?:score\s*[:=]?\s*)?([+-]?\d+)", re.IGNORECASE)


def parse_group_scores(text: str, n: int, max_score: int) -> list[int | None]:
    """The integer score of each of ``n`` documents from ``[k]: score`` lines (first one wins).

    Identifiers outside ``1..n`` and scores outside ``0..max_score`` are ignored.
    """
    out: list[int | None] = [None] * n
    for m in _LINE.finditer(text):
        k, v = int(m.group(1)), int(m.group(2))
        if 1 <= k <= n and 0 <= v <= max_score and out[k - 1] is None:
            out[k - 1] = v
    return out


def group_bounds(n: int, group_size: int) -> list[tuple[int, int]]:
    """Consecutive ``(start, end)`` groups covering ``0..n``.

    >>> group_bounds(7, 3)
    [(0, 3), (3, 6), (6, 7)]
    """
    check_positive("group_size", group_size)
    return [(s, min(n, s + group_size)) for s in range(0, n, group_size)]


class GroupwiseMethod(Method):
    """GroupRank-style groupwise scoring.

    Args:
        engine: the engine that runs the model.
        group_size: documents per prompt (10).
        max_score: the top of the integer scale (10).
        max_new_tokens: the generation budget per group; default ``8 * group_size + 16``.
        template: template name or text with ``{instruction}``, ``{query}``, ``{num}``,
            ``{max_score}``, ``{passages}``.
    """

    name = "groupwise"

    def __init__(
        self,
        engine: Engine,
        *,
        group_size: int = 10,
        max_score: int = 10,
        max_new_tokens: int | None = None,
        template: str | None = None,
    ) -> None:
        super().__init__(engine)
        self.group_size = check_positive("group_size", group_size)
        self.max_score = check_positive("max_score", max_score)
        self.max_new_tokens = (
            check_positive("max_new_tokens", max_new_tokens) if max_new_tokens else 8 * group_size + 16
        )
        self.template = template_text(template, "groupwise")

    def build_prompt(self, query: str, texts: list[str], instruction: str) -> str:
        """The user message for one group (labels ``[1]..``)."""
        return render_template(
            self.template,
            instruction=instruction,
            query=query,
            num=str(len(texts)),
            max_score=str(self.max_score),
            passages=format_passages(texts),
        ).rstrip("\n")

    def _rank(self, job: Job) -> list[DocumentScore]:
        groups = group_bounds(len(job.texts), self.group_size)
        user = [self.build_prompt(job.query, job.texts[s:e], job.instruction) for s, e in groups]
        gens = job.generate(
            [GenerateRequest(prompt_ids=job.chat(u), max_new_tokens=self.max_new_tokens) for u in user]
        )
        scores: list[DocumentScore] = []
        for (s, e), g in zip(groups, gens, strict=True):
            values = parse_group_scores(g.text, e - s, self.max_score)
            for k, v in enumerate(values):
                scores.append(
                    DocumentScore(
                        index=s + k,
                        score=float(v) if v is not None else 0.0,
                        label=v,
                        parsed=v is not None,
                        output=g.text if job.return_reasoning else None,
                        truncated=job.truncated[s + k],
                    )
                )
        job.counters["groups"] = len(groups)
        return scores
