"""Setwise reranking (Rank-R1 style): pick the most relevant document of a labelled set.

The model sees a parent and up to ``num_child`` children of a heap, labelled ``[1]..[c+1]``,
and answers ``<answer>[k]</answer>``. A ``num_child``-ary heap sort built on that choice gives
the top ``top_k`` documents in order; the rest follow in first-stage order.

* ``mode="reasoning"`` (Rank-R1): greedy generation ``<think>...</think><answer>[k]</answer>``
  within ``max_new_tokens``. An answer that does not parse is read instead from the identifier
  logits after ``<answer>[`` (counted in ``last_counters["forced_choices"]``).
* ``mode="direct"`` (the original setwise likelihood variant): one forward pass after
  ``<think>\\n\\n</think><answer>[``; the choice is the most probable identifier.

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> r = Reranker(method="setwise", mode="direct", top_k=1)                        # doctest: +SKIP
>>> r.rerank("capital of France", ["Bread.", "Paris is the capital of France."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

import re
from typing import Literal

from erank.engines.base import Engine, GenerateRequest, LogprobRequest
from erank.errors import InputError
from erank.methods._common import check_positive, format_passages, heap_topk
from erank.methods.base import Job, Method
from erank.prompts import render_template, template_text
from erank.types import DocumentScore

__all__ = ["SetwiseMethod", "parse_choice", "DIRECT_CHOICE_SUFFIX"]

DIRECT_CHOICE_SUFFIX = "<think>\n\n</think><answer>["
_CHOICE = re.compile(r"<answer>\s*\[?\s*(\d+)\s*\]?\s*(?:</answer>|$)")


def parse_choice(text: str, n: int) -> int | None:
    """The 0-based choice in the last ``<answer>[k]</answer>`` of ``text``, or None.

    >>> parse_choice("<think>the second</think> <answer>[2]</answer>", 3)
    1
    >>> parse_choice("<answer>[7]</answer>", 3) is None
    True
    """
    last = None
    for m in _CHOICE.finditer(text):
        last = m
    if last is None:
        return None
    k = int(last.group(1))
    return k - 1 if 1 <= k <= n else None


class SetwiseMethod(Method):
    """Setwise choice with heap-sort top-k.

    Args:
        engine: the engine that runs the model.
        mode: ``"reasoning"`` (generate, Rank-R1) or ``"direct"`` (identifier logits).
        num_child: children per heap node; a set has ``num_child + 1`` documents (at most 9).
        top_k: how many documents are sorted to the top (10).
        max_new_tokens: the reasoning budget per choice.
        template: template name or text with ``{instruction}``, ``{query}``, ``{passages}``.
    """

    name = "setwise"

    def __init__(
        self,
        engine: Engine,
        *,
        mode: Literal["reasoning", "direct"] = "reasoning",
        num_child: int = 3,
        top_k: int = 10,
        max_new_tokens: int = 512,
        template: str | None = None,
    ) -> None:
        super().__init__(engine)
        if mode not in ("reasoning", "direct"):
            raise InputError(f"mode must be 'reasoning' or 'direct', got {mode!r}")
        self._mode = mode
        self.num_child = check_positive("num_child", num_child)
        if num_child + 1 > 9:
            raise InputError(
                f"a set holds num_child + 1 <= 9 documents (single-digit labels), got num_child={num_child}"
            )
        self.top_k = check_positive("top_k", top_k)
        self.max_new_tokens = check_positive("max_new_tokens", max_new_tokens)
        self.template = template_text(template, "setwise")
        self.label_ids: list[int] = []
        for k in range(1, num_child + 2):
            ids = engine.tokenizer.encode(str(k))
            if len(ids) != 1:
                raise InputError(f"setwise needs single-token labels; the tokenizer writes {k} as {ids}")
            self.label_ids.append(ids[0])

    @property
    def mode(self) -> str:
        return self._mode

    def build_prompt(self, query: str, texts: list[str], instruction: str) -> str:
        """The user message for one set of documents (labels ``[1]..``)."""
        return render_template(
            self.template, instruction=instruction, query=query, passages=format_passages(texts)
        ).rstrip("\n")

    def _rank(self, job: Job) -> list[DocumentScore]:
        job.counters.update(choices=0, forced_choices=0)

        def by_logits(user: str, n: int) -> int:
            ids = self.label_ids[:n]
            res = job.logprobs(
                [LogprobRequest(prompt_ids=job.chat(user, DIRECT_CHOICE_SUFFIX), token_ids=ids)]
            )[0]
            return max(range(n), key=lambda p: (res.steps[0].get(ids[p], float("-inf")), -p))

        def choose(items: list[int]) -> int:
            job.count("choices")
            user = self.build_prompt(job.query, [job.texts[i] for i in items], job.instruction)
            if self._mode == "direct":
                return items[by_logits(user, len(items))]
            request = GenerateRequest(
                prompt_ids=job.chat(user), max_new_tokens=self.max_new_tokens, stop=["</answer>"]
            )
            k = parse_choice(job.generate([request])[0].text, len(items))
            if k is None:
                job.count("forced_choices")
                k = by_logits(user, len(items))
            return items[k]

        return job.from_order(heap_topk(range(len(job.texts)), self.top_k, choose, self.num_child))
