"""(3) erank against the peers: same model (SmolLM2-135M-Instruct), same pairs, one process.

* erank direct mode, transformers engine (shared prefix on, and off);
* the naive reference: one ``model.generate`` per document (the official ERank Transformers
  example's way), here 1 new token with its scores, so it does the work of direct mode;
* sentence-transformers ``CrossEncoder`` on the causal LM (a sequence-classification head on the
  same backbone, loaded offline from the local folder), the ERank prompt as the passage;
* FlagEmbedding's ``FlagLLMReranker`` (yes/no logit of a causal LM) on the same query/documents.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_peers.py --pairs 8
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable

import torch

import speed_common as sc


def timed(name: str, fn: Callable[[], object], pairs: int, note: str = "") -> None:
    try:
        start = time.perf_counter()
        fn()
        dt = time.perf_counter() - start
        print(f"{name:42s} {pairs / dt:7.2f} pairs/s  {note}", flush=True)
    except Exception as exc:  # noqa: BLE001 - a peer that cannot run is reported, not fatal
        print(f"{name:42s}   n/a   cannot run: {type(exc).__name__}: {str(exc)[:200]}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    a = ap.parse_args()
    logging.disable(logging.WARNING)
    from erank.engines.transformers import TransformersEngine
    from erank.methods import create_method

    path = str(sc.default_dir())
    engine = TransformersEngine(path, device="cpu", batch_tokens=4096)
    m = create_method("erank", engine, mode="direct")
    docs = sc.docs_for_length(m, a.tokens, a.pairs)
    prompts = [m.build_prompt(sc.QUERY, d, "beir") for d in docs]
    m.rerank(sc.QUERY, docs[:1])  # warm-up (thread pools, first-call allocations)
    print(f"{a.pairs} pairs of {a.tokens} tokens (ERank prompt), torch threads {torch.get_num_threads()}")

    def erank(share: bool) -> Callable[[], object]:
        def run() -> object:
            engine.share_prefix = share
            return m.rerank(sc.QUERY, docs)

        return run

    timed("erank direct (shared prefix)", erank(True), a.pairs)
    timed("erank direct (no shared prefix)", erank(False), a.pairs)

    model, tok = engine.model, engine.hf_tokenizer

    def naive() -> object:
        return sc.naive_generate(model, tok, prompts)

    timed("naive: one generate() per document", naive, a.pairs, "(official example's way, 1 new token)")

    def cross_encoder() -> Callable[[], object]:
        ce = sc.cross_encoder(path, a.tokens + 64)
        n = len(ce.tokenizer(sc.QUERY, prompts[0])["input_ids"])
        print(f"  (CrossEncoder input: {n} tokens per pair)")
        return lambda: ce.predict([(sc.QUERY, p) for p in prompts], batch_size=a.pairs)

    try:
        timed(
            "sentence-transformers CrossEncoder",
            cross_encoder(),
            a.pairs,
            "(score head on the same backbone)",
        )
    except Exception as exc:  # noqa: BLE001
        print(f"sentence-transformers CrossEncoder cannot run: {type(exc).__name__}: {exc}")

    def flag() -> Callable[[], object]:
        fr = sc.flag_llm_reranker(path, a.pairs, a.tokens + 128)
        return lambda: fr.compute_score([[sc.QUERY, d] for d in docs])

    try:
        timed(
            "FlagEmbedding FlagLLMReranker", flag(), a.pairs, "(its own yes/no prompt around the same docs)"
        )
    except Exception as exc:  # noqa: BLE001
        print(f"FlagEmbedding FlagLLMReranker cannot run: {type(exc).__name__}: {exc}")


if __name__ == "__main__":
    main()
