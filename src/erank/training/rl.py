"""GRPO for ERank with the listwise-derived reward (spec 3.2).

Why a loop of our own and not TRL's ``GRPOTrainer`` (read in trl 1.16,
``trl/trainer/grpo_trainer.py``):

* the reward of one rollout depends on the rollouts of *every* document of its query (the global
  rank ``phi`` over N x G scores). ``GRPOTrainer``'s ``RepeatSampler`` draws prompt indices with a
  seeded ``randperm`` and repeats each G times; the reward function sees one generation batch
  (``per_device_train_batch_size x steps_per_generation`` rows, further split across processes).
  Keeping a query's N documents in one reward call would need overriding the private
  ``_get_train_sampler`` *and* making every generation batch a multiple of N x G with queries of
  equal N - the dataset's queries have different N after the length filter, so rows of one query
  would straddle two reward calls and their ranks would be wrong without any error;
* in ``direct`` style a rollout is the score string after ``<answer>``: its G samples and their
  exact log-probabilities come from one forward pass over the prompt (the 12-way distribution
  "0".."10" or unparsable, see :func:`score_logprobs`). ``GRPOTrainer`` would call ``generate``
  G times per prompt and decode text, which is far slower on a CPU and no more exact;
* in ``reasoning`` style (the paper's) a rollout is a whole generated completion
  (``<think>...</think><answer>s</answer>``, at most ``max_new_tokens``), sampled with
  ``generate(do_sample=True, top_k=0, top_p=1)`` at ``temperature``; the loss is token-level
  (per-token ratio and k3 KL, averaged over each completion's tokens, then over rollouts, as in
  GRPO). A completion without a parsable answer (including one cut by the length limit) gets
  the unparsable penalty;
* the r_RR reward needs the reference (SFT) model's own score of each document, which is
  computed here in the same pass as the KL term (direct style), or as the reference model's
  most probable score in a direct-mode forward pass (reasoning style: one pass per document
  instead of a greedy reasoning generation; cached for the run).

So batches come from :class:`~erank.training.sampler.QueryGroupSampler` (whole queries), the
advantage is normalised over the G rollouts of each prompt (document), and the loss is the
clipped surrogate (``clip``) plus ``kl_coef`` times the low-variance (k3) KL estimate to the
reference model, as in the paper (verl's ``low_var_kl``).

One batch of rollouts gives ``inner_epochs x mini_batches`` optimiser steps: each inner epoch
shuffles the batch's documents (seeded) and splits them into ``mini_batches`` parts (a document's G
rollouts stay together; the paper: 1280 prompts as 4 x 320), one AdamW step each. Every step after
the first sees a policy that has moved away from the one that sampled the rollouts, so the
importance ratio leaves 1 and the clip acts; with a single step per batch (``inner_epochs: 1``,
``mini_batches: 1``) the ratio is 1 (up to rounding) and the surrogate is the plain policy gradient. ``clip_frac`` in the metrics is the share of
ratios (per sampled score, or per completion token) outside ``1 +- clip`` over all steps of the
batch.

Groups: r_RR and r_NDCG need each query's positive in its group. A prompt longer than ``cutoff``
is left out; when that prompt is a query's positive the whole query is left out (counted in the
summary as ``dropped_queries``), and a query whose data has no positive at all is refused with an
:class:`~erank.errors.InputError` (``reward.kind: se`` needs no positive).

Reference model: with ``lora`` the policy is the SFT model plus a fresh adapter and the
reference is the same network with the adapter disabled (no second copy in memory); without
``lora`` (full-parameter, the paper) the reference is a frozen copy.

Outputs in ``output_dir``: ``checkpoint-N/`` (``trainable.pt``, ``optimizer.pt``, ``state.json``;
the latest is resumed automatically), ``metrics.jsonl``, ``final/`` (a plain model folder for
``Reranker(model=...)``), ``adapter/`` with ``lora``, ``summary.json``.

>>> from erank.training.config import RLConfig, load_config      # doctest: +SKIP
>>> run_rl(load_config("configs/train/toy-rl.yaml", RLConfig))   # doctest: +SKIP
"""

from __future__ import annotations

import copy
import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError
from erank.progress import progress_bar
from erank.scoring import ScoreTokens
from erank.training.config import RLConfig
from erank.training.rewards import compute_rewards, group_advantages
from erank.training.sampler import QueryGroupSampler

