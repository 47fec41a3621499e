"""Fast direct-style training on CPU: SFT on 0..10 targets, then GRPO with r_RR (spec 3.1, 3.2).

Selected with ``trainer: pointwise`` in an SFT or RL config. It trains exactly what direct mode
scores at inference: the ERank prompt, the empty think block and ``<answer>``, and the model's
distribution over the score strings "0".."10" at that position ("10" = "1" then "0", read from
the same pass by appending "1", as :class:`~erank.methods.erank.ERankMethod` does).

What makes it fast on a CPU:

* the logits are computed at two positions only (``logits_to_keep=2``), never over the
  49k-token vocabulary at every position;
* matmuls run in bfloat16 under autocast where the CPU has bf16 units (avx512_bf16 / AMX),
  norms and the loss in float32;
* one step is one query's documents (``docs_per_step``), left-padded, split into micro-batches by
  length.

**SFT loss** per query: cross-entropy of the two-point target (mass on the two integers nearest
the real target, so its expectation is the target) against the model's raw score probabilities,
plus ``listwise_weight`` x KL(softmax(targets / T) || softmax(expected scores / T)) over the
query's documents: the pointwise integer targets of the paper plus a listwise signal that ranks.

**GRPO** per step: one query's ``docs_per_query`` documents (at least one positive, or the query
is refused), ``rollouts`` scores sampled per document from the policy's distribution over the 11
scores plus "anything else" (unparsable), the listwise reward over all N x G samples, advantages
normalised over each document's G samples, then ``mini_batches`` optimisation steps over the
documents, so every mini-batch after the first sees a policy that has moved and the PPO clip acts.
The KL to the reference (the SFT model) is the exact KL over the 12 outcomes.

Both stages checkpoint (adapter, optimiser, scheduler, RNG, step) atomically every
``save_steps`` and resume after a kill.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError, require
from erank.scoring import ScoreTokens
from erank.training.config import RLConfig, SFTConfig

__all__ = [
    "score_logprobs_batch",
    "two_point_target",
    "sft_loss",
    "grpo_loss",
    "run_pointwise_sft",
    "run_pointwise_rl",
]

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------- pure pieces
def two_point_target(target: float, max_score: int = 10) -> list[float]:
    """A distribution over 0..max with mass on the two integers nearest ``target``.

    >>> two_point_target(7.25)
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.75, 0.25, 0.0, 0.0]
    """
    t = min(max(float(target), 0.0), float(max_score))
    lo = int(math.floor(t))
    out = [0.0] * (max_score + 1)
    if lo >= max_score:
        out[max_score] = 1.0
        return out
    frac = t - lo
    out[lo] = 1.0 - frac
    out[lo + 1] += frac
    return out


def score_logprobs_batch(st: ScoreTokens, logits: torch.Tensor) -> torch.Tensor:
    """Log P of the 12 outcomes after ``<answer>`` (scores 0..max, then "anything else") from the
    logits ``[B, 2, V]`` at the answer position and after the branch token (``[B, 1, V]`` when
    every score is one token): :func:`erank.training.rl.score_logprobs` on their log-softmax.
    """
    from erank.training.rl import score_logprobs

    lp1 = torch.log_softmax(logits[:, 0, :].float(), dim=-1)
    lp2 = torch.log_softmax(logits[:, -1, :].float(), dim=-1) if logits.shape[1] > 1 else None
    return score_logprobs(st, lp1, lp2)


def sft_loss(
    raw_logp: torch.Tensor,
    targets: torch.Tensor,
    listwise_weight: float = 1.0,
    temperature: float = 1.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SFT loss of one query's documents (module docstring). ``raw_logp``: ``[B, max + 1]``
    raw score log-probabilities (a 12th "anything else" column is ignored when present: its mass
    is what the cross-entropy pushes onto the scores); ``targets``: ``[B]`` in 0..max."""
    if raw_logp.shape[-1] == 12:
        raw_logp = raw_logp[:, :-1]
    max_score = raw_logp.shape[-1] - 1
    dist = torch.tensor([two_point_target(float(t), max_score) for t in targets], dtype=raw_logp.dtype)
    ce = -(dist * raw_logp).sum(-1).mean()
    p = torch.softmax(raw_logp, dim=-1)
    scores = torch.arange(max_score + 1, dtype=raw_logp.dtype)
    expected = (p * scores).sum(-1)
    lw = torch.zeros((), dtype=raw_logp.dtype)
    if listwise_weight > 0 and len(targets) > 1:
        teacher = torch.softmax(targets.to(raw_logp.dtype) / temperature, dim=0)
        student = torch.log_softmax(expected / temperature, dim=0)
        lw = (teacher * (torch.log(teacher + 1e-12) - student)).sum()
    loss = ce + listwise_weight * lw
    return loss, {"ce": float(ce.detach()), "listwise": float(lw.detach())}


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


