"""ERank: pointwise fine-grained integer scoring, ``rank_score = s x P(s)`` (spec section 2).

Two modes, one scoring rule:

* ``reasoning`` (the published checkpoints' reference behaviour): greedy generation of
  ``<think>...</think><answer>N</answer>``, stopping at ``</answer>`` or the token budget;
  ``P(s)`` is read from the log-probabilities recorded at the answer position.
* ``direct`` (fast): the prompt is extended with an empty think block and ``<answer>``; one forward
  pass reads the probabilities of the score tokens (the "10" rule needs the step after "1", read
  from the same pass by appending "1"); ``s`` is the most probable score.

>>> from erank import Reranker                                  # doctest: +SKIP
>>> Reranker().rerank("what is rust", ["Rust is a language.", "Bread."])[0]["content"]  # doctest: +SKIP
'Rust is a language.'
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal

from erank import scoring
from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest
from erank.errors import InputError, PromptBudgetError
from erank.methods.base import Method
from erank.prompts import render_template, template_text
from erank.scoring import ANSWER_STOP  # re-exported: its home is erank.scoring
from erank.types import DocumentScore, Prepared, Unit, Usage

__all__ = ["ERankMethod", "DIRECT_SUFFIX", "ANSWER_STOP"]

logger = logging.getLogger(__name__)

#: What ``direct`` mode appends after the chat template's generation prompt: an empty think
#: block and the opening answer tag, so the next token is the score.
DIRECT_SUFFIX = "<think>\n\n</think><answer>"
_TEMPLATES = {10: "erank", 3: "erank_0_3"}


class ERankMethod(Method):
    """The ERank pointwise method on any engine.

    Args:
        engine: the engine that runs the model.
        mode: ``"direct"`` or ``"reasoning"``.
        scale: the top of the integer scale: 10 (ERank) or 3 (the paper's 0-3 ablation).
        max_new_tokens: the reasoning budget (``reasoning`` mode); 4096 in the reference code.
        template: a template name or text with ``{instruction}``, ``{query}``, ``{doc}``.
        rule: what ranks in ``direct`` mode: ``"label_prob"`` (ERank's ``s x P(s)``, the default
            and the only rule of ``reasoning`` mode) or ``"expected"`` (the expected score
            ``sum_s s x P(s)`` over the renormalised distribution, which keeps separating documents
            when most mass sits on one label; the embedded erank-smol model ranks by it).
    """

    name = "erank"
    pointwise = True

    def __init__(
        self,
        engine: Engine,
        mode: Literal["direct", "reasoning"] = "direct",
        *,
        scale: int = 10,
        max_new_tokens: int = 4096,
        template: str | None = None,
        rule: Literal["label_prob", "expected"] = "label_prob",
    ) -> None:
        super().__init__(engine)
        if rule not in ("label_prob", "expected"):
            raise InputError(f"rule must be 'label_prob' (s x P(s)) or 'expected', got {rule!r}")
        if rule == "expected" and mode != "direct":
            raise InputError("rule='expected' needs mode='direct' (the full score distribution)")
        self.rule = rule
        if mode not in ("direct", "reasoning"):
            raise InputError(f"mode must be 'direct' or 'reasoning', got {mode!r}")
        if scale not in _TEMPLATES and template is None:
            raise InputError(f"scale must be one of {sorted(_TEMPLATES)} (or pass a template), got {scale}")
        if max_new_tokens <= 0:
            raise InputError(f"max_new_tokens must be positive, got {max_new_tokens}")
        self._mode = mode
        self.scale = scale
        self.max_new_tokens = max_new_tokens
        self.template = template_text(template, _TEMPLATES.get(scale, "erank"))
        self.score_tokens = scoring.ScoreTokens.from_tokenizer(engine.tokenizer.encode, scale)
        self._all_score_ids = sorted({t for seq in self.score_tokens.sequences for t in seq})
        if scale != 10:
            self.name = f"erank-0-{scale}"

    @property
    def mode(self) -> str:
        return self._mode

    # ------------------------------------------------------------------ prompts
    def build_prompt(self, query: str, doc: str, instruction: str) -> str:
        """The full rendered prompt text (chat template applied) for one pair."""
        user = render_template(self.template, instruction=instruction, query=query, doc=doc)
        text = self.engine.tokenizer.chat_prompt(user)
        if self._mode == "direct":
            text += DIRECT_SUFFIX
        return text

    @property
    def score_scale(self) -> float | None:
        return float(self.scale)

    # ------------------------------------------------------------------ scoring
    def _split(self, prepared: Prepared, max_prompt_tokens: int | None) -> None:
        """One unit per document: its rendered, tokenised prompt (weight: its exact length)."""
        n = prepared.truncate_length
        q, _ = self.truncate(prepared.query, n)
        encode = self.engine.tokenizer.encode_prompt
        total = 0
        for i, d in enumerate(prepared.documents):
            text, cut = self.truncate(d.content, n)
            ids = encode(self.build_prompt(q, text, prepared.instruction))
            total += len(ids)
            if max_prompt_tokens is not None and total > max_prompt_tokens:
                raise PromptBudgetError(max_prompt_tokens, i, len(prepared.documents))
            prepared.truncated.append(cut)
            prepared.units.append(
                Unit(payload=ids, weight=len(ids), return_reasoning=prepared.return_reasoning)
            )
        prepared.exact_tokens = True

    def run(self, units: Sequence[Unit]) -> list[DocumentScore]:
        """Score the prompts of any queries in one engine call: one :class:`DocumentScore` per unit,
        ``index`` 0 and ``prompt_tokens`` set (:meth:`finish` assigns the rest)."""
        prompts: list[list[int]] = [u.payload for u in units]
        if not prompts:
            return []
        if self._mode == "direct":
            scores = self._score_direct(prompts)
        else:
            scores = self._score_reasoning(prompts, [u.return_reasoning for u in units])
        for s, p in zip(scores, prompts, strict=True):
            s.prompt_tokens = len(p)
        return scores

    def _collect(self, prepared: Prepared, results: Sequence[Any]) -> tuple[list[DocumentScore], Usage]:
        scores: list[DocumentScore] = list(results)
        for i, s in enumerate(scores):
            s.index = i
            s.truncated = prepared.truncated[i]
        usage = Usage(model_calls=len(scores), prompt_tokens=sum(s.prompt_tokens for s in scores))
        if self._mode != "direct":
            usage.generated_tokens = sum(s.generated_tokens for s in scores)
        self.last_counters = {}
        return scores, usage

    def _score_direct(self, prompts: list[list[int]]) -> list[DocumentScore]:
        st = self.score_tokens
        ext = [st.branch] if st.branch is not None else []
        reqs = [LogprobRequest(prompt_ids=p, token_ids=self._all_score_ids, extension=ext) for p in prompts]
        out = []
        for res in self.engine.logprobs(reqs):
            dist = scoring.label_probabilities(st, res.steps[0], res.steps[1] if ext else None)
            label = max(range(len(dist)), key=lambda s: (dist[s], -s))
            p = dist[label]
            exp = scoring.expected_score(dist)
            out.append(
                DocumentScore(
                    index=0,
                    score=exp if self.rule == "expected" else scoring.rank_score(label, p),
                    label=label,
                    probability=p,
                    distribution=dist,
                    expected_score=exp,
                    parsed=True,
                )
            )
        return out

    def _score_reasoning(self, prompts: list[list[int]], return_reasoning: list[bool]) -> list[DocumentScore]:
        reqs = [
            GenerateRequest(
                prompt_ids=p,
                max_new_tokens=self.max_new_tokens,
                stop=[ANSWER_STOP],
                logprob_token_ids=self._all_score_ids,
            )
            for p in prompts
        ]
        gens = self.engine.generate(reqs)
        out = []
        for p, g, keep in zip(prompts, gens, return_reasoning, strict=True):
            out.append(self._score_generation(p, g, keep))
        return out

    def _score_generation(
        self, prompt: list[int], g: GenerateResult, return_reasoning: bool
    ) -> DocumentScore:
        label, at = scoring.parse_answer(g.text, self.scale)
        reasoning = scoring.reasoning_text(g.text) if return_reasoning else None
        base = DocumentScore(
            index=0,
            score=0.0,
            generated_tokens=len(g.token_ids),
            reasoning=reasoning,
            output=g.text if return_reasoning else None,
        )
        if label is None:
            base.parsed = False
            return base
        prob = self._answer_probability(prompt, g, label, at)
        base.label, base.probability, base.score = label, prob, scoring.rank_score(label, prob)
        return base

    def _answer_probability(self, prompt: list[int], g: GenerateResult, label: int, at: int) -> float:
        """P(label) at the answer position of a generation."""
        st = self.score_tokens
        seq = st.sequences[label]
        k = _token_index_at(self.engine.tokenizer.decode, g.token_ids, at)
        if k is not None and g.token_ids[k] == seq[0] and k < len(g.step_logprobs):
            first = g.step_logprobs[k]
            second = (
                g.step_logprobs[k + 1]
                if k + 1 < len(g.step_logprobs) and g.token_ids[k] == st.branch
                else None
            )
            dist = scoring.label_probabilities(st, first, second)
            return dist[label]
        # The digits were merged into another token (or no log-probabilities were recorded):
        # read them with one forward pass over the prompt and the text up to the answer.
        head = self.engine.tokenizer.encode(g.text[:at])
        ext = [st.branch] if st.branch is not None else []
        res = self.engine.logprobs([LogprobRequest(prompt + head, self._all_score_ids, ext)])[0]
        return scoring.label_probabilities(st, res.steps[0], res.steps[1] if ext else None)[label]


def _token_index_at(decode: object, ids: list[int], char_pos: int) -> int | None:
    """The index of the token whose decoded text covers character ``char_pos``."""
    if char_pos < 0:
        return None
    lo, hi = 0, len(ids)
    # smallest k with len(decode(ids[:k+1])) > char_pos
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[: mid + 1])) > char_pos:  # type: ignore[operator]
            hi = mid
        else:
            lo = mid + 1
    return lo if lo < len(ids) else None
