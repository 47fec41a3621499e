"""What the pointwise trainer's two stages share (:mod:`erank.training.pointwise`): the rows of a
training set grouped by query and tokenised, the stratified draw of a query's documents, and the
run of one stage (:class:`Stage`: the optimiser's schedule, the atomic checkpoint every
``save_steps`` and its resume, the metrics log, progress lines, the adapter written at the end).
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError
from erank.training.pointwise_model import PointwiseModel

__all__ = ["Stage", "begin", "load_rows", "tokenize_rows", "stratified", "read_settings"]

logger = logging.getLogger(__name__)

Rows = dict[str, list[dict[str, Any]]]


def load_rows(data: Path) -> tuple[Rows, dict[str, Any]]:
    """The rows of ``train.jsonl`` grouped by query, and the set's ``params.json``."""
    from erank.training.data import read_jsonl

    f = data / "train.jsonl" if data.is_dir() else data
    rows = read_jsonl(f)
    if not rows or "target" not in rows[0]:
        raise InputError(f"{f} has no 'target' field: build it with `erank train data` (labels: blend)")
    groups: Rows = defaultdict(list)
    for r in rows:
        groups[str(r["qid"])].append(r)
    pfile = (data if data.is_dir() else data.parent) / "params.json"
    params = json.loads(pfile.read_text(encoding="utf-8")) if pfile.is_file() else {}
    return dict(groups), params


def begin(cfg: Any) -> tuple[Rows, dict[str, Any], int | None]:
    """A stage's start: its output folder made, the thread count set, the training rows (grouped by
    query), the set's parameters and the truncation it was built with."""
    Path(cfg.output_dir).mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    groups, params = load_rows(Path(cfg.data))
    return groups, params, params.get("config", {}).get("truncate_length", 2048)


def tokenize_rows(
    m: PointwiseModel, groups: Rows, truncate: int | None, cutoff: int, template: str | None
) -> int:
    """Give every row its direct-mode prompt ids (``"ids"``); drop (and count) the rows over
    ``cutoff`` tokens. ``m.builder`` is left with the prompt builder, for prompts built later."""
    from erank.training.data import PromptBuilder

    builder = PromptBuilder(m.tok, "direct", truncate, template)
    m.builder = builder
    dropped = 0
    for rows in groups.values():
        keep = []
        for r in rows:
            ids = builder.prompt_ids(r["query"], r["doc"], r["instruction"])
            if len(ids) + 1 > cutoff:
                dropped += 1
                continue
            r["ids"] = ids
            keep.append(r)
        rows[:] = keep
    return dropped


def stratified(rows: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
    """``n`` documents of one query spread over its targets' range (every label band represented)."""
    if len(rows) <= n:
        return list(rows)
    bands: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        bands[int(r.get("grade", round(r["target"])))].append(r)
    for b in bands.values():
        rng.shuffle(b)
    out: list[dict[str, Any]] = []
    keys = sorted(bands)
    while len(out) < n:
        for k in keys:
            if bands[k] and len(out) < n:
                out.append(bands[k].pop())
    return out


def read_settings(folder: Path) -> dict[str, Any]:
    """The ``erank.json`` beside an adapter (empty when there is none)."""
    f = folder / "erank.json"
    return dict(json.loads(f.read_text(encoding="utf-8"))) if f.is_file() else {}


def _schedule(opt: Any, total: int, warmup: int, kind: str) -> Any:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if kind == "constant":
            return 1.0
        prog = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


class Stage:
    """One training stage of ``total`` steps over a model's trainable parameters.

    Builds the AdamW optimiser and its schedule, resumes from ``output_dir/checkpoint.pt`` (with
    ``resume``), and after each step (:meth:`end_step`) appends the metrics, logs progress every
    ``logging_steps``, and checkpoints every ``save_steps`` and at the end; :meth:`finish` writes
    the adapter, its tokenizer, ``erank.json`` and ``summary.json``.
    """

    def __init__(
        self,
        what: str,
        cfg: Any,
        m: PointwiseModel,
        total: int,
        *,
        span: int,
        warmup: int,
        schedule: str,
        resume: bool,
    ) -> None:
        self.what, self.cfg, self.m, self.total = what, cfg, m, total
        self.out = Path(cfg.output_dir)
        self.opt = torch.optim.AdamW(m.trainable(), lr=cfg.learning_rate, weight_decay=0.0)
        self.sched = _schedule(self.opt, span, warmup, schedule)
        self.ckpt = self.out / "checkpoint.pt"
        self.log = self.out / "metrics.jsonl"
        self.step = self._load() if resume else 0
        if self.step:
            logger.info("resuming %s at step %d of %d", what.upper(), self.step, total)
        self.start, self.every = self.step, max(1, cfg.logging_steps)
        self.t0 = time.time()

    def end_step(self, rec: dict[str, Any], note: str, stop_after: int | None) -> bool:
        """Count the step and record it (``rec`` gets ``"step"`` first); True to stop here."""
        self.step += 1
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps({"step": self.step, **rec}) + "\n")
        self._progress(note)
        if self.step % self.cfg.save_steps == 0 or self.step == self.total:
            self._save()
        return stop_after is not None and self.step >= stop_after

    def finish(self, template: str | None, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the adapter (with its tokenizer and ``erank.json``) and ``summary.json``."""
        folder = self.out / "adapter"
        self.m.save_adapter(folder)
        self.m.tok.save_pretrained(str(folder))
        # how ERank must prompt and rank with it: direct mode, the expected-score rule, the template
        settings: dict[str, Any] = {"mode": "direct", "rule": "expected"}
        if template:
            settings["template"] = template
        (folder / "erank.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")
        summary = {"trainer": "pointwise", "steps": self.step, **summary, "adapter": str(folder)}
        (self.out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
        return summary

    def _progress(self, note: str) -> None:
        step, total = self.step, self.total
        if step % self.every and step != total:
            return
        done = step - self.start
        el = time.time() - self.t0
        eta = el / done * (total - step) if done else 0.0
        logger.info(
            "%s step %d/%d  %s  elapsed %dm%02ds  ETA %dm%02ds",
            self.what,
            step,
            total,
            note,
            el // 60,
            el % 60,
            eta // 60,
            eta % 60,
        )

    def _save(self) -> None:
        tmp = self.ckpt.with_suffix(".tmp")
        state = {
            "step": self.step,
            "lora": self.m.lora_state(),
            "opt": self.opt.state_dict(),
            "sched": self.sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
        }
        torch.save(state, tmp)
        tmp.replace(self.ckpt)

    def _load(self) -> int:
        """Restore what :meth:`_save` wrote; the step to continue from (0 without a checkpoint)."""
        if not self.ckpt.is_file():
            return 0
        state = torch.load(self.ckpt, weights_only=False)
        self.m.load_lora_state(state["lora"])
        self.opt.load_state_dict(state["opt"])
        self.sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["torch_rng"])
        return int(state["step"])