# ---------------------------------------------------------------------------- model plumbing
class _Model:
    """Base model + LoRA adapter, the score tokens, and the batched direct forward."""

    def __init__(self, model: str, lora: Any, adapter: str | Path | None, bf16: bool | None) -> None:
        require("peft", "train", "LoRA training")
        from peft import LoraConfig, PeftModel, get_peft_model

        from erank.engines.transformers import HFTokenizer, cpu_has_bf16
        from erank.training.sft import load_causal_lm

        base, tok, self.location = load_causal_lm(model, bf16=False)
        self.tok = tok
        if adapter is not None:
            self.model = PeftModel.from_pretrained(base, str(adapter), is_trainable=True)
        else:
            if lora is None:
                raise InputError("trainer: pointwise trains a LoRA adapter; give a 'lora' section")
            n_layers = int(base.config.num_hidden_layers)
            top = None
            if lora.top_layers is not None:
                if lora.top_layers > n_layers:
                    raise InputError(f"lora.top_layers {lora.top_layers} > the model's {n_layers} layers")
                top = list(range(n_layers - lora.top_layers, n_layers))
            targets = lora.target_modules
            if top is not None and isinstance(targets, str):
                if targets != "all-linear":
                    raise InputError(
                        "lora.top_layers needs target_modules as a list of names or 'all-linear'"
                    )
                # PEFT takes layers_to_transform only with explicit names: every linear of a block
                block = base.model.layers[0]
                targets = sorted(
                    {n.rsplit(".", 1)[-1] for n, x in block.named_modules() if isinstance(x, torch.nn.Linear)}
                )
            cfg = LoraConfig(
                r=lora.r,
                lora_alpha=lora.alpha,
                lora_dropout=lora.dropout,
                target_modules=targets,
                layers_to_transform=top,
                task_type="CAUSAL_LM",
            )
            self.model = get_peft_model(base, cfg)
        layers = getattr(self.model.peft_config["default"], "layers_to_transform", None)
        # Layers below the lowest adapted one are the base model's: their output is cached per pair.
        self.split = min(layers) if layers else 0
        self.autocast = cpu_has_bf16() if bf16 is None else bool(bf16)
        self.st = ScoreTokens.from_tokenizer(HFTokenizer(tok).encode, 10)
        self.ext = [self.st.branch] if self.st.branch is not None else []
        self.pad = int(tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        self.builder: Any = None
        # the rows of one step share their prompt's start: run it once (off: the plain batched pass)
        self.share_prefix = True
        self.min_prefix_tokens = 16

    def trainable(self) -> list[torch.nn.Parameter]:
        return [p for p in self.model.parameters() if p.requires_grad]

    def _left_pad(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from erank.training.rl import left_pad

        return left_pad(seqs, self.pad)

    def _decoder(self) -> Any:
        """The decoder stack (``.layers``) under the PEFT and causal-LM wrappers."""
        return self.model.get_base_model().model

    def cache_lower(self, rows: list[dict[str, Any]], micro: int) -> None:
        """Store in each row (``"h"``) the output of the frozen layers below :attr:`split` for its
        prompt (float32, unpadded): computed once, reused by every step."""
        dec = self._decoder()
        layers = dec.layers
        got: dict[str, torch.Tensor] = {}

        def hook(_mod: Any, _inp: Any, out: Any) -> None:
            got["h"] = out[0] if isinstance(out, tuple) else out

        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
        dec.layers = torch.nn.ModuleList(list(layers)[: self.split])
        handle = dec.layers[-1].register_forward_hook(hook)
        try:
            with torch.no_grad():
                for k in range(0, len(order), micro):
                    idx = order[k : k + micro]
                    seqs = [rows[i]["ids"] + self.ext for i in idx]
                    ids, mask, pos = self._left_pad(seqs)
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                        dec(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False)
                    h = got["h"].float()
                    for r, i in enumerate(idx):
                        rows[i]["h"] = h[r, h.shape[1] - len(seqs[r]) :].clone()
        finally:
            handle.remove()
            dec.layers = layers

    def forward(self, rows: list[dict[str, Any]], micro: int) -> torch.Tensor:
        """Log P of the 12 outcomes ``[len(rows), 12]`` (scores 0..10, then "anything else") for
        the rows' prompts (``"ids"``), from the cached lower-layer output (``"h"``) where the
        model has a frozen lower part. Grad enabled by the caller."""
        if not self.split and self.share_prefix:
            shared = self._forward_shared(rows, micro)
            if shared is not None:
                return shared
        if self.split:
            missing = [r for r in rows if "h" not in r]
            if missing:  # cached on first use: later steps that see the row again skip the lower layers
                self.cache_lower(missing, micro)
        order = sorted(range(len(rows)), key=lambda i: len(rows[i]["ids"]))
        parts: dict[int, torch.Tensor] = {}
        keep = len(self.ext) + 1
        dec = self._decoder()
        layers = dec.layers
        if self.split:
            dec.layers = torch.nn.ModuleList(list(layers)[self.split :])
        try:
            for k in range(0, len(order), micro):
                idx = order[k : k + micro]
                seqs = [rows[i]["ids"] + self.ext for i in idx]
                ids, mask, pos = self._left_pad(seqs)
                kw: dict[str, Any] = {"input_ids": ids}
                if self.split:
                    hs = [rows[i]["h"] for i in idx]
                    emb = torch.zeros((len(hs), ids.shape[1], hs[0].shape[-1]), dtype=hs[0].dtype)
                    for r, h in enumerate(hs):
                        emb[r, ids.shape[1] - h.shape[0] :] = h
                    kw = {"inputs_embeds": emb}
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                    out = self.model(
                        **kw, attention_mask=mask, position_ids=pos, logits_to_keep=keep, use_cache=False
                    )
                lp = score_logprobs_batch(self.st, out.logits)
                for r, i in enumerate(idx):
                    parts[i] = lp[r]
        finally:
            dec.layers = layers
        return torch.stack([parts[i] for i in range(len(rows))])

    def _forward_shared(self, rows: list[dict[str, Any]], micro: int) -> torch.Tensor | None:
        """:meth:`forward` with the rows' common prefix (template header, instruction, query: one
        query's documents) run once: its keys and values, with their graph, are repeated into
        every micro-batch of suffixes, so the gradient through the prefix is summed over the rows
        as in the plain pass. ``None`` when the rows share fewer than ``min_prefix_tokens``."""
        from transformers import DynamicCache

        keep = len(self.ext) + 1
        seqs = [r["ids"] + self.ext for r in rows]
        p = min(len(s) for s in seqs) - keep
        first = seqs[0]
        for s in seqs[1:]:
            n = 0
            while n < p and s[n] == first[n]:
                n += 1
            p = n
        if len(rows) < 2 or p < self.min_prefix_tokens:
            return None
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
            pre = self.model(input_ids=torch.tensor([first[:p]]), use_cache=True, logits_to_keep=1)
        kv = [(layer.keys, layer.values) for layer in pre.past_key_values.layers]
        order = sorted(range(len(rows)), key=lambda i: len(seqs[i]))
        parts: dict[int, torch.Tensor] = {}
        for k in range(0, len(order), micro):
            idx = order[k : k + micro]
            ids, mask, pos = self._left_pad([seqs[i][p:] for i in idx])
            full_mask = torch.cat([torch.ones((len(idx), p), dtype=mask.dtype), mask], 1)
            n = len(idx)
            cache = DynamicCache([(kk.expand(n, -1, -1, -1), vv.expand(n, -1, -1, -1)) for kk, vv in kv])
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):
                out = self.model(
                    input_ids=ids,
                    attention_mask=full_mask,
                    position_ids=pos + p,
                    past_key_values=cache,
                    use_cache=True,
                    logits_to_keep=keep,
                )
            lp = score_logprobs_batch(self.st, out.logits)
            for r, i in enumerate(idx):
                parts[i] = lp[r]
        return torch.stack([parts[i] for i in range(len(rows))])

    def lora_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach().clone() for n, p in self.model.named_parameters() if p.requires_grad}

    def load_lora_state(self, state: dict[str, torch.Tensor]) -> None:
        with torch.no_grad():
            for n, p in self.model.named_parameters():
                if n in state:
                    p.copy_(state[n])

    def save_adapter(self, folder: Path) -> None:
        tmp = folder.with_name(folder.name + ".tmp")
        self.model.save_pretrained(str(tmp))
        if folder.exists():
            import shutil

            shutil.rmtree(folder)
        tmp.rename(folder)


