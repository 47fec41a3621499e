"""The GRPO policy: the model with its LoRA adapter, its prompt builders, and the score read from
its log-probabilities (:func:`score_logprobs`, shared with the pointwise trainer)."""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch

from erank.scoring import ScoreTokens
from erank.training.config import RLConfig

__all__ = ["GRPOStepStats", "UNPARSABLE", "left_pad", "score_logprobs"]

logger = logging.getLogger(__name__)


#: The category index of an unparsable rollout (anything but a score string 0..10).
UNPARSABLE = 11


def score_logprobs(st: ScoreTokens, lp1: torch.Tensor, lp2: torch.Tensor | None) -> torch.Tensor:
    """Log-probabilities of the 12 outcomes after ``<answer>``: scores 0..max, then "unparsable".

    ``lp1``: log-softmax over the vocabulary at the answer position, shape ``(B, V)``; ``lp2``:
    the same after the ``branch`` token ("1" of "10"), or None when every score is one token.
    ``P("1") = P("1") (1 - P(second digit | "1"))`` as in :mod:`erank.scoring`. Differentiable.
    """
    cols = []
    branch = st.branch
    p2_total = None
    if lp2 is not None and st.second_tokens:
        p2_total = lp2[:, st.second_tokens].exp().sum(-1).clamp(max=1.0 - 1e-6)
    for seq in st.sequences:
        if len(seq) == 2:
            assert lp2 is not None
            cols.append(lp1[:, seq[0]] + lp2[:, seq[1]])
        elif branch is not None and seq[0] == branch and p2_total is not None:
            cols.append(lp1[:, seq[0]] + torch.log1p(-p2_total))
        else:
            cols.append(lp1[:, seq[0]])
    lab = torch.stack(cols, dim=-1)
    rest = (1.0 - lab.exp().sum(-1)).clamp(min=1e-8)
    return torch.cat([lab, rest.log().unsqueeze(-1)], dim=-1)


class GRPOStepStats(dict):  # type: ignore[type-arg]
    """What one optimisation step logs (reward, KL, clip fraction, unparsable share...)."""


