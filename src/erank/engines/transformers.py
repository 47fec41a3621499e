"""The transformers engine: any causal LM that ``AutoModelForCausalLM`` loads.

**Precision** (``dtype``, default ``"auto"``): on CUDA bfloat16; on a CPU with bfloat16 matrix
units (avx512_bf16 / AMX) bfloat16 as well, elsewhere on CPU float32. On CPU in bfloat16 the
layers' matrix products run on bf16 weights (rounded once, after the LoRA adapter of the embedded
model is merged in float32); the residual stream, norms, attention, the output head and the final
log-softmax over the vocabulary stay float32 (:func:`~erank.engines.precision.to_cpu_bf16`).
``dtype="float32"`` (or ``ERANK_DTYPE=float32``) keeps plain fp32. Attention is SDPA (flash attention 2 on CUDA when the
``flash_attn`` package is installed). Requests are sorted by length and packed into batches by a
budget of tokens (padding included), left-padded so that the positions whose logits are read line
up at the end of every row. Only those positions' logits are computed (``logits_to_keep``); the
full vocabulary is never materialised at every position. On CUDA an out-of-memory error halves
the batch and retries.

**Shared prefix.** All prompts of one query start with the same tokens (template header,
instruction, query). Requests are grouped by their longest common prefix; the key/value cache of
that prefix is computed once per group and copied into every batch, so only the suffixes (the
document and the tail) run through the model. The padding of a suffix batch sits between the
prefix and the suffix and is masked, with explicit position ids, so the scores equal the plain
path (fp32: within 1e-4, tested). ``generate`` continues from the shared cache the same way.

>>> from erank.engines.transformers import TransformersEngine     # doctest: +SKIP
>>> engine = TransformersEngine(None, batch_tokens=4096)            # the embedded default model  # doctest: +SKIP
"""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
from collections.abc import Iterator, Sequence
from typing import Any

import torch

from erank.engines import base
from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.engines.precision import cpu_has_bf16, resolve_dtype, to_cpu_bf16  # cpu_has_bf16: re-exported
from erank.engines.tokenizers import (  # re-exported: erank.engines.transformers.HFTokenizer
    HFTokenizer,
    token_id_list,
    trim_tokens_to_text,
)
from erank.errors import ModelLoadError
from erank.models import ModelSpec, base_folder, merge_lora, resolve_model

__all__ = ["TransformersEngine", "HFTokenizer", "cpu_has_bf16"]

logger = logging.getLogger(__name__)


def _auto_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _load_from_spec(
    spec: ModelSpec, dtype: torch.dtype, attn: str | None, trust_remote_code: bool
) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    location = base_folder(spec)
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
    if spec.kind in ("embedded", "adapter"):
        merge_lora(model, spec.location)
    return model, tok