def _load_rows(data: Path) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    from erank.training.data import read_jsonl

    f = data / "train.jsonl" if data.is_dir() else data
    rows = read_jsonl(f)
    if not rows or "target" not in rows[0]:
        raise InputError(f"{f} has no 'target' field: build it with `erank train data` (labels: blend)")
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[str(r["qid"])].append(r)
    pfile = (data if data.is_dir() else data.parent) / "params.json"
    params = json.loads(pfile.read_text(encoding="utf-8")) if pfile.is_file() else {}
    return dict(groups), params


def _tokenize(
    m: _Model,
    groups: dict[str, list[dict[str, Any]]],
    truncate: int | None,
    cutoff: int,
    template: str | None,
) -> int:
    from erank.training.data import PromptBuilder

    builder = PromptBuilder(m.tok, "direct", truncate, template)
    m.builder = builder
    dropped = 0
    for rows in groups.values():
        keep = []
        for r in rows:
            ids = builder.engine.tokenizer.encode_prompt(
                builder.prompt(r["query"], r["doc"], r["instruction"])
            )
            if len(ids) + 1 > cutoff:
                dropped += 1
                continue
            r["ids"] = ids
            keep.append(r)
        rows[:] = keep
    return dropped


def _stratified(rows: list[dict[str, Any]], n: int, rng: random.Random) -> list[dict[str, Any]]:
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


