"""The GRPO stage of the pointwise trainer (:mod:`erank.training.pointwise`): per step one query's
documents (at least one positive), scores sampled from the policy's distribution over the 12
outcomes, the listwise reward, and ``mini_batches`` clipped updates (:func:`grpo_loss`)."""

from __future__ import annotations

import json
import math
import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError
from erank.training.config import RLConfig
from erank.training.pointwise_model import PointwiseModel
from erank.training.pointwise_stage import Stage, begin, read_settings, stratified, tokenize_rows

__all__ = ["grpo_loss", "run_pointwise_rl", "pick_group"]


def grpo_loss(
    new_logp: torch.Tensor,
    old_logp: torch.Tensor,
    ref_logp: torch.Tensor,
    samples: torch.Tensor,
    advantages: torch.Tensor,
    clip: float,
    kl_coef: float,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Clipped GRPO surrogate plus the exact KL to the reference, for direct-style rollouts.

    ``new_logp``, ``old_logp``, ``ref_logp``: ``[B, K]`` log-probabilities of the K outcomes;
    ``samples``, ``advantages``: ``[B, G]``. Returns the loss to minimise and diagnostics
    (``clipped``: the share of samples whose ratio left ``1 +- clip``).
    """
    new_s = new_logp.gather(1, samples)
    old_s = old_logp.gather(1, samples)
    ratio = torch.exp(new_s - old_s)
    unclipped = ratio * advantages
    clipped = torch.clamp(ratio, 1 - clip, 1 + clip) * advantages
    surrogate = torch.minimum(unclipped, clipped).mean()
    p_new = torch.exp(new_logp)
    kl = (p_new * (new_logp - ref_logp)).sum(-1).mean()
    loss = -surrogate + kl_coef * kl
    frac = float(((ratio - 1).abs() > clip).float().mean())
    return loss, {"surrogate": float(surrogate.detach()), "kl": float(kl.detach()), "clipped": frac}


def run_pointwise_rl(cfg: RLConfig, *, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Direct-style GRPO with mini-batches (:mod:`erank.training.pointwise`). ``cfg.model`` is the
    SFT adapter."""
    t0 = time.time()
    groups, _, trunc = begin(cfg)
    adapter = Path(cfg.model)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter} is not a LoRA adapter folder (the SFT stage's output_dir/adapter)")
    base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
        "base_model_name_or_path"
    )
    torch.manual_seed(cfg.seed)
    m = PointwiseModel(cfg.base_model or base, None, adapter, cfg.bf16)
    ref_state = m.lora_state()
    template = read_settings(adapter).get("template")
    tokenize_rows(m, groups, trunc, cfg.cutoff, template)
    usable = []
    for q, rows in sorted(groups.items()):
        if any(r["target"] >= cfg.positive_target for r in rows) and len(rows) >= 2:
            usable.append(q)
    if not usable:
        raise InputError(
            f"no query has a document with target >= {cfg.positive_target}: r_RR needs a positive"
        )
    if cfg.max_queries:
        usable = usable[: cfg.max_queries]
    total = cfg.max_steps if cfg.max_steps > 0 else len(usable) * cfg.epochs
    stage = Stage("rl", cfg, m, total, span=total, warmup=0, schedule="constant", resume=resume)
    while stage.step < total:
        step = stage.step
        rng = random.Random(cfg.seed * 1_000_003 + step)
        if cfg.source_weights:
            q = rng.choices(usable, [cfg.source_weights.get(u.split("/", 1)[0], 1.0) for u in usable])[0]
        else:
            q = usable[step % len(usable)]
        batch = pick_group(groups[q], cfg.docs_per_query, cfg.positive_target, rng)
        mean_r, stats, n_mb = _grpo_step(cfg, m, stage, batch, ref_state, rng)
        stage.sched.step()
        rec = {"reward": round(mean_r, 4), **{k: round(v / n_mb, 5) for k, v in stats.items()}}
        if stage.end_step(rec, f"reward {mean_r:.3f} clipped {stats['clipped'] / n_mb:.2f}", stop_after):
            return {"steps": stage.step, "stopped": True}
    return stage.finish(template, {"queries": len(usable), "seconds": round(time.time() - t0, 1)})


def _grpo_step(
    cfg: RLConfig,
    m: PointwiseModel,
    stage: Stage,
    batch: list[dict[str, Any]],
    ref_state: dict[str, torch.Tensor],
    rng: random.Random,
) -> tuple[float, Counter[str], int]:
    """One GRPO step on one query's documents: the mean reward, the summed loss diagnostics and
    the number of mini-batches."""
    from erank.training.rewards import compute_rewards, group_advantages

    G = cfg.rollouts
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + stage.step)
    m.model.eval()
    with torch.no_grad():
        old = m.forward(batch, cfg.micro_batch) / cfg.temperature
        old = torch.log_softmax(old, dim=-1)
        samples = torch.multinomial(torch.exp(old), G, replacement=True, generator=gen)
        cur = m.lora_state()
        m.load_lora_state(ref_state)
        ref = m.forward(batch, cfg.micro_batch)
        m.load_lora_state(cur)
    n_scores = ref.shape[1] - 1
    ref_scores = [float(int(torch.argmax(ref[i, :n_scores]))) for i in range(len(batch))]
    scores = [[None if int(s) == n_scores else int(s) for s in row] for row in samples.tolist()]
    positive = [r["target"] >= cfg.positive_target for r in batch]
    rewards = compute_rewards(
        cfg.reward.kind, scores, positive, [r["target"] for r in batch], ref_scores, cfg.reward.model_dump()
    )
    adv = torch.tensor([group_advantages(row) for row in rewards], dtype=torch.float32)
    m.model.train()
    order = list(range(len(batch)))
    rng.shuffle(order)
    mb_size = max(1, math.ceil(len(order) / cfg.mini_batches))
    stats: Counter[str] = Counter()
    n_mb = 0
    for _ in range(cfg.inner_epochs):
        for k in range(0, len(order), mb_size):
            idx = order[k : k + mb_size]
            new = m.forward([batch[i] for i in idx], cfg.micro_batch) / cfg.temperature
            new = torch.log_softmax(new, dim=-1)
            loss, parts = grpo_loss(new, old[idx], ref[idx], samples[idx], adv[idx], cfg.clip, cfg.kl_coef)
            stage.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(m.trainable(), cfg.max_grad_norm)
            stage.opt.step()
            stats.update(parts)
            n_mb += 1
    return sum(sum(r) for r in rewards) / (len(rewards) * G), stats, n_mb


def pick_group(
    rows: list[dict[str, Any]], n: int, positive_target: float, rng: random.Random
) -> list[dict[str, Any]]:
    """``n`` documents of one query with at least one positive (whole-query groups only)."""
    group = stratified(rows, n, rng)
    if not any(r["target"] >= positive_target for r in group):
        pos = [r for r in rows if r["target"] >= positive_target]
        if not pos:
            raise InputError("a GRPO group has no positive document: r_RR would reward every negative")
        group[-1] = rng.choice(pos)
    return group
