"""Pairs per second of ERank `direct` and `reasoning` modes against the naive reference.

The naive reference is the official Transformers example's way: one `generate` call per document,
no batching, greedy, then the answer parsed. All three run in one process on the same pairs
(query-passage pairs from the TREC DL 2020 BM25 candidates in ../shared/data), so the ratios are
comparable even on a noisy machine.

    .venv/bin/python benchmarks/throughput.py [--pairs 32] [--reasoning-pairs 8] [--gen-tokens 32]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ERANK_SHARED_DATA", REPO.parent / "shared" / "data"))


def load_pairs(n: int, max_words: int) -> list[tuple[str, str]]:
    path = DATA / "trec-dl20-passage" / "BM25" / "retrieve_results_dl20_top100.json"
    if not path.exists():
        sys.exit(f"needs {path} (../shared/data)")
    entries = json.loads(path.read_text(encoding="utf-8"))
    pairs = []
    for e in entries:
        for h in e["hits"][:4]:
            pairs.append((e["query"], " ".join(h["content"].split()[:max_words])))
    return pairs[:n]


def naive_reference(engine, method, pairs, instruction, gen_tokens, fixed=False):  # noqa: ANN001, ANN201
    """One `generate` per document, as the official Transformers example does.

    ``fixed``: generate exactly ``gen_tokens`` tokens (no early stop), to stand for a checkpoint
    that really reasons (ERank-4B's reasoning averages about 410 tokens after RL, spec 2.3).
    """
    tok, model = engine.hf_tokenizer, engine.model
    generated = 0
    start = time.perf_counter()
    for q, d in pairs:
        text = method.build_prompt(q, d, instruction)
        ids = tok(text, return_tensors="pt", add_special_tokens=False)
        with torch.no_grad():
            out = model.generate(
                **ids, max_new_tokens=gen_tokens, do_sample=False, temperature=None, top_p=None, top_k=None,
                output_scores=True, return_dict_in_generate=True, pad_token_id=engine.pad_id,
                **({"min_new_tokens": gen_tokens} if fixed else {"stop_strings": ["</answer>"], "tokenizer": tok}),
            )  # fmt: skip
        generated += out.sequences.shape[1] - ids["input_ids"].shape[1]
    return time.perf_counter() - start, generated


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pairs", type=int, default=32, help="pairs for direct mode")
    ap.add_argument(
        "--reasoning-pairs", type=int, default=8, help="pairs for reasoning mode and the naive reference"
    )
    ap.add_argument("--gen-tokens", type=int, default=32, help="reasoning budget (same for both)")
    ap.add_argument("--max-words", type=int, default=150, help="passage length cap in words (~200 tokens)")
    ap.add_argument(
        "--naive-fixed-tokens",
        type=int,
        default=410,
        help="also time the naive reference generating exactly N tokens (0: skip)",
    )
    ap.add_argument("--naive-fixed-pairs", type=int, default=3, help="pairs for that fixed-length reference")
    args = ap.parse_args()

    from erank import Reranker
    from erank.prompts import resolve_instruction

    instruction = resolve_instruction("trec-dl")
    pairs = load_pairs(max(args.pairs, args.reasoning_pairs), args.max_words)
    direct = Reranker(mode="direct")
    engine = direct.engine
    reasoning = Reranker(engine=engine, mode="reasoning", max_new_tokens=args.gen_tokens)
    tokens = [
        len(engine.tokenizer.encode_prompt(direct.method.build_prompt(q, d, instruction))) for q, d in pairs
    ]

    # warm-up
    direct.score(pairs[0][0], [pairs[0][1]], instruction)

    t0 = time.perf_counter()
    for q in dict.fromkeys(q for q, _ in pairs[: args.pairs]):
        docs = [d for qq, d in pairs[: args.pairs] if qq == q]
        direct.score(q, docs, instruction)
    t_direct = time.perf_counter() - t0

    rp = pairs[: args.reasoning_pairs]
    t0 = time.perf_counter()
    gen_batched = 0
    for q in dict.fromkeys(q for q, _ in rp):
        res = reasoning.score(q, [d for qq, d in rp if qq == q], instruction)
        gen_batched += res.usage.generated_tokens
    t_reason = time.perf_counter() - t0

    t_naive, gen_naive = naive_reference(engine, reasoning.method, rp, instruction, args.gen_tokens)

    fixed_row = {}
    if args.naive_fixed_tokens:
        fp = pairs[: args.naive_fixed_pairs]
        t_fixed, gen_fixed = naive_reference(
            engine, reasoning.method, fp, instruction, args.naive_fixed_tokens, True
        )
        fixed_row[f"naive generate per document, {args.naive_fixed_tokens} tokens"] = (
            len(fp) / t_fixed,
            gen_fixed / len(fp),
        )
    rows = {
        "direct": (args.pairs / t_direct, None),
        "reasoning (batched)": (len(rp) / t_reason, gen_batched / len(rp)),
        "naive generate per document": (len(rp) / t_naive, gen_naive / len(rp)),
        **fixed_row,
    }
    naive_pps = rows["naive generate per document"][0]
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}"
    )
    print(f"model: {engine.model_name}; pairs: mean {sum(tokens) / len(tokens):.0f} prompt tokens; "
          f"reasoning budget {args.gen_tokens} tokens")  # fmt: skip
    print("| path | pairs/s | generated tokens/pair | x naive |")
    print("|---|---|---|---|")
    for name, (pps, gen) in rows.items():
        g = "-" if gen is None else f"{gen:.1f}"
        print(f"| {name} | {pps:.2f} | {g} | {pps / naive_pps:.1f}x |")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
