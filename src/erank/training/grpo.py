"""One GRPO optimisation step (direct or reasoning rollouts), its rewards and its checkpoints."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError
from erank.training.config import RLConfig
from erank.training.policy import UNPARSABLE, _Policy
from erank.training.rewards import compute_rewards, group_advantages

__all__: list[str] = []

logger = logging.getLogger(__name__)


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
