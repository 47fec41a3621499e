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
import time
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError
from erank.progress import progress_bar
from erank.training.config import RLConfig
from erank.training.grpo import (  # noqa: F401 - _query_rewards: tests reach it here
    _direct_step,
    _load_checkpoint,
    _query_rewards,
    _reasoning_step,
    _save_checkpoint,
)
from erank.training.policy import GRPOStepStats, _Policy, score_logprobs
from erank.training.sampler import QueryGroupSampler

__all__ = ["run_rl", "score_logprobs", "GRPOStepStats"]

logger = logging.getLogger(__name__)


def run_rl(cfg: RLConfig, *, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Run GRPO as configured (resuming from the latest checkpoint in ``output_dir``).

    The rollout style follows the data: ``direct`` (the score after ``<answer>``) or
    ``reasoning`` (generated ``<think>...</think><answer>s</answer>`` completions).
    ``stop_after``: return after this many optimisation steps in this call (tests use it to
    simulate a kill); the run can then be resumed.
    """
    from erank.training.artifacts import data_params, eval_rows_path, latest_checkpoint, load_pairs

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
    trunc = data_params(cfg.data).get("truncate_length", 2048)
    torch.manual_seed(cfg.seed)
    pol = _Policy(cfg, style)
    pol.builder.truncate_length = trunc
    pol.direct_builder.truncate_length = trunc
    reserve = 2 if style == "direct" else cfg.max_new_tokens
    fits: list[list[int] | None] = []
    for r in rows:
        ids = pol.builder.prompt_ids(r["query"], r["doc"], r["instruction"])
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
            direct_prompts.append(pol.direct_builder.prompt_ids(r["query"], r["doc"], r["instruction"]))
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
    eval_path = eval_rows_path(cfg.data)
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
    from erank.training.config import EvalConfig
    from erank.training.sft import validation_ndcg

    ecfg = cfg.eval or EvalConfig.model_validate({})
    v = validation_ndcg(pol.model, pol.tok, pol.device, eval_path, ecfg, mode=pol.style)
    pol.model.train()
    return v


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