def left_pad(seqs: list[list[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Left-padded ``input_ids``, ``attention_mask`` and ``position_ids`` (0 at each row's first
    real token) for a batch of token sequences: the one padding rule of the trainers."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for r, s in enumerate(seqs):
        ids[r, width - len(s) :] = torch.tensor(s)
        mask[r, width - len(s) :] = 1
    return ids, mask, (mask.cumsum(-1) - 1).clamp(min=0)


class _Policy:
    """The model, its reference, the score tokens and batched forward passes."""

    def __init__(self, cfg: RLConfig, style: str = "direct") -> None:
        from erank.training.data import PromptBuilder
        from erank.training.sft import load_causal_lm

        self.cfg = cfg
        model, tok, self.location = load_causal_lm(cfg.model, bf16=cfg.bf16)
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model.to(self.device)
        self.tok = tok
        self.ref: Any = None
        if cfg.lora is not None:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(
                model,
                LoraConfig(
                    r=cfg.lora.r,
                    lora_alpha=cfg.lora.alpha,
                    lora_dropout=cfg.lora.dropout,
                    target_modules=cfg.lora.target_modules,
                    task_type="CAUSAL_LM",
                ),
            )
        else:
            self.ref = copy.deepcopy(model).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.model = model
        self.style = style
        self.builder = PromptBuilder(tok, style, None)
        self.direct_builder = self.builder if style == "direct" else PromptBuilder(tok, "direct", None)
        self.st = ScoreTokens.from_tokenizer(self.builder.engine.tokenizer.encode, cfg.reward.max_score)
        self.pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.eos = int(tok.eos_token_id)

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _forward(self, net: Any, prompts: list[list[int]]) -> torch.Tensor:
        branch = self.st.branch
        seqs = [p + ([branch] if branch is not None else []) for p in prompts]
        ids, mask, pos = left_pad(seqs, self.pad)
        keep = 2 if branch is not None else 1
        out = net(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            logits_to_keep=keep,
            use_cache=False,
        )
        lp = torch.log_softmax(out.logits.float() / self.cfg.temperature, dim=-1)
        return score_logprobs(self.st, lp[:, 0, :], lp[:, 1, :] if keep == 2 else None)

    def policy_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        return self._forward(self.model, prompts)

    @torch.no_grad()
    def ref_logprobs(self, prompts: list[list[int]]) -> torch.Tensor:
        if self.ref is not None:
            return self._forward(self.ref, prompts)
        with self.model.disable_adapter():
            return self._forward(self.model, prompts)

    # ---------------------------------------------------------------- reasoning style
    def completion_logprobs(
        self, net: Any, prompts: list[list[int]], completions: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-token log-probabilities of ``completions`` after their ``prompts``: ``(lp, mask)``,
        both ``(B, L)`` with ``L`` the longest completion (padding has mask 0 and lp 0).

        Prompts are left-padded and completions right-padded so that every completion starts
        at the same column; only the completion positions go through the LM head.
        """
        p_w = max(len(p) for p in prompts)
        c_w = max(1, max(len(c) for c in completions))
        ids = torch.full((len(prompts), p_w + c_w), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, (p, c) in enumerate(zip(prompts, completions, strict=True)):
            ids[r, p_w - len(p) : p_w] = torch.tensor(p)
            mask[r, p_w - len(p) : p_w] = 1
            if c:
                ids[r, p_w : p_w + len(c)] = torch.tensor(c)
                mask[r, p_w : p_w + len(c)] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        out = net(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            position_ids=pos.to(self.device),
            logits_to_keep=c_w + 1,
            use_cache=False,
        )
        logits = out.logits[:, :-1, :].float() / self.cfg.temperature  # predicts columns p_w..
        target = ids[:, p_w:].to(self.device)
        lp = logits.gather(-1, target.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)
        cmask = mask[:, p_w:].to(self.device, dtype=lp.dtype)
        return lp * cmask, cmask

    def ref_completion_logprobs(
        self, prompts: list[list[int]], completions: list[list[int]]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad():
            if self.ref is not None:
                return self.completion_logprobs(self.ref, prompts, completions)
            with self.model.disable_adapter():
                return self.completion_logprobs(self.model, prompts, completions)

    @torch.no_grad()
    def sample(self, prompts: list[list[int]], rollouts: int, seed: int) -> list[list[list[int]]]:
        """``rollouts`` sampled completions per prompt (token ids, ending with EOS unless the
        length limit cut them), from the current policy."""
        p_w = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), p_w), self.pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for r, p in enumerate(prompts):
            ids[r, p_w - len(p) :] = torch.tensor(p)
            mask[r, p_w - len(p) :] = 1
        was_training = self.model.training
        self.model.eval()
        torch.manual_seed(seed)
        try:
            out = self.model.generate(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                do_sample=True,
                temperature=self.cfg.temperature,
                top_k=0,
                top_p=1.0,
                max_new_tokens=self.cfg.max_new_tokens,
                num_return_sequences=rollouts,
                pad_token_id=self.pad,
                eos_token_id=self.eos,
            )
        finally:
            if was_training:
                self.model.train()
        result: list[list[list[int]]] = []
        for r in range(len(prompts)):
            group = []
            for g in range(rollouts):
                seq = out[r * rollouts + g, p_w:].tolist()
                if self.eos in seq:
                    seq = seq[: seq.index(self.eos) + 1]
                group.append(seq)
            result.append(group)
        return result

    @torch.no_grad()
    def ref_direct_scores(self, prompts: list[list[int]]) -> list[float]:
        """The reference model's most probable score in direct mode (r_RR's reference score)."""
        lp = self.ref_logprobs(prompts)
        return [float(v) for v in lp[:, :UNPARSABLE].argmax(-1).tolist()]