class TransformersEngine(Engine):
    """Runs a causal LM with transformers.

    Args:
        model: a hub id, a local model folder, a ``.gguf`` file, or ``None`` for the embedded
            default model.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; default CUDA when available.
        dtype: ``"auto"`` (default), ``"float32"``, ``"bfloat16"``, ``"float16"`` or a
            ``torch.dtype`` (see :func:`erank.engines.precision.resolve_dtype`). ``"auto"``: bfloat16 on CUDA and on CPUs
            with bf16 units (avx512_bf16 / AMX), float32 on other CPUs; ``$ERANK_DTYPE`` sets it.
            On CPU in bfloat16 the loaded weights are converted once (:func:`~erank.engines.precision.to_cpu_bf16`); a
            float32 model passed as ``model_obj`` is not converted, it runs under bf16 autocast.
        batch_tokens: the token budget of one batch (padding included).
        max_batch_size: an upper bound on rows per batch.
        attn_implementation: default ``"sdpa"``; ``"flash_attention_2"`` on CUDA when ``flash_attn``
            is installed.
        share_prefix: compute the common prefix of a query's prompts once (default on).
        min_prefix_tokens: the shortest common prefix worth sharing.
        num_threads: CPU threads for torch (default: torch's own choice).
        cpu_bf16: the older spelling of ``dtype`` on CPU: ``False`` is ``"float32"``, ``True``
            ``"bfloat16"``.
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
        share_prefix: bool = True,
        min_prefix_tokens: int = 16,
        num_threads: int | None = None,
        cpu_bf16: bool | None = None,
        model_obj: Any = None,
        tokenizer_obj: Any = None,
    ) -> None:
        super().__init__()
        self.device = _auto_device(device)
        on_cuda = self.device.type == "cuda"
        on_cpu = self.device.type == "cpu"
        if cpu_bf16 is not None and dtype in (None, "auto") and on_cpu:
            dtype = torch.bfloat16 if cpu_bf16 else torch.float32
        #: the compute dtype (what the matmuls run in)
        self.dtype: torch.dtype = resolve_dtype(dtype, self.device)
        cpu_bf16_weights = on_cpu and self.dtype == torch.bfloat16
        #: bf16 autocast over a float32 model passed in (``model_obj``): it is never converted
        self.cpu_autocast = False
        if num_threads:
            torch.set_num_threads(int(num_threads))
        attn = attn_implementation or (
            "flash_attention_2" if on_cuda and importlib.util.find_spec("flash_attn") is not None else "sdpa"
        )
        self.attn_implementation = attn
        if model_obj is not None:
            if tokenizer_obj is None:
                raise ModelLoadError("model_obj needs tokenizer_obj as well")
            self.model, tok = model_obj, tokenizer_obj
            self.model_name = str(
                getattr(getattr(model_obj, "config", None), "_name_or_path", "") or "custom"
            )
            weights = next(iter(model_obj.parameters()), None)
            self.cpu_autocast = cpu_bf16_weights and weights is not None and weights.dtype == torch.float32
        else:
            spec = resolve_model(model)
            # on CPU the weights load (and a LoRA adapter merges) in float32, then convert once
            load_dtype = torch.float32 if cpu_bf16_weights else self.dtype
            self.model, tok = _load_from_spec(spec, load_dtype, attn, trust_remote_code)
            if cpu_bf16_weights:
                to_cpu_bf16(self.model)
            self.model_name = spec.name
            self.model.to(self.device)
        logger.debug("transformers engine: %s on %s", self.dtype, self.device)
        self.model.eval()
        if tok.pad_token_id is None:
            tok.pad_token = tok.eos_token
        self.hf_tokenizer = tok
        self.tokenizer = HFTokenizer(tok)
        self.pad_id = int(tok.pad_token_id)
        self.batch_tokens = int(batch_tokens or (65536 if on_cuda else 8192))
        self.max_batch_size = int(max_batch_size)
        # Padding in the middle of a row (between the shared prefix and a suffix) is exact with the
        # eager and SDPA kernels; flash attention's unpadding is not tested here, so it runs plain.
        self.share_prefix = bool(share_prefix) and attn != "flash_attention_2"
        self.min_prefix_tokens = max(1, int(min_prefix_tokens))

    def _autocast(self) -> Any:
        """bfloat16 autocast over a float32 ``model_obj`` on a bf16 CPU; a no-op otherwise."""
        return torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.cpu_autocast)

    def _generate(self, **kwargs: Any) -> Any:
        return self.model.generate(**kwargs)

    # ------------------------------------------------------------------ batching
    def _batches(self, lengths: Sequence[int]) -> Iterator[list[int]]:
        """Indices grouped into batches by token budget, shortest first (stable for ties)."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batch: list[int] = []
        longest = 0
        for i in order:
            new_longest = max(longest, lengths[i])
            if batch and (
                new_longest * (len(batch) + 1) > self.batch_tokens or len(batch) >= self.max_batch_size
            ):
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
            logger.warning(
                "CUDA out of memory with %d rows; retrying as %d + %d", len(items), half, len(items) - half
            )
            self._run_with_oom_retry(items[:half], fn)
            self._run_with_oom_retry(items[half:], fn)

    # ------------------------------------------------------------------ shared prefix
    def _prefix_groups(
        self, seqs: Sequence[Sequence[int]], tail: Sequence[int]
    ) -> list[tuple[int, list[int]]]:
        """Group request indices by a common prefix: ``[(prefix_length, indices)]``.

        ``tail[i]`` is how many final tokens of request ``i`` must stay outside the prefix (the
        positions whose logits are read, at least one). A group whose prefix is shorter than
        ``min_prefix_tokens``, or a single request, has prefix length 0 (the plain path).
        """
        if not self.share_prefix or len(seqs) < 2:
            return [(0, list(range(len(seqs))))]
        return base.prefix_groups(seqs, tail, self.min_prefix_tokens)

    def _prefix_cache(self, prefix: Sequence[int]) -> Any:
        ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
        with self._autocast():
            out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        self.stats.calls += 1
        self.stats.prompt_tokens += len(prefix)
        return out.past_key_values

    @staticmethod
    def _expand_cache(cache: Any, rows: int) -> Any:
        """A private copy of a one-row prefix cache, repeated to ``rows`` rows."""
        c = copy.deepcopy(cache)
        if rows > 1:
            c.batch_repeat_interleave(rows)
        return c

    def _suffix_inputs(
        self, prefix_len: int, suffixes: Sequence[Sequence[int]]
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Left-padded suffix ids, the mask over prefix + suffix, and the suffix position ids."""
        ids, mask, pos = self._pad_left(suffixes)
        full_mask = torch.cat(
            [torch.ones((len(suffixes), prefix_len), dtype=mask.dtype, device=mask.device), mask], 1
        )
        return ids, full_mask, pos + prefix_len

    # ------------------------------------------------------------------ logprobs
    @torch.inference_mode()
    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        results: list[LogprobResult | None] = [None] * len(requests)
        seqs = [list(r.prompt_ids) + list(r.extension) for r in requests]
        base.check_requests(requests)

        def collect(batch: list[int], logits: torch.Tensor, keep: int) -> None:
            logp = torch.log_softmax(logits.float(), dim=-1)
            self.stats.calls += 1
            for row, i in enumerate(batch):
                req = requests[i]
                n = len(req.extension) + 1
                tok = torch.tensor(req.token_ids, dtype=torch.long, device=logp.device)
                sel = logp[row, keep - n :, :].index_select(-1, tok).cpu().tolist()
                results[i] = LogprobResult(
                    steps=[dict(zip(req.token_ids, step, strict=True)) for step in sel]
                )

        def run_plain(batch: list[int]) -> None:
            ids, mask, pos = self._pad_left([seqs[i] for i in batch])
            keep = max(len(requests[i].extension) for i in batch) + 1
            with self._autocast():
                out = self.model(
                    input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=keep, use_cache=False
                )
            collect(batch, out.logits, keep)
            self.stats.prompt_tokens += sum(len(seqs[i]) for i in batch)

        tails = [len(r.extension) + 1 for r in requests]
        for prefix_len, group in self._prefix_groups(seqs, tails):
            if prefix_len == 0:
                for batch in self._batches([len(seqs[i]) for i in group]):
                    self._run_with_oom_retry([group[j] for j in batch], run_plain)
                continue
            cache = self._prefix_cache(seqs[group[0]][:prefix_len])

            def run_shared(batch: list[int], cache: Any = cache, prefix_len: int = prefix_len) -> None:
                suffixes = [seqs[i][prefix_len:] for i in batch]
                ids, mask, pos = self._suffix_inputs(prefix_len, suffixes)
                keep = max(len(requests[i].extension) for i in batch) + 1
                with self._autocast():
                    out = self.model(
                        input_ids=ids,
                        attention_mask=mask,
                        position_ids=pos,
                        past_key_values=self._expand_cache(cache, len(batch)),
                        use_cache=True,
                        logits_to_keep=keep,
                    )
                collect(batch, out.logits, keep)
                self.stats.prompt_tokens += sum(len(s) for s in suffixes)

            for batch in self._batches([len(seqs[i]) - prefix_len for i in group]):
                self._run_with_oom_retry([group[j] for j in batch], run_shared)
        return [r for r in results if r is not None]

    # ------------------------------------------------------------------ generate
    @torch.inference_mode()
    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        from transformers import LogitsProcessor, LogitsProcessorList

        base.check_requests(requests)
        results: list[GenerateResult | None] = [None] * len(requests)
        eos_ids = set(token_id_list(self.hf_tokenizer.eos_token_id)) | set(
            token_id_list(getattr(self.model.generation_config, "eos_token_id", None))
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

        def run(batch: list[int], prefix_len: int = 0, cache: Any = None) -> None:
            reqs = [requests[i] for i in batch]
            if cache is None:
                ids, mask, _ = self._pad_left([r.prompt_ids for r in reqs])
                extra: dict[str, Any] = {}
            else:
                # prefix + (padding) + suffix; the cache covers the prefix, generate runs the rest.
                sfx_ids, mask, _ = self._suffix_inputs(prefix_len, [r.prompt_ids[prefix_len:] for r in reqs])
                head = torch.tensor([reqs[0].prompt_ids[:prefix_len]], dtype=torch.long, device=self.device)
                ids = torch.cat([head.expand(len(reqs), -1), sfx_ids], 1)
                extra = {"past_key_values": self._expand_cache(cache, len(reqs))}
            token_ids = sorted({t for r in reqs for t in r.logprob_token_ids})
            rec = _Record(token_ids)
            stops = sorted({s for r in reqs for s in r.stop})
            with self._autocast():
                out = self._generate(
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
                    **extra,
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
                        gen = trim_tokens_to_text(self.tokenizer.decode, gen, len(text))
                        break
                steps: list[dict[int, float]] = []
                if r.logprob_token_ids:
                    col = {t: j for j, t in enumerate(token_ids)}
                    want = [col[t] for t in r.logprob_token_ids]
                    for t in range(min(len(gen), len(rec.steps))):
                        vals = rec.steps[t][row]
                        steps.append(
                            {tid: float(vals[j]) for tid, j in zip(r.logprob_token_ids, want, strict=True)}
                        )
                results[i] = GenerateResult(
                    token_ids=gen,
                    text=text,
                    finish_reason=finish,  # type: ignore[arg-type]
                    step_logprobs=steps,
                )
                self.stats.prompt_tokens += len(r.prompt_ids) - prefix_len
                self.stats.generated_tokens += len(gen)

        seqs = [list(r.prompt_ids) for r in requests]
        for prefix_len, group in self._prefix_groups(seqs, [1] * len(seqs)):
            lengths = [len(seqs[i]) - prefix_len + requests[i].max_new_tokens for i in group]
            if prefix_len == 0:
                for batch in self._batches(lengths):
                    self._run_with_oom_retry([group[j] for j in batch], run)
                continue
            cache = self._prefix_cache(seqs[group[0]][:prefix_len])
            for batch in self._batches(lengths):
                self._run_with_oom_retry(
                    [group[j] for j in batch], lambda b, p=prefix_len, c=cache: run(b, p, c)
                )
        return [r for r in results if r is not None]
