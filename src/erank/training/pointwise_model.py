"""The model of the pointwise trainer (:mod:`erank.training.pointwise`): base model + LoRA adapter,
the score tokens, and the batched direct forward that reads the 12 outcomes after ``<answer>``.

The forward runs a query's common prompt prefix once (its keys and values repeated into every
micro-batch, :meth:`PointwiseModel._forward_shared`), or, where only the top layers carry the
adapter, caches the frozen lower layers' output per prompt (:meth:`PointwiseModel.cache_lower`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from erank.errors import InputError, require
from erank.scoring import ScoreTokens

__all__ = ["PointwiseModel", "score_logprobs_batch"]


def score_logprobs_batch(st: ScoreTokens, logits: torch.Tensor) -> torch.Tensor:
    """Log P of the 12 outcomes after ``<answer>`` (scores 0..max, then "anything else") from the
    logits ``[B, 2, V]`` at the answer position and after the branch token (``[B, 1, V]`` when
    every score is one token): :func:`erank.training.policy.score_logprobs` on their log-softmax.
    """
    from erank.training.policy import score_logprobs

    lp1 = torch.log_softmax(logits[:, 0, :].float(), dim=-1)
    lp2 = torch.log_softmax(logits[:, -1, :].float(), dim=-1) if logits.shape[1] > 1 else None
    return score_logprobs(st, lp1, lp2)


class PointwiseModel:
    """Base model + LoRA adapter, the score tokens, and the batched direct forward."""

    def __init__(self, model: str, lora: Any, adapter: str | Path | None, bf16: bool | None) -> None:
        require("peft", "train", "LoRA training")
        from peft import LoraConfig, PeftModel, get_peft_model

        from erank.engines import HFTokenizer, cpu_has_bf16
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
        from erank.training.policy import left_pad

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
