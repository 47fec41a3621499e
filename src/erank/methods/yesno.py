"""Yes/no pointwise rerankers: the single-pass way (monoT5, Qwen3-Reranker) and Rank1's.

* :class:`YesNoMethod` (``"yesno"``): one forward pass per document; the score is
  ``P(yes) / (P(yes) + P(no))`` at the first answer position.
* :class:`Rank1Method` (``"rank1"``): the model reasons after ``<think>`` until ``</think>``
  (greedy, within ``max_new_tokens``), then the score is ``P(true) / (P(true) + P(false))`` read
  with one forward pass right after ``</think>``. When the reasoning never closes within the
  budget, ``</think>`` is appended and the answer is forced the same way (counted in
  ``last_counters["forced_answers"]``).

>>> from erank import Reranker                                                   # doctest: +SKIP
>>> r = Reranker(method="yesno")                                                 # doctest: +SKIP
>>> r.rerank("capital of France", ["Paris is the capital of France.", "Bread."])[0]["content"]  # doctest: +SKIP
'Paris is the capital of France.'
"""

from __future__ import annotations

import logging

from erank.engines.base import Engine, GenerateRequest, LogprobRequest
from erank.errors import InputError
from erank.methods._common import check_positive, single_token_ids, two_way_probability
from erank.methods.base import Job, Method
from erank.prompts import render_template, template_text
from erank.types import DocumentScore

__all__ = ["YesNoMethod", "Rank1Method", "THINK_OPEN", "THINK_CLOSE"]

logger = logging.getLogger(__name__)

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
YES_VARIANTS = ("yes", "Yes", " yes", " Yes", "YES")
NO_VARIANTS = ("no", "No", " no", " No", "NO")
TRUE_VARIANTS = ("true", " true", "True", " True")
FALSE_VARIANTS = ("false", " false", "False", " False")


def _answer_ids(engine: Engine, pos: tuple[str, ...], neg: tuple[str, ...]) -> tuple[list[int], list[int]]:
    a = single_token_ids(engine.tokenizer.encode, pos)
    b = single_token_ids(engine.tokenizer.encode, neg)
    if not a or not b:
        raise InputError(
            f"the tokenizer writes none of {pos} or none of {neg} as one token; pass other answer words"
        )
    return a, b


class YesNoMethod(Method):
    """Single-pass yes/no pointwise scoring (monoT5 / Qwen3-Reranker style).

    Args:
        engine: the engine that runs the model.
        template: template name or text with ``{instruction}``, ``{query}``, ``{doc}``.
        answer_prefix: text appended after the chat template's generation prompt (Qwen3-Reranker
            uses an empty think block: ``"<think>\\n\\n</think>\\n\\n"``).
    """

    name = "yesno"
    pointwise = True

    def __init__(self, engine: Engine, *, template: str | None = None, answer_prefix: str = "") -> None:
        super().__init__(engine)
        self.template = template_text(template, "yesno")
        self.answer_prefix = answer_prefix
        self.yes_ids, self.no_ids = _answer_ids(engine, YES_VARIANTS, NO_VARIANTS)

    def build_prompt(self, query: str, doc: str, instruction: str) -> str:
        """The rendered prompt text (chat template applied, answer prefix appended)."""
        user = render_template(self.template, instruction=instruction, query=query, doc=doc).rstrip("\n")
        return self.engine.tokenizer.chat_prompt(user) + self.answer_prefix

    def _rank(self, job: Job) -> list[DocumentScore]:
        encode = self.engine.tokenizer.encode_prompt
        prompts = [encode(self.build_prompt(job.query, t, job.instruction)) for t in job.texts]
        ids = self.yes_ids + self.no_ids
        results = job.logprobs([LogprobRequest(prompt_ids=p, token_ids=ids) for p in prompts])
        scores = []
        for i, (res, p) in enumerate(zip(results, prompts, strict=True)):
            prob = two_way_probability(res.steps[0], self.yes_ids, self.no_ids)
            scores.append(
                DocumentScore(
                    index=i, score=prob, probability=prob, prompt_tokens=len(p), truncated=job.truncated[i]
                )
            )
        return scores


class Rank1Method(Method):
    """Rank1: reason, then ``true``/``false``; the answer is forced when the reasoning does not close.

    Args:
        engine: the engine that runs the model.
        max_new_tokens: the reasoning budget per document.
        template: template name or text with ``{instruction}``, ``{query}``, ``{doc}``.
    """

    name = "rank1"
    pointwise = True

    def __init__(self, engine: Engine, *, max_new_tokens: int = 1024, template: str | None = None) -> None:
        super().__init__(engine)
        self.max_new_tokens = check_positive("max_new_tokens", max_new_tokens)
        self.template = template_text(template, "rank1")
        self.true_ids, self.false_ids = _answer_ids(engine, TRUE_VARIANTS, FALSE_VARIANTS)

    def build_prompt(self, query: str, doc: str, instruction: str) -> str:
        """The rendered prompt text: chat template applied, ending with ``<think>``."""
        user = render_template(self.template, instruction=instruction, query=query, doc=doc).rstrip("\n")
        return self.engine.tokenizer.chat_prompt(user) + THINK_OPEN

    def _rank(self, job: Job) -> list[DocumentScore]:
        tok = self.engine.tokenizer
        prompts = [tok.encode_prompt(self.build_prompt(job.query, t, job.instruction)) for t in job.texts]
        gens = job.generate(
            [
                GenerateRequest(prompt_ids=p, max_new_tokens=self.max_new_tokens, stop=[THINK_CLOSE])
                for p in prompts
            ]
        )
        close_ids = tok.encode(THINK_CLOSE)
        answer_prompts: list[list[int]] = []
        forced = 0
        for p, g in zip(prompts, gens, strict=True):
            closed, head = split_reasoning(g.text)
            if not closed:
                forced += 1
            # Re-encode the reasoning so the forced and the natural case end in the same tokens.
            answer_prompts.append(p + tok.encode(head) + close_ids + tok.encode(" "))
        ids = self.true_ids + self.false_ids
        results = job.logprobs([LogprobRequest(prompt_ids=a, token_ids=ids) for a in answer_prompts])
        keep = job.return_reasoning
        scores = []
        for i, (res, g) in enumerate(zip(results, gens, strict=True)):
            prob = two_way_probability(res.steps[0], self.true_ids, self.false_ids)
            scores.append(
                DocumentScore(
                    index=i,
                    score=prob,
                    probability=prob,
                    reasoning=split_reasoning(g.text)[1] if keep else None,
                    output=g.text if keep else None,
                    prompt_tokens=len(prompts[i]) + len(answer_prompts[i]),
                    generated_tokens=len(g.token_ids),
                    truncated=job.truncated[i],
                )
            )
        if forced:
            logger.info(
                "rank1: %d of %d reasonings did not close within %d tokens; answers forced",
                forced,
                len(prompts),
                self.max_new_tokens,
            )
        job.counters["forced_answers"] = forced
        return scores


def split_reasoning(text: str) -> tuple[bool, str]:
    """``(closed, reasoning)``: whether ``</think>`` occurs, and the text before it.

    >>> split_reasoning("it mentions Paris</think>")
    (True, 'it mentions Paris')
    >>> split_reasoning("it goes on and on")
    (False, 'it goes on and on')
    """
    at = text.find(THINK_CLOSE)
    if at < 0:
        return False, text
    return True, text[:at]
