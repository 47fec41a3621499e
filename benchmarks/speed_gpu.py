"""(5) GPU figures: a Qwen3-4B-shaped model with random weights (speed does not depend on the
values), bf16, 512-token pairs. Not run on the CPU machines (no GPU was lent to issue 4); the
command that produces the figures on a CUDA machine:

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_gpu.py --pairs 512

Prints: the card's bf16 matmul rate and the FLOP ceiling in pairs/s; direct-mode pairs/s with
and without the shared prefix (fraction of the ceiling); reasoning throughput (generated
tokens/s) for a fixed 400-token reasoning length at batch sizes 1..256; peak allocated VRAM per
batch at the chosen token budget.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

import speed_common as sc


def bf16_tflops(n: int = 8192, seconds: float = 3.0) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    torch.mm(a, b)
    torch.cuda.synchronize()
    reps, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        torch.mm(a, b)
        reps += 1
    torch.cuda.synchronize()
    return 2 * n**3 * reps / (time.perf_counter() - start) / 1e12


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--prefix-fraction", type=float, default=0.4)
    ap.add_argument("--batch-tokens", type=int, default=65536)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device: this benchmark needs a GPU")
    from transformers import AutoTokenizer, Qwen3Config, Qwen3ForCausalLM

    from erank.engines.base import GenerateRequest, LogprobRequest
    from erank.engines.transformers import TransformersEngine

    cfg = Qwen3Config(
        vocab_size=151936,
        hidden_size=2560,
        intermediate_size=9728,
        num_hidden_layers=36,
        num_attention_heads=32,
        num_key_value_heads=8,
        head_dim=128,
        max_position_embeddings=40960,
        tie_word_embeddings=True,
        rope_theta=1_000_000,
    )
    with torch.device("cuda"):
        model = Qwen3ForCausalLM(cfg).to(torch.bfloat16).eval()
    tok = AutoTokenizer.from_pretrained(str(sc.default_dir()))
    engine = TransformersEngine(
        model_obj=model, tokenizer_obj=tok, device="cuda", batch_tokens=a.batch_tokens
    )
    rate = bf16_tflops()
    flops = 2 * sc.non_embedding_params(model) * a.tokens
    ceiling = rate * 1e12 / flops
    print(f"bf16 matmul {rate:.0f} TFLOP/s; ceiling {ceiling:.0f} pairs/s at {a.tokens} tokens")
    rng = random.Random(0)
    score_ids = list(range(15, 26))
    n_prefix = int(a.prefix_fraction * a.tokens)
    prefix = [rng.randrange(1000, 150000) for _ in range(n_prefix)]
    reqs = [
        LogprobRequest(
            prefix + [rng.randrange(1000, 150000) for _ in range(a.tokens - 1 - n_prefix)], score_ids, [16]
        )
        for _ in range(a.pairs)
    ]
    engine.logprobs(reqs[:8])
    for share in (False, True):
        engine.share_prefix = share
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        start = time.perf_counter()
        engine.logprobs(reqs)
        torch.cuda.synchronize()
        pps = a.pairs / (time.perf_counter() - start)
        print(
            f"direct share_prefix={share}: {pps:.0f} pairs/s = {pps / ceiling:.0%} of the ceiling; "
            f"peak VRAM {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB (budget {a.batch_tokens} tokens)"
        )
    engine.share_prefix = True
    for bs in (1, 4, 16, 64, 256):
        gen = [
            GenerateRequest(prefix + [rng.randrange(1000, 150000) for _ in range(a.tokens - n_prefix)], 400)
            for _ in range(bs)
        ]
        engine.batch_tokens = bs * (a.tokens + 400)
        engine.max_batch_size = bs
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = engine.generate(gen)
        torch.cuda.synchronize()
        dt = time.perf_counter() - start
        n = sum(len(o.token_ids) for o in out)
        print(f"reasoning batch {bs:3d}: {n / dt:8.0f} generated tokens/s, {bs / dt:6.2f} pairs/s")


if __name__ == "__main__":
    main()
