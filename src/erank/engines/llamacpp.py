"""The llama.cpp engine (``llama-cpp-python``): GGUF models on CPU, quantized weights as they are.

It is the natural engine for the embedded default model (a Q4_1 GGUF): no conversion to a
transformers folder, about a quarter of the memory. One ``llama_cpp.Llama`` context holds a KV
cache; requests are evaluated one sequence at a time in lexicographic order, and each reuses the
part of the cache it shares with the previous one (``kv_cache_seq_rm`` past the common prefix),
so the shared prefix of a query's prompts is computed once. The prompt tokens of one sequence go
through the model in chunks of ``n_batch`` tokens (one matrix multiply per layer per chunk). Only
the logits of the last position are produced (``logits_all=False``); the full-vocabulary row is
read with ``llama_get_logits_ith`` and log-softmaxed in float64.

Several sequences per decode (``n_seq`` > 1; default 1): ``logprobs`` groups a call's requests
by their common prefix, decodes the prefix once as sequence 0 of a second context (one KV stream
per sequence), copies its cells into each request's sequence (``llama_memory_seq_cp``), and
decodes the suffixes of up to ``n_seq`` requests in one ``llama_batch``, with logits only at the
positions that are read. On SmolLM2-135M with TREC DL passages on 2 CPU cores it measured 1.05x
the one-at-a-time path (docs/benchmarks.md): a ~300-token sequence already is a matrix multiply
of 300 rows, so the default stays 1; the option is for larger models and longer lists. The two
paths differ from each other by about as much as each differs from the float32 transformers
engine on the dequantised weights (llama.cpp quantises activations per block, and its kernels
change with the batch shape): up to a few tenths of a nat in a score token's log-probability,
tested.

>>> from erank import Reranker                                              # doctest: +SKIP
>>> Reranker("smollm2-135m", engine="llamacpp").rerank("capital of France", ["Paris.", "Bananas."])[0]["content"]  # doctest: +SKIP
'Paris.'
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from erank.engines import base
from erank.engines.base import Engine, GenerateRequest, GenerateResult, LogprobRequest, LogprobResult
from erank.errors import InputError, ModelLoadError, require
from erank.models import resolve_model

__all__ = ["LlamaCppEngine", "LlamaCppTokenizer", "check_llama_cpp", "TESTED_VERSION"]

logger = logging.getLogger(__name__)

#: The llama-cpp-python release the lock (constraints.txt) pins and the tests ran with.
TESTED_VERSION = "0.3.16"

_PROBE = """
import sys
from llama_cpp import Llama
m = Llama(model_path=sys.argv[1], n_ctx=256, n_threads=1, verbose=False)
m.eval(m.tokenize(b"Hello, my name is"))
print("ok")
"""
_checked: dict[str, str | None] = {}


def check_llama_cpp(gguf: str | os.PathLike[str]) -> str | None:
    """Load ``gguf`` and decode a few tokens in a child process; ``None`` if that works, else why not.

    Some llama-cpp-python builds crash (SIGSEGV) on their first decode of a model; in a child
    process that is a message, not the death of the caller. The result is remembered per file.
    """
    import subprocess
    import sys

    key = str(Path(gguf).resolve())
    if key in _checked:
        return _checked[key]
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE, key], capture_output=True, text=True, timeout=120
        )
        problem = None
        if proc.returncode != 0 or "ok" not in proc.stdout:
            how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit code {proc.returncode}"
            tail = (proc.stderr.strip().splitlines() or [""])[-1][:200]
            problem = f"decoding {Path(key).name} in a test process ended with {how}" + (
                f" ({tail})" if tail else ""
            )
    except subprocess.TimeoutExpired:
        problem = f"decoding {Path(key).name} in a test process did not finish within 120 s"
    _checked[key] = problem
    return problem


def _usable_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def _log_softmax(row: np.ndarray) -> np.ndarray:
    x = row.astype(np.float64)
    m = float(x.max())
    return x - (m + float(np.log(np.exp(x - m).sum())))


class LlamaCppTokenizer:
    """The GGUF file's own tokenizer and chat template behind erank's ``Tokenizer`` protocol."""

    def __init__(self, llm: Any) -> None:
        self.llm = llm
        self._template: Any = None
        template = llm.metadata.get("tokenizer.chat_template")
        if template:
            from llama_cpp.llama_chat_format import Jinja2ChatFormatter

            def piece(tid: int) -> str:
                return (
                    "" if tid < 0 else llm.detokenize([tid], special=True).decode("utf-8", errors="replace")
                )

            self._template = Jinja2ChatFormatter(
                template=template, eos_token=piece(llm.token_eos()), bos_token=piece(llm.token_bos())
            )

    def encode(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def encode_prompt(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.llm.detokenize(list(ids), special=False).decode("utf-8", errors="replace"))

    def chat_prompt(self, user: str) -> str:
        if self._template is None:
            logger.warning("the GGUF file has no chat template; using the prompt as plain text")
            return user
        return str(self._template(messages=[{"role": "user", "content": user}]).prompt)


class LlamaCppEngine(Engine):
    """Runs a GGUF model with llama.cpp.

    Args:
        model: a ``.gguf`` file, or ``"smollm2-135m"`` for the embedded base model (the trained
            erank-smol default is a LoRA adapter for the transformers engine).
        n_ctx: the context length (default 4096, at most the model's training context).
        n_batch: prompt tokens per ``llama_decode`` call.
        n_threads: CPU threads (default: every core this process may use).
        seed: the context's seed (decoding here is greedy, so it does not matter).
        n_seq: sequences per decode for ``logprobs`` (default 1: one at a time; see the module doc).
    """

    name = "llamacpp"

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_batch: int = 512,
        n_threads: int | None = None,
        seed: int = 0,
        verbose: bool = False,
        n_seq: int = 1,
        **unused: Any,
    ) -> None:
        super().__init__()
        if unused:
            # Reranker passes device/dtype/batch_tokens to any engine; they mean nothing here.
            logger.debug("llama.cpp engine ignores %s", sorted(unused))
        llama_cpp = require("llama_cpp", "llamacpp", "the llama.cpp engine")
        spec = resolve_model(model)
        if spec.kind == "embedded":
            raise ModelLoadError(
                "the embedded erank-smol is a LoRA adapter that runs on the transformers engine; "
                "for llama.cpp pass model='smollm2-135m' (its untrained base) or a .gguf file"
            )
        if spec.kind == "hub":  # never a download: a hub id fails here, at once, saying what to get
            raise ModelLoadError(
                f"the llama.cpp engine runs GGUF files, not hub ids like {spec.location!r}: download one "
                f"with `hf download {spec.location} FILE.gguf --local-dir DIR` and pass DIR/FILE.gguf "
                "(or use engine='transformers', which loads hub ids; see docs/real-models.md)"
            )
        if spec.kind != "gguf":
            raise ModelLoadError(
                f"the llama.cpp engine runs GGUF files; {spec.location!r} is a {spec.kind} model. "
                "Pass a .gguf file (or use engine='transformers')."
            )
        problem = check_llama_cpp(spec.location)
        if problem is not None:
            version = getattr(llama_cpp, "__version__", "?")
            raise ModelLoadError(
                f"llama-cpp-python {version} is unusable on this machine: {problem}. Install the "
                f"tested version: pip install -c constraints.txt 'llama-cpp-python=={TESTED_VERSION}' "
                "(or use engine='transformers')"
            )
        threads = int(n_threads or _usable_cores())
        try:
            self.llm = llama_cpp.Llama(  # type: ignore[attr-defined]
                model_path=spec.location,
                n_ctx=int(n_ctx),
                n_batch=int(n_batch),
                n_ubatch=int(n_batch),
                n_threads=threads,
                n_threads_batch=threads,
                logits_all=False,
                seed=seed,
                verbose=verbose,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(f"llama.cpp could not load {Path(spec.location).name}: {exc}") from exc
        self._lib = llama_cpp
        self.model_name = spec.name
        self.n_ctx = int(self.llm.n_ctx())
        self.n_vocab = int(self.llm.n_vocab())
        self.tokenizer = LlamaCppTokenizer(self.llm)
        eog = {self.llm.token_eos(), self.llm._model.token_eot()}
        self.eos_ids = {t for t in eog if t is not None and t >= 0}
        if int(n_seq) < 1:
            raise InputError(f"n_seq must be at least 1, got {n_seq}")
        self.n_seq = int(n_seq)
        self._threads = threads
        self._n_batch = int(n_batch)
        self._parallel: Any = None  # a ParallelDecoder (engines/llamacpp_parallel.py), made on first use

    # ------------------------------------------------------------------ the KV cache
    def _check_length(self, n: int) -> None:
        if n > self.n_ctx:
            raise InputError(
                f"a prompt of {n} tokens does not fit the llama.cpp context of {self.n_ctx} tokens; "
                "truncate the documents (truncate_length) or create the engine with a larger n_ctx"
            )

    def _feed(self, tokens: Sequence[int]) -> np.ndarray:
        """Make the context hold exactly ``tokens``; the log-probabilities after the last one."""
        llm = self.llm
        cached = llm.n_tokens
        common = 0
        limit = min(cached, len(tokens) - 1)  # the last token is always evaluated: its logits are needed
        ids = llm.input_ids
        while common < limit and ids[common] == tokens[common]:
            common += 1
        llm.n_tokens = common
        rest = list(tokens[common:])
        llm.eval(rest)
        self.stats.calls += 1
        self.stats.prompt_tokens += len(rest)
        return self._last_logprobs()

    def _step(self, token: int) -> np.ndarray:
        self.llm.eval([token])
        return self._last_logprobs()

    def _last_logprobs(self) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(self.llm._ctx.ctx, -1)  # type: ignore[attr-defined]
        row = np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))
        return _log_softmax(row)

    # ------------------------------------------------------------------ protocol
    def logprobs(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        base.check_requests(requests)
        for r in requests:
            self._check_length(len(r.prompt_ids) + len(r.extension))
        if self.n_seq > 1 and len(requests) > 1:
            return self._logprobs_parallel(requests)
        results: list[LogprobResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: list(requests[i].prompt_ids))
        for i in order:
            r = requests[i]
            lp = self._feed(r.prompt_ids)
            steps = [{t: float(lp[t]) for t in r.token_ids}]
            for t in r.extension:
                lp = self._step(t)
                steps.append({tid: float(lp[tid]) for tid in r.token_ids})
            results[i] = LogprobResult(steps=steps)
        return [r for r in results if r is not None]

    def _logprobs_parallel(self, requests: Sequence[LogprobRequest]) -> list[LogprobResult]:
        from erank.engines.llamacpp_parallel import ParallelDecoder

        if self._parallel is None:
            self._parallel = ParallelDecoder(
                self._lib, self.llm, self.n_ctx, self._n_batch, self.n_seq, self._threads
            )
        dec = self._parallel
        seqs = [list(r.prompt_ids) + list(r.extension) for r in requests]
        tails = [len(r.extension) + 1 for r in requests]
        rows = dec.logprobs(seqs, tails)
        self.stats.calls += dec.calls
        self.stats.prompt_tokens += dec.tokens
        dec.calls = dec.tokens = 0
        return [
            LogprobResult(steps=[{t: float(row[t]) for t in r.token_ids} for row in rows[i]])
            for i, r in enumerate(requests)
        ]

    def generate(self, requests: Sequence[GenerateRequest]) -> list[GenerateResult]:
        base.check_requests(requests)
        results: list[GenerateResult | None] = [None] * len(requests)
        order = sorted(range(len(requests)), key=lambda i: list(requests[i].prompt_ids))
        for i in order:
            results[i] = self._generate_one(requests[i])
        return [r for r in results if r is not None]

    def _generate_one(self, r: GenerateRequest) -> GenerateResult:
        budget = min(r.max_new_tokens, self.n_ctx - len(r.prompt_ids))
        self._check_length(len(r.prompt_ids) + 1)
        lp = self._feed(r.prompt_ids)
        gen: list[int] = []
        steps: list[dict[int, float]] = []
        finish = "length"
        cut_text: str | None = None
        while len(gen) < budget:
            tok = int(np.argmax(lp))
            if tok in self.eos_ids:
                finish = "stop"
                break
            if r.logprob_token_ids:
                steps.append({t: float(lp[t]) for t in r.logprob_token_ids})
            gen.append(tok)
            self.stats.generated_tokens += 1
            if r.stop:
                text = self.tokenizer.decode(gen)
                hits = [(text.find(s), s) for s in r.stop if s in text]
                if hits:
                    at, stop = min(hits)
                    cut_text, finish = text[: at + len(stop)], "stop"
                    break
            if len(gen) < budget:
                lp = self._step(tok)
        text = cut_text if cut_text is not None else self.tokenizer.decode(gen)
        return GenerateResult(token_ids=gen, text=text, finish_reason=finish, step_logprobs=steps)  # type: ignore[arg-type]

    def close(self) -> None:
        par = getattr(self, "_parallel", None)
        if par is not None:
            par.close()
            self._parallel = None
        llm = getattr(self, "llm", None)
        if llm is not None:
            llm.close()
            self.llm = None