class _Progress:
    """One log line every ``every`` steps: step, rate, ETA."""

    def __init__(self, total: int, start: int, what: str, every: int) -> None:
        self.total, self.start, self.what, self.every = total, start, what, max(1, every)
        self.t0 = time.time()

    def update(self, step: int, extra: str) -> None:
        if step % self.every and step != self.total:
            return
        done = step - self.start
        el = time.time() - self.t0
        eta = el / done * (self.total - step) if done else 0.0
        logger.info(
            "%s step %d/%d  %s  elapsed %dm%02ds  ETA %dm%02ds",
            self.what,
            step,
            self.total,
            extra,
            el // 60,
            el % 60,
            eta // 60,
            eta % 60,
        )


def _save_ckpt(path: Path, m: _Model, opt: Any, sched: Any, step: int, extra: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(
        {
            "step": step,
            "lora": m.lora_state(),
            "opt": opt.state_dict(),
            "sched": sched.state_dict(),
            "torch_rng": torch.get_rng_state(),
            **extra,
        },
        tmp,
    )
    tmp.replace(path)


def _load_ckpt(path: Path, m: _Model, opt: Any, sched: Any) -> int:
    """Restore what :func:`_save_ckpt` wrote; the step to continue from (0 without a checkpoint)."""
    if not path.is_file():
        return 0
    state = torch.load(path, weights_only=False)
    m.load_lora_state(state["lora"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    torch.set_rng_state(state["torch_rng"])
    return int(state["step"])


def _schedule(opt: Any, total: int, warmup: int, kind: str) -> Any:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        if kind == "constant":
            return 1.0
        prog = (step - warmup) / max(1, total - warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))

    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def _append(log: Path, rec: dict[str, Any]) -> None:
    with log.open("a", encoding="utf-8") as fh:
        fh.write(json.dumps(rec) + "\n")


# ---------------------------------------------------------------------------- SFT
def run_pointwise_sft(
    cfg: SFTConfig, *, resume: bool = True, stop_after: int | None = None
) -> dict[str, Any]:
    """Direct-style SFT (module docstring). Writes ``adapter/``, ``metrics.jsonl``, ``summary.json``."""
    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    groups, params = _load_rows(Path(cfg.data))
    trunc = params.get("config", {}).get("truncate_length", 2048)
    torch.manual_seed(cfg.seed)
    m = _Model(cfg.model, cfg.lora, None, cfg.bf16)
    dropped = _tokenize(m, groups, trunc, cfg.cutoff, cfg.template)
    qids = sorted(q for q, rows in groups.items() if len(rows) >= 2)
    if not qids:
        raise InputError("no query has two or more training documents")
    pairs = sum(len(groups[q]) for q in qids)
    easy_pool: dict[str, list[dict[str, Any]]] = {}
    if m.split and len(qids) > 1:
        easy_pool = _fixed_easy_pool(groups, qids, cfg.easy_negatives * 3, m, random.Random(cfg.seed))
    weights = [cfg.source_weights.get(q.split("/", 1)[0], 1.0) for q in qids]
    total = cfg.max_steps if cfg.max_steps > 0 else max(1, int(cfg.epochs * pairs / cfg.docs_per_step))
    opt = torch.optim.AdamW(m.trainable(), lr=cfg.learning_rate, weight_decay=0.0)
    span = cfg.schedule_steps or total
    sched = _schedule(opt, span, int(cfg.warmup_ratio * span), cfg.lr_scheduler_type)
    ckpt = out / "checkpoint.pt"
    step = _load_ckpt(ckpt, m, opt, sched) if resume else 0
    if step:
        logger.info("resuming SFT at step %d of %d", step, total)
    log = out / "metrics.jsonl"
    prog = _Progress(total, step, "sft", cfg.logging_steps)
    m.model.train()
    window: list[float] = []
    while step < total:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        q = rng.choices(qids, weights)[0] if cfg.sampling == "random" else qids[step % len(qids)]
        n_easy = min(cfg.easy_negatives, cfg.docs_per_step - 2) if len(qids) > 1 else 0
        if easy_pool:
            easy = rng.sample(easy_pool[q], min(n_easy, len(easy_pool[q])))
        else:
            easy = _easy_negatives(groups, qids, q, n_easy, m, rng)
        batch = _stratified(groups[q], cfg.docs_per_step - n_easy, rng) + easy
        raw = m.forward(batch, cfg.per_device_batch_size)
        targets = torch.tensor([float(r["target"]) for r in batch])
        loss, parts = sft_loss(raw, targets, cfg.listwise_weight, cfg.listwise_temperature)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(m.trainable(), 1.0)
        opt.step()
        sched.step()
        step += 1
        window.append(float(loss.detach()))
        rec = {"step": step, "loss": round(window[-1], 4), **{k: round(v, 4) for k, v in parts.items()}}
        rec["lr"] = sched.get_last_lr()[0]
        _append(log, rec)
        prog.update(step, f"loss {sum(window[-20:]) / len(window[-20:]):.3f}")
        if step % cfg.save_steps == 0 or step == total:
            _save_ckpt(ckpt, m, opt, sched, step, {})
        if stop_after is not None and step >= stop_after:
            return {"steps": step, "stopped": True}
    m.save_adapter(out / "adapter")
    m.tok.save_pretrained(str(out / "adapter"))
    _write_settings(out / "adapter", cfg.template)
    summary = {
        "trainer": "pointwise",
        "steps": step,
        "queries": len(qids),
        "pairs": pairs,
        "dropped_long": dropped,
        "seconds": round(time.time() - t0, 1),
        "adapter": str(out / "adapter"),
        "label_distribution": params.get("counts", {}).get("label_distribution"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


# ---------------------------------------------------------------------------- GRPO
def run_pointwise_rl(cfg: RLConfig, *, resume: bool = True, stop_after: int | None = None) -> dict[str, Any]:
    """Direct-style GRPO with mini-batches (module docstring). ``cfg.model`` is the SFT adapter."""
    from erank.training.rewards import compute_rewards, group_advantages

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    groups, params = _load_rows(Path(cfg.data))
    trunc = params.get("config", {}).get("truncate_length", 2048)
    adapter = Path(cfg.model)
    if not (adapter / "adapter_config.json").is_file():
        raise InputError(f"{adapter} is not a LoRA adapter folder (the SFT stage's output_dir/adapter)")
    base = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8")).get(
        "base_model_name_or_path"
    )
    torch.manual_seed(cfg.seed)
    m = _Model(cfg.base_model or base, None, adapter, cfg.bf16)
    ref_state = m.lora_state()
    template = _read_settings(adapter).get("template")
    _tokenize(m, groups, trunc, cfg.cutoff, template)
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
    opt = torch.optim.AdamW(m.trainable(), lr=cfg.learning_rate, weight_decay=0.0)
    sched = _schedule(opt, total, 0, "constant")
    ckpt = out / "checkpoint.pt"
    step = _load_ckpt(ckpt, m, opt, sched) if resume else 0
    if step:
        logger.info("resuming RL at step %d of %d", step, total)
    log = out / "metrics.jsonl"
    prog = _Progress(total, step, "rl", cfg.logging_steps)
    rparams = cfg.reward.model_dump()
    G = cfg.rollouts
    while step < total:
        rng = random.Random(cfg.seed * 1_000_003 + step)
        if cfg.source_weights:
            q = rng.choices(usable, [cfg.source_weights.get(u.split("/", 1)[0], 1.0) for u in usable])[0]
        else:
            q = usable[step % len(usable)]
        batch = _pick_group(groups[q], cfg.docs_per_query, cfg.positive_target, rng)
        prompts = batch
        gen = torch.Generator().manual_seed(cfg.seed * 7919 + step)
        m.model.eval()
        with torch.no_grad():
            old = m.forward(prompts, cfg.micro_batch) / cfg.temperature
            old = torch.log_softmax(old, dim=-1)
            samples = torch.multinomial(torch.exp(old), G, replacement=True, generator=gen)
            cur = m.lora_state()
            m.load_lora_state(ref_state)
            ref = m.forward(prompts, cfg.micro_batch)
            m.load_lora_state(cur)
        n_scores = ref.shape[1] - 1
        ref_scores = [float(int(torch.argmax(ref[i, :n_scores]))) for i in range(len(batch))]
        scores = [[None if int(s) == n_scores else int(s) for s in row] for row in samples.tolist()]
        positive = [r["target"] >= cfg.positive_target for r in batch]
        rewards = compute_rewards(
            cfg.reward.kind, scores, positive, [r["target"] for r in batch], ref_scores, rparams
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
                new = m.forward([prompts[i] for i in idx], cfg.micro_batch) / cfg.temperature
                new = torch.log_softmax(new, dim=-1)
                loss, parts = grpo_loss(
                    new, old[idx], ref[idx], samples[idx], adv[idx], cfg.clip, cfg.kl_coef
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(m.trainable(), cfg.max_grad_norm)
                opt.step()
                stats.update(parts)
                n_mb += 1
        sched.step()
        step += 1
        mean_r = sum(sum(r) for r in rewards) / (len(rewards) * G)
        rec = {"step": step, "reward": round(mean_r, 4), **{k: round(v / n_mb, 5) for k, v in stats.items()}}
        _append(log, rec)
        prog.update(step, f"reward {mean_r:.3f} clipped {stats['clipped'] / n_mb:.2f}")
        if step % cfg.save_steps == 0 or step == total:
            _save_ckpt(ckpt, m, opt, sched, step, {})
        if stop_after is not None and step >= stop_after:
            return {"steps": step, "stopped": True}
    m.save_adapter(out / "adapter")
    m.tok.save_pretrained(str(out / "adapter"))
    _write_settings(out / "adapter", template)
    summary = {
        "trainer": "pointwise",
        "steps": step,
        "queries": len(usable),
        "seconds": round(time.time() - t0, 1),
        "adapter": str(out / "adapter"),
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


def _fixed_easy_pool(
    groups: dict[str, list[dict[str, Any]]],
    qids: list[str],
    n: int,
    m: _Model,
    rng: random.Random,
) -> dict[str, list[dict[str, Any]]]:
    """A fixed set of ``n`` easy negatives per query (drawn once, so their lower layers can be
    cached): :func:`_easy_negatives` for every query."""
    return {q: _easy_negatives(groups, qids, q, n, m, rng) for q in qids}


def _easy_negatives(
    groups: dict[str, list[dict[str, Any]]],
    qids: list[str],
    q: str,
    n: int,
    m: _Model,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """``n`` documents of other queries as target-0 negatives for query ``q`` (spec 3.1's easy tier).

    The judged pools are all on the query's topic; these teach the coarse "is this about the
    query at all" signal that the fine distinctions build on. Their prompts are rebuilt with
    ``q``'s query text (the prompt of ``q``'s first row up to the document, re-tokenised).
    """
    if n <= 0:
        return []
    ref = groups[q][0]
    builder = m.builder
    out = []
    for _ in range(n):
        other = qids[rng.randrange(len(qids))]
        while other == q:
            other = qids[rng.randrange(len(qids))]
        doc = rng.choice(groups[other])
        ids = builder.engine.tokenizer.encode_prompt(
            builder.prompt(ref["query"], doc["doc"], ref["instruction"])
        )
        out.append({"ids": ids, "target": 0.0, "grade": -1})
    return out


def _write_settings(folder: Path, template: str | None) -> None:
    """``erank.json`` beside the adapter: how ERank must prompt and rank with it (direct mode,
    the expected-score rule, the template it was trained with)."""
    settings: dict[str, Any] = {"mode": "direct", "rule": "expected"}
    if template:
        settings["template"] = template
    (folder / "erank.json").write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")


def _read_settings(folder: Path) -> dict[str, Any]:
    f = folder / "erank.json"
    return dict(json.loads(f.read_text(encoding="utf-8"))) if f.is_file() else {}


def _pick_group(
    rows: list[dict[str, Any]], n: int, positive_target: float, rng: random.Random
) -> list[dict[str, Any]]:
    """``n`` documents of one query with at least one positive (whole-query groups only)."""
    group = _stratified(rows, n, rng)
    if not any(r["target"] >= positive_target for r in group):
        pos = [r for r in rows if r["target"] >= positive_target]
        if not pos:
            raise InputError("a GRPO group has no positive document: r_RR would reward every negative")
        group[-1] = rng.choice(pos)
    return group
