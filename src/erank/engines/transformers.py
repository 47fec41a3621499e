"""The transformers engine: any causal LM that ``AutoModelForCausalLM`` loads.

On CPU it runs in float32; on CUDA in bfloat16 with SDPA attention. Requests are sorted by length
and packed into batches by a budget of tokens (padding included), left-padded so that the
positions whose logits are read line up at the end of every row. Only those positions' logits
are computed (``logits_to_keep``); the full vocabulary is never materialised at every position.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from erank.engines.base import (
    Engine,
    GenerateRequest,
    GenerateResult,
    LogprobRequest,
    LogprobResult,
)
from erank.errors import ModelLoadError
from erank.models import ModelSpec, ensure_converted_gguf, resolve_model

__all__ = ["TransformersEngine", "HFTokenizer"]

logger = logging.getLogger(__name__)


class HFTokenizer:
    """A transformers tokenizer behind erank's :class:`~erank.engines.base.Tokenizer` protocol."""

    def __init__(self, tokenizer: Any) -> None:
        self.hf = tokenizer

    def encode(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def encode_prompt(self, text: str) -> list[int]:
        return list(self.hf(text, add_special_tokens=False)["input_ids"])

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.hf.decode(list(ids), skip_special_tokens=True))

    def chat_prompt(self, user: str) -> str:
        if getattr(self.hf, "chat_template", None):
            return str(
                self.hf.apply_chat_template(
                    [{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True
                )
            )
        logger.warning("the tokenizer has no chat template; using the prompt as plain text")
        return user


def _auto_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_from_spec(spec: ModelSpec, dtype: torch.dtype, attn: str | None, trust_remote_code: bool) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = spec.location
    if spec.kind == "gguf":
        location = str(ensure_converted_gguf(spec.location))
    kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
    if attn:
        kwargs["attn_implementation"] = attn
    try:
        tok = AutoTokenizer.from_pretrained(location, trust_remote_code=trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(location, **kwargs)
    except (OSError, ValueError) as exc:
        if spec.kind == "hub":
            offline = os.environ.get("HF_HUB_OFFLINE") == "1"
            raise ModelLoadError(
                f"could not load the model {spec.location!r} from the model hub: the name is unknown or the "
                f"hub is unreachable{' (HF_HUB_OFFLINE=1 is set)' if offline else ''}. Pass a local model "
                f"folder or a .gguf file instead, or download the model first. Cause: {type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}"
            ) from exc
        raise ModelLoadError(f"could not load the model at {location}: {exc}") from exc
    return model, tok


class TransformersEngine(Engine):
    """Runs a causal LM with transformers.

    Args:
        model: a hub id, a local model folder, a ``.gguf`` file, or ``None`` for the embedded
            default model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: default bfloat16 on CUDA, float32 on CPU.
        batch_tokens: the token budget of one batch (padding included).
        max_batch_size: an upper bound on rows per batch.
        model_obj, tokenizer_obj: an already loaded model and tokenizer (tests, training).
    """

    name = "transformers"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = None,
        dtype: torch.dtype | str | None = None,
        batch_tokens: int | None = None,
        max_batch_size: int = 64,
        attn_implementation: str | None = None,
        trust_remote_code: bool = False,
        model_obj: Any = None,
        tokenizer_obj: Any = None,
    ) -> None:
        super().__init__()
        self.device = _auto_device(device)
        on_cuda = self.device.type == "cuda"
        if isinstance(dtype, str):
            dtype = getattr(torch, dtype)
        self.dtype: torch.dtype = dtype or (torch.bfloat16 if on_cuda else torch.float32)
        attn = attn_implementation or "sdpa"
        if model_obj is not None:
            if tokenizer_obj is None:
                raise ModelLoadError("model_obj needs tokenizer_obj as well")
            self.model, tok = model_obj, tokenizer_obj
            self.model_name = str(getattr(getattr(model_obj, "config", None), "_name_or_path", "") or "custom")
        else:
            spec = resolve_model(model)
            self.model, tok = _load_from_spec(spec, self.dtype, attn, trust_remote_code)
            self.model_name = spec.name
            self.model.to(self.device)
        self.model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.hf_tokenizer = tok
        self.tokenizer = HFTokenizer(tok)
        self.pad_id = int(tok.pad_token_id)
        self.batch_tokens = int(batch_tokens or (65536 if on_cuda else 8192))
        self.max_batch_size = int(max_batch_size)

    # ------------------------------------------------------------------ batching
    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices grouped into batches by token budget, shortest first (stable for ties)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batch: list[int] = []
        longest = 0
        for i in order:
            new_longest = max(longest, lengths[i])
            if batch and (new_longest * (len(batch) + 1) > self.batch_tokens or len(batch) >= self.max_batch_size):
                yield batch
                batch, new_longest = [], lengths[i]
            batch.append(i)
            longest = new_longest
        if batch:
            yield batch

    def _pad_left(self, seqs: Sequence[Sequence[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            if s:
                ids[r, width - len(s) :] = torch.tensor(list(s), dtype=torch.long)
                mask[r, width - len(s) :] = 1
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        return ids.to(self.device), mask.to(self.device), pos.to(self.device)

    def _run_with_oom_retry(self, items: list[int], fn: Any) -> None:
        """Run ``fn(batch)``; on a CUDA out-of-memory error halve the batch and retry."""
        try:
            fn(items)
        except torch.cuda.OutOfMemoryError:
            if len(items) == 1:
                raise
            torch.cuda.empty_cache()
            half = len(items) // 2
            logger.warning("CUDA out of memory with %d rows; retrying as %d + %d", len(items), half, len(items) - half)
            self._run_with_oom_retry(items[:half], fn)
            self._run_with_oom_retry(items[half:], fn)

    # ------------------------------------------------------------------ logprobs
    @torch.inference_mode()
    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        results: list[LogprobResult | None] = [None] * len(requests)
        seqs = [list(r.prompt_ids) + list(r.extension) for r in requests]

        def run(batch: list[int]) -> None:
            ids, mask, pos = self._pad_left([seqs[i] for i in batch])
            keep = max(len(requests[i].extension) for i in batch) + 1
            out = self.model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, use_cache=False)
            logp = torch.log_softmax(out.logits.float(), dim=-1)
            self.stats.calls += 1
            for row, i in enumerate(batch):
                req = requests[i]
                n = len(req.extension) + 1
                tok = torch.tensor(req.token_ids, dtype=torch.long, device=logp.device)
                sel = logp[row, keep - n :, :].index_select(-1, tok).cpu().tolist()
                results[i] = LogprobResult(steps=[dict(zip(req.token_ids, step, strict=True)) for step in sel])
                self.stats.prompt_tokens += len(seqs[i])

        for batch in self._batches([len(s) for s in seqs]):
            self._run_with_oom_retry(batch, run)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ generate
    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        from transformers import LogitsProcessor, LogitsProcessorList

        results: list[GenerateResult | None] = [None] * len(requests)
        eos_ids = set(_as_list(self.hf_tokenizer.eos_token_id)) | set(
            _as_list(getattr(self.model.generation_config, "eos_token_id", None))
        )

        class _Record(LogitsProcessor):
            def __init__(self, token_ids: list[int]) -> None:
                self.ids = token_ids
                self.steps: list[torch.Tensor] = []

            def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
                if self.ids:
                    lp = torch.log_softmax(scores.float(), dim=-1)
                    self.steps.append(lp[:, self.ids].cpu())
                return scores

        def run(batch: list[int]) -> None:
            reqs = [requests[i] for i in batch]
            ids, mask, _ = self._pad_left([r.prompt_ids for r in reqs])
            token_ids = sorted({t for r in reqs for t in r.logprob_token_ids})
            rec = _Record(token_ids)
            stops = sorted({s for r in reqs for s in r.stop})
            out = self.model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=max(r.max_new_tokens for r in reqs),
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                num_beams=1,
                pad_token_id=self.pad_id,
                logits_processor=LogitsProcessorList([rec]),
                stop_strings=stops or None,
                tokenizer=self.hf_tokenizer if stops else None,
            )
            self.stats.calls += 1
            new = out[:, ids.shape[1] :].cpu().tolist()
            for row, i in enumerate(batch):
                r = requests[i]
                gen = new[row][: r.max_new_tokens]
                finish = "length"
                cut = len(gen)
                for t, tid in enumerate(gen):
                    if tid in eos_ids:
                        cut, finish = t, "stop"
                        break
                gen = gen[:cut]
                text = self.tokenizer.decode(gen)
                for s in r.stop:
                    at = text.find(s)
                    if at >= 0:
                        text = text[: at + len(s)]
                        finish = "stop"
                        # trim tokens generated after the stop string (other rows kept the batch going)
                        gen = _trim_tokens_to_text(self.tokenizer.decode, gen, len(text))
                        break
                steps: list[dict[int, float]] = []
                if r.logprob_token_ids:
                    want = [token_ids.index(t) for t in r.logprob_token_ids]
                    for t in range(min(len(gen), len(rec.steps))):
                        vals = rec.steps[t][row]
                        steps.append({tid: float(vals[j]) for tid, j in zip(r.logprob_token_ids, want, strict=True)})
                results[i] = GenerateResult(token_ids=gen, text=text, finish_reason=finish, step_logprobs=steps)  # type: ignore[arg-type]
                self.stats.prompt_tokens += len(r.prompt_ids)
                self.stats.generated_tokens += len(gen)

        lengths = [len(r.prompt_ids) + r.max_new_tokens for r in requests]
        for batch in self._batches(lengths):
            self._run_with_oom_retry(batch, run)
        return [r for r in results if r is not None]


def _as_list(x: Any) -> list[int]:
    if x is None:
        return []
    if isinstance(x, int):
        return [x]
    return [int(v) for v in x]


def _trim_tokens_to_text(decode: Any, ids: list[int], n_chars: int) -> list[int]:
    """The shortest prefix of ``ids`` whose decoded text is at least ``n_chars`` long."""
    lo, hi = 0, len(ids)
    while lo < hi:
        mid = (lo + hi) // 2
        if len(decode(ids[:mid])) >= n_chars:
            hi = mid
        else:
            lo = mid + 1
    return ids[:lo]