__all__ = ["run_rl", "score_logprobs", "GRPOStepStats"]

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


def _chunks(items: list[int], n: int) -> list[list[int]]:
    return [items[i : i + n] for i in range(0, len(items), n)]


def _mini_batches(n_docs: int, parts: int, seed: int) -> list[list[int]]:
    """Document indices ``0..n_docs-1`` shuffled with ``seed`` and split into ``parts`` (at most
    ``n_docs``) mini-batches of near-equal size.

    >>> parts = _mini_batches(5, 2, seed=0)
    >>> [len(p) for p in parts], sorted(i for p in parts for i in p)
    ([2, 3], [0, 1, 2, 3, 4])
    >>> [len(p) for p in _mini_batches(2, 4, seed=0)]
    [1, 1]
    """
    gen = torch.Generator()
    gen.manual_seed(seed)
    order = torch.randperm(n_docs, generator=gen).tolist()
    k = max(1, min(parts, n_docs))
    return [order[i * n_docs // k : (i + 1) * n_docs // k] for i in range(k)]


def _update_seed(cfg: RLConfig, step: int, epoch: int) -> int:
    return (cfg.seed * 1_000_003 + step) * 10_007 + epoch


def _save_checkpoint(
    pol: _Policy, opt: torch.optim.Optimizer, out: Path, state: dict[str, Any], keep: int = 2
) -> Path:
    target = out / f"checkpoint-{state['step']}"
    tmp = out / f".tmp-checkpoint-{state['step']}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    trainable = {n: p.detach().cpu() for n, p in pol.model.named_parameters() if p.requires_grad}
    torch.save(trainable, tmp / "trainable.pt")
    torch.save(opt.state_dict(), tmp / "optimizer.pt")
    state = dict(state, torch_rng=None)
    (tmp / "state.json").write_text(json.dumps(state), encoding="utf-8")
    torch.save(torch.get_rng_state(), tmp / "rng.pt")
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)
    ckpts = sorted(
        (p for p in out.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.split("-")[-1])
    )
    for old in ckpts[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return target


def _load_checkpoint(pol: _Policy, opt: torch.optim.Optimizer, ckpt: Path) -> dict[str, Any]:
    trainable = torch.load(ckpt / "trainable.pt", map_location=pol.device)
    missing = [n for n, p in pol.model.named_parameters() if p.requires_grad and n not in trainable]
    if missing:
        raise InputError(f"checkpoint {ckpt} does not match this configuration (missing {missing[:3]}...)")
    pol.model.load_state_dict(trainable, strict=False)
    opt.load_state_dict(torch.load(ckpt / "optimizer.pt", map_location=pol.device))
    torch.set_rng_state(torch.load(ckpt / "rng.pt"))
    return dict(json.loads((ckpt / "state.json").read_text(encoding="utf-8")))


def _query_rewards(
    cfg: RLConfig,
    rows: list[dict[str, Any]],
    batch: list[int],
    scores: list[list[int | None]],
    ref_scores: list[float],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Rewards and advantages ``(B, G)``: the reward listwise over each query's N x G scores."""
    rparams = cfg.reward.model_dump(exclude={"kind"})
    adv = torch.zeros(len(batch), cfg.rollouts)
    rewards_all = torch.zeros(len(batch), cfg.rollouts)
    by_query: dict[str, list[int]] = {}
    for j, i in enumerate(batch):
        by_query.setdefault(str(rows[i]["qid"]), []).append(j)
    for qid, js in by_query.items():
        if cfg.reward.kind != "se" and not any(rows[batch[j]]["is_positive"] for j in js):
            raise InputError(
                f"query {qid!r} has no positive document in its group: reward {cfg.reward.kind} "
                "would reward every negative; drop the query from the data or give it its positive"
            )
        rew = compute_rewards(
            cfg.reward.kind,
            [scores[j] for j in js],
            [bool(rows[batch[j]]["is_positive"]) for j in js],
            [float(rows[batch[j]]["target"]) for j in js],
            [ref_scores[j] for j in js],
            rparams,
        )
        for j, rw in zip(js, rew, strict=True):
            rewards_all[j] = torch.tensor(rw)
            adv[j] = torch.tensor(group_advantages(rw))
    return rewards_all, adv


def _grpo_terms(
    new_lp: torch.Tensor, old_lp: torch.Tensor, ref_lp: torch.Tensor, adv: torch.Tensor, clip: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped surrogate, the k3 KL to the reference and the clipped mask, element by element
    (per sampled score in direct style, per completion token in reasoning style)."""
    ratio = (new_lp - old_lp).exp()
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    d = ref_lp - new_lp
    kl = d.exp() - d - 1.0
    return surr, kl, ((ratio.detach() - 1).abs() > clip).float()


def _direct_step(
    pol: _Policy,
    opt: torch.optim.Optimizer,
    cfg: RLConfig,
    rows: list[dict[str, Any]],
    prompts: list[list[int]],
    batch: list[int],
    step: int,
) -> dict[str, Any]:
    """One GRPO step on direct-style rollouts (the score after ``<answer>``)."""
    chunk = cfg.micro_batch
    # 1. rollouts from the current policy, reference log-probabilities, rewards
    with torch.no_grad():
        old_lp = torch.cat([pol.policy_logprobs([prompts[i] for i in c]) for c in _chunks(batch, chunk)])
        ref_lp = torch.cat([pol.ref_logprobs([prompts[i] for i in c]) for c in _chunks(batch, chunk)])
    # one seed per step: a resumed run draws the same rollouts as an uninterrupted one
    gen = torch.Generator()
    gen.manual_seed(cfg.seed * 1_000_003 + step)
    samples = torch.multinomial(old_lp.exp().cpu(), cfg.rollouts, replacement=True, generator=gen)  # (B, G)
    ref_label = ref_lp[:, :UNPARSABLE].argmax(-1)
    scores = [
        [None if int(c) == UNPARSABLE else int(c) for c in samples[j].tolist()] for j in range(len(batch))
    ]
    rewards_all, adv = _query_rewards(cfg, rows, batch, scores, [float(v) for v in ref_label.tolist()])
    old_sel = old_lp.cpu().gather(1, samples)
    ref_sel = ref_lp.cpu().gather(1, samples)
    # 2. clipped surrogate + k3 KL: inner_epochs x mini_batches optimiser steps, each accumulating
    #    its mini-batch's gradient chunk by chunk
    n_roll = len(batch) * cfg.rollouts
    loss_sum = kl_sum = clip_sum = 0.0
    updates = 0
    for epoch in range(cfg.inner_epochs):
        for mb in _mini_batches(len(batch), cfg.mini_batches, _update_seed(cfg, step, epoch)):
            opt.zero_grad(set_to_none=True)
            n_mb = len(mb) * cfg.rollouts
            for c in _chunks(mb, chunk):
                new_lp = pol.policy_logprobs([prompts[batch[j]] for j in c])
                idx = torch.tensor(c)
                new_sel = new_lp.gather(1, samples[idx].to(new_lp.device))
                dev = new_sel.device
                surr, kl, clipped = _grpo_terms(
                    new_sel, old_sel[idx].to(dev), ref_sel[idx].to(dev), adv[idx].to(dev), cfg.clip
                )
                loss = (-surr + cfg.kl_coef * kl).sum() / n_mb
                loss.backward()
                loss_sum += float(loss.detach())
                kl_sum += float(kl.detach().sum())
                clip_sum += float(clipped.sum())
            torch.nn.utils.clip_grad_norm_(pol.trainable(), cfg.max_grad_norm)
            opt.step()
            updates += 1
    return {
        "loss": loss_sum / updates,
        "reward": float(rewards_all.mean()),
        "kl": kl_sum / (n_roll * cfg.inner_epochs),
        "clip_frac": clip_sum / (n_roll * cfg.inner_epochs),
        "updates": updates,
        "unparsable": float((samples == UNPARSABLE).float().mean()),
    }


def _reasoning_step(
    pol: _Policy,
    opt: torch.optim.Optimizer,
    cfg: RLConfig,
    rows: list[dict[str, Any]],
    prompts: list[list[int]],
    direct_prompts: list[list[int]],
    ref_cache: dict[int, float],
    batch: list[int],
    step: int,
) -> dict[str, Any]:
    """One GRPO step on reasoning-style rollouts (whole generated completions), token-level loss."""
    from erank.scoring import parse_answer

    g_n = cfg.rollouts
    # 1. G completions per document from the current policy (seeded per step: resumable)
    comps: list[list[int]] = []  # flat, document-major: index j * G + g
    for k, c in enumerate(_chunks(batch, max(1, cfg.micro_batch // g_n))):
        seed = (cfg.seed * 1_000_003 + step) * 1_009 + k
        for group in pol.sample([prompts[i] for i in c], g_n, seed):
            comps.extend(group)
    scores: list[list[int | None]] = []
    for j in range(len(batch)):
        texts = [pol.tok.decode(comps[j * g_n + g], skip_special_tokens=True) for g in range(g_n)]
        scores.append([parse_answer(t, cfg.reward.max_score)[0] for t in texts])
    missing = [i for i in batch if i not in ref_cache]
    for c in _chunks(missing, cfg.micro_batch):
        for i, v in zip(c, pol.ref_direct_scores([direct_prompts[i] for i in c]), strict=True):
            ref_cache[i] = v
    rewards_all, adv = _query_rewards(cfg, rows, batch, scores, [ref_cache[i] for i in batch])
    flat_prompts = [prompts[batch[j // g_n]] for j in range(len(comps))]
    flat_adv = adv.reshape(-1)
    # 2. old (sampling-time) and reference per-token log-probabilities, one row per completion
    old: list[torch.Tensor] = []
    ref: list[torch.Tensor] = []
    with torch.no_grad():
        for c in _chunks(list(range(len(comps))), cfg.micro_batch):
            lp, _ = pol.completion_logprobs(pol.model, [flat_prompts[j] for j in c], [comps[j] for j in c])
            rlp, _ = pol.ref_completion_logprobs([flat_prompts[j] for j in c], [comps[j] for j in c])
            for r, j in enumerate(c):
                old.append(lp[r, : max(1, len(comps[j]))].detach())
                ref.append(rlp[r, : max(1, len(comps[j]))].detach())
    # 3. clipped surrogate + k3 KL per token, mean over each completion's tokens, mean over rollouts;
    #    inner_epochs x mini_batches optimiser steps (a document's G completions stay together)
    loss_sum = kl_sum = clip_sum = 0.0
    n_tok = 0.0
    updates = 0
    for epoch in range(cfg.inner_epochs):
        for mb in _mini_batches(len(batch), cfg.mini_batches, _update_seed(cfg, step, epoch)):
            opt.zero_grad(set_to_none=True)
            rows_mb = [j * g_n + g for j in mb for g in range(g_n)]
            for c in _chunks(rows_mb, cfg.micro_batch):
                new_lp, m = pol.completion_logprobs(
                    pol.model, [flat_prompts[j] for j in c], [comps[j] for j in c]
                )
                old_c = _pad_rows([old[j] for j in c], new_lp.shape[1]).to(new_lp.device)
                ref_c = _pad_rows([ref[j] for j in c], new_lp.shape[1]).to(new_lp.device)
                a = flat_adv[torch.tensor(c)].to(new_lp.device).unsqueeze(-1)
                surr, kl, clipped = _grpo_terms(new_lp, old_c, ref_c, a, cfg.clip)
                per_tok = (-surr + cfg.kl_coef * kl) * m
                loss = (per_tok.sum(-1) / m.sum(-1).clamp(min=1.0)).sum() / len(rows_mb)
                loss.backward()
                loss_sum += float(loss.detach())
                kl_sum += float((kl.detach() * m).sum())
                clip_sum += float((clipped * m).sum())
                n_tok += float(m.sum())
            torch.nn.utils.clip_grad_norm_(pol.trainable(), cfg.max_grad_norm)
            opt.step()
            updates += 1
    flat_scores = [s for group in scores for s in group]
    return {
        "loss": loss_sum / updates,
        "reward": float(rewards_all.mean()),
        "kl": kl_sum / max(1.0, n_tok),
        "clip_frac": clip_sum / max(1.0, n_tok),
        "updates": updates,
        "unparsable": sum(1 for v in flat_scores if v is None) / len(flat_scores),
        "completion_tokens": sum(len(c) for c in comps) / len(comps),
    }


def _pad_rows(rows: list[torch.Tensor], width: int) -> torch.Tensor:
    """1-D tensors right-padded with 0 (or cut) to ``width`` columns, stacked."""
    out = torch.zeros(len(rows), width, dtype=rows[0].dtype, device=rows[0].device)
    for r, t in enumerate(rows):
        n = min(width, t.shape[0])
        out[r, :n] = t[:n]
    return out


def run_rl(cfg: RLConfig, *, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run GRPO as configured (resuming from the latest checkpoint in ``output_dir``).

    The rollout style follows the data: ``direct`` (the score after ``<answer>``) or
    ``reasoning`` (generated ``<think>...</think><answer>s</answer>`` completions).
    ``stop_after``: return after this many optimisation steps in this call (tests use it to
    simulate a kill); the run can then be resumed.
    """
    from erank.training.sft import _data_params, _eval_rows, latest_checkpoint, load_pairs

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_pairs(cfg.data)
    if cfg.max_queries is not None:
        qids = list(dict.fromkeys(r["qid"] for r in rows))[: cfg.max_queries]
        wanted = set(qids)
        rows = [r for r in rows if r["qid"] in wanted]
    styles = {str(r.get("style") or "direct") for r in rows}
    if len(styles) != 1 or not styles <= {"direct", "reasoning"}:
        raise InputError(
            f"erank train rl needs data of one target style, direct or reasoning; got {sorted(styles)}"
        )
    style = styles.pop()
    needs_positive = cfg.reward.kind != "se"
    if needs_positive:
        _refuse_groups_without_positive(rows, cfg.reward.kind)
    trunc = _data_params(cfg.data).get("truncate_length", 2048)
    torch.manual_seed(cfg.seed)
    pol = _Policy(cfg, style)
    pol.builder.truncate_length = trunc
    pol.direct_builder.truncate_length = trunc
    reserve = 2 if style == "direct" else cfg.max_new_tokens
    encode = pol.builder.engine.tokenizer.encode_prompt
    fits: list[list[int] | None] = []
    for r in rows:
        ids = encode(pol.builder.prompt(r["query"], r["doc"], r["instruction"]))
        fits.append(ids if len(ids) + reserve <= cfg.cutoff else None)
    # r_RR / r_NDCG: a query none of whose positive prompts fits goes whole (no positive in its group)
    lost: set[str] = set()
    if needs_positive:
        kept_pos = {
            str(r["qid"]) for r, f in zip(rows, fits, strict=True) if f is not None and r.get("is_positive")
        }
        lost = {str(r["qid"]) for r in rows} - kept_pos
    prompts: list[list[int]] = []
    direct_prompts: list[list[int]] = []
    keep_rows: list[dict[str, Any]] = []
    for r, fit in zip(rows, fits, strict=True):
        if fit is None or str(r["qid"]) in lost:
            continue
        prompts.append(fit)
        if style != "direct":
            direct_prompts.append(encode(pol.direct_builder.prompt(r["query"], r["doc"], r["instruction"])))
        keep_rows.append(r)
    dropped = {"dropped_prompts": sum(1 for ids in fits if ids is None), "dropped_queries": len(lost)}
    if dropped["dropped_prompts"]:
        logger.warning(
            "%d prompts are longer than the cutoff (%d tokens) and left out; %d queries lost their "
            "positive that way and are left out whole",
            dropped["dropped_prompts"],
            cfg.cutoff,
            len(lost),
        )
    if not keep_rows:
        raise InputError(
            f"no query is left: the prompts are longer than the cutoff ({cfg.cutoff} tokens"
            + (f", {cfg.max_new_tokens} of them kept for the rollout)" if style != "direct" else ")")
            + (", at least every query's positive" if needs_positive else "")
        )
    sampler = QueryGroupSampler(
        [r["qid"] for r in keep_rows], cfg.queries_per_batch, shuffle=True, seed=cfg.seed
    )
    opt = torch.optim.AdamW(pol.trainable(), lr=cfg.learning_rate, weight_decay=0.0)
    state: dict[str, Any] = {"step": 0, "epoch": 0, "batch": 0}
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        state = _load_checkpoint(pol, opt, ckpt)
        logger.info("resumed from %s (step %d)", ckpt, state["step"])
    total_steps = len(sampler) * cfg.epochs if cfg.max_steps < 0 else cfg.max_steps
    metrics_file = out / "metrics.jsonl"
    eval_path = _eval_rows(cfg.data)
    ref_cache: dict[int, float] = {}
    done_here = 0
    pol.model.train()
    # one step bar with an ETA on a terminal (erank.progress); the log lines below carry the ETA too
    with progress_bar(total_steps, "rl", unit="steps", completed=state["step"]) as bar:
        while state["step"] < total_steps and state["epoch"] < cfg.epochs:
            sampler.set_epoch(state["epoch"])
            for batch in sampler.batches(skip=state["batch"]):
                if state["step"] >= total_steps:
                    break
                st = time.time()
                if style == "direct":
                    stats = _direct_step(pol, opt, cfg, keep_rows, prompts, batch, state["step"])
                else:
                    stats = _reasoning_step(
                        pol, opt, cfg, keep_rows, prompts, direct_prompts, ref_cache, batch, state["step"]
                    )
                state["step"] += 1
                state["batch"] += 1
                done_here += 1
                bar.update(completed=state["step"])
                if "reward" in stats:
                    bar.describe(f"rl  reward {float(stats['reward']):.3f}")
                rec: dict[str, Any] = {
                    "step": state["step"],
                    "epoch": state["epoch"],
                    **stats,
                    "docs": len(batch),
                    "seconds": round(time.time() - st, 2),
                }
                if cfg.eval_steps and eval_path is not None and state["step"] % cfg.eval_steps == 0:
                    rec.update(_validate(pol, eval_path, cfg))
                if state["step"] % cfg.logging_steps == 0:
                    logger.info("rl step %s  %s", bar.status_text(), json.dumps(rec))
                with metrics_file.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps(rec) + "\n")
                if state["step"] % cfg.save_steps == 0:
                    _save_checkpoint(pol, opt, out, state)
                if stop_after is not None and done_here >= stop_after:
                    _save_checkpoint(pol, opt, out, state)
                    return {"steps": state["step"], "stopped": True, "seconds": round(time.time() - t0, 1)}
            else:
                state["epoch"] += 1
                state["batch"] = 0
    _save_checkpoint(pol, opt, out, state)
    summary: dict[str, Any] = {
        "steps": state["step"],
        "style": style,
        **dropped,
        "resumed_from": str(ckpt) if ckpt else None,
        "seconds": round(time.time() - t0, 1),
        "base_model": str(pol.location),
    }
    if cfg.eval is not None and eval_path is not None:
        summary["val"] = _validate(pol, eval_path, cfg)
    _export(pol, out, summary)
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _refuse_groups_without_positive(rows: list[dict[str, Any]], kind: str) -> None:
    """An :class:`InputError` naming the queries of ``rows`` that have no positive document."""
    has_pos: dict[str, bool] = {}
    for r in rows:
        q = str(r["qid"])
        has_pos[q] = has_pos.get(q, False) or bool(r.get("is_positive", False))
    missing = [q for q, ok in has_pos.items() if not ok]
    if missing:
        raise InputError(
            f"{len(missing)} of {len(has_pos)} queries have no positive document (is_positive) in the "
            f"data, e.g. {missing[:3]}: reward {kind} would reward every negative of such a group; "
            "rebuild the data (erank train data keeps every query's positive) or use reward.kind: se"
        )


def _validate(pol: _Policy, eval_path: Path, cfg: RLConfig) -> dict[str, float]:
    from erank.engines.transformers import TransformersEngine
    from erank.training.config import EvalConfig
    from erank.training.evaluate import evaluate_engine

    ecfg = cfg.eval or EvalConfig.model_validate({})
    engine = TransformersEngine(model_obj=pol.model, tokenizer_obj=pol.tok, device=str(pol.device))
    m = evaluate_engine(
        engine,
        eval_path,
        max_queries=ecfg.max_queries,
        candidates=ecfg.candidates,
        truncate_length=ecfg.truncate_length,
        mode=pol.style,
    )
    pol.model.train()
    return {"val_ndcg@10": m["ndcg@10"], "val_first_stage_ndcg@10": m["first_stage_ndcg@10"]}


def _export(pol: _Policy, out: Path, summary: dict[str, Any]) -> None:
    model = pol.model
    if pol.cfg.lora is not None:
        model.save_pretrained(out / "adapter")
        pol.tok.save_pretrained(out / "adapter")
        summary["adapter"] = str(out / "adapter")
        model = copy.deepcopy(model).merge_and_unload()
    model.save_pretrained(out / "final")
    pol.tok.save_pretrained(out / "final")
    summary["final"] = str(out / "final")
