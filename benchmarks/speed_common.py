"""Shared pieces of the speed benchmarks: the default model, 256-token pairs, the matmul rate, and
the peers (the naive per-document ``generate``, sentence-transformers ``CrossEncoder``,
FlagEmbedding's ``FlagLLMReranker``) as ``speed_peers.py`` and ``speed_real.py`` run them."""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

QUERY = "what are the health effects of drinking green tea every day"
WORDS = (
    "green tea contains catechins and caffeine which studies link to heart health weight control "
    "and alertness while excess intake may upset the stomach or disturb sleep in sensitive people "
).split()


def default_dir() -> Path:
    from erank.models import default_gguf_path, ensure_converted_gguf

    return ensure_converted_gguf(default_gguf_path())


def matmul_gflops(seconds: float = 3.0, n: int = 1024, dtype: torch.dtype = torch.float32) -> float:
    """Sustained matmul rate of this CPU in ``dtype`` (default fp32) with torch's current thread
    count (GFLOP/s)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, 4 * n, dtype=dtype)
    torch.mm(a, b)
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    return 2 * n * n * 4 * n * reps / (time.perf_counter() - start) / 1e9


def docs_for_length(method, total_tokens: int, n: int, query: str = QUERY) -> list[str]:  # noqa: ANN001
    """``n`` different documents whose full ERank prompt is ``total_tokens`` tokens long."""
    tok = method.engine.tokenizer
    base = len(tok.encode_prompt(method.build_prompt(query, "", "beir")))
    out = []
    for i in range(n):
        words = [WORDS[(i * 7 + k) % len(WORDS)] for k in range(total_tokens)]
        ids = tok.encode(f"doc {i}: " + " ".join(words))[: max(1, total_tokens - base)]
        text = tok.decode(ids)
        # re-tokenisation can merge/split a token at the cut; adjust to the exact length
        while ids and len(tok.encode_prompt(method.build_prompt(query, text, "beir"))) > total_tokens:
            ids = ids[:-1]
            text = tok.decode(ids)
        out.append(text)
    return out


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def non_embedding_params(model) -> int:  # noqa: ANN001
    emb = model.get_input_embeddings().weight.numel()
    return sum(p.numel() for p in model.parameters()) - emb


# ---------------------------------------------------------------------------- the peers
@torch.inference_mode()
def naive_generate(model: Any, tok: Any, prompts: Sequence[str]) -> list[torch.Tensor]:
    """The official ERank example's way: one ``model.generate`` per prompt, here 1 new token with
    its scores (the log-probabilities over the vocabulary, the work of direct mode)."""
    out = []
    for p in prompts:
        enc = tok(p, return_tensors="pt", add_special_tokens=False)
        g = model.generate(
            **enc,
            max_new_tokens=1,
            do_sample=False,
            output_scores=True,
            return_dict_in_generate=True,
            pad_token_id=tok.pad_token_id,
        )
        out.append(torch.log_softmax(g.scores[0][0], -1))
    return out


def cross_encoder(path: str, max_length: int) -> Any:
    """sentence-transformers ``CrossEncoder`` on the causal LM folder: a sequence-classification
    head on the same backbone, loaded offline from the local folder, its padding token set."""
    from sentence_transformers import CrossEncoder

    ce = CrossEncoder(path, device="cpu", max_length=max_length)
    if ce.tokenizer.pad_token is None:
        ce.tokenizer.pad_token = ce.tokenizer.eos_token
        ce.model.config.pad_token_id = ce.tokenizer.pad_token_id
    return ce


def flag_llm_reranker(path: str, batch_size: int, max_length: int) -> Any:
    """FlagEmbedding's ``FlagLLMReranker`` (the yes/no logit of a causal LM, its own prompt) in fp32 on CPU."""
    from FlagEmbedding import FlagLLMReranker

    return FlagLLMReranker(path, use_fp16=False, devices="cpu", batch_size=batch_size, max_length=max_length)
