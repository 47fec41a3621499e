"""Training speed of the pointwise trainer on real DL20 pairs, against this CPU's matmul ceilings.

One run measures, on the same 16 real DL20 BM25 pairs of one query (the ERank template, documents
cut to 128 tokens, SmolLM2-135M + LoRA r16):

* the fp32 and bf16 matmul rates (the ceilings);
* an SFT step (forward at two positions + backward + AdamW) in fp32 and under bf16 autocast;
* a GRPO step (rollout forward, reference forward, two mini-batch updates) under bf16 autocast;
* an SFT step with the adapter on the top 12 of 30 layers (``lora.top_layers: 12``) under bf16
  autocast: the first visit of the pairs (the lower 18 layers run and are cached) and a later one
  (the cache is read: the top 12 layers only);

and reports pairs/s and the fraction of the bf16 ceiling on the FLOPs the step computes (forward
2 x params x tokens, backward counted as 2 x forward: the activation gradients of every layer;
LoRA's own weight gradients are small).

    .venv/bin/python benchmarks/train_throughput.py [--steps 3] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from speed_common import matmul_gflops, non_embedding_params  # type: ignore[import-not-found]

DL20 = (
    Path(__file__).resolve().parents[2]
    / "shared/data/trec-dl20-passage/BM25/retrieve_results_dl20_top100.json"
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from erank.training.config import LoraConfig
    from erank.training.data import PromptBuilder
    from erank.training.pointwise import _Model, grpo_loss, sft_loss

    entry = json.loads(DL20.read_text())[0]
    docs = [h["content"] for h in entry["hits"][:16]]
    instr = "Given a query, retrieval relevant passage."
    result: dict[str, float] = {
        "fp32_matmul_gflops": matmul_gflops(),
        "bf16_matmul_gflops": matmul_gflops(dtype=torch.bfloat16),
    }
    for label, bf16, top in (("fp32", False, None), ("bf16", True, None), ("top12_bf16", True, 12)):
        m = _Model("smollm2-135m", LoraConfig(r=16, alpha=32, top_layers=top), None, bf16)
        pb = PromptBuilder(m.tok, "direct", 128)
        prompts = [
            {"ids": pb.engine.tokenizer.encode_prompt(pb.prompt(entry["query"], d, instr))} for d in docs
        ]
        tokens = sum(len(p["ids"]) + 1 for p in prompts)
        params = non_embedding_params(m.model.get_base_model())
        opt = torch.optim.AdamW(m.trainable(), lr=1e-4)
        targets = torch.tensor([random.Random(i).uniform(0, 10) for i in range(len(docs))])

        def sft_step() -> None:
            loss, _ = sft_loss(m.forward(prompts, 8), targets)  # noqa: B023
            opt.zero_grad()  # noqa: B023
            loss.backward()
            opt.step()  # noqa: B023

        if top:
            t = time.perf_counter()
            sft_step()  # the first visit: the lower layers run once and are cached
            dt = time.perf_counter() - t
            result["sft_top12_first_visit_pairs_per_s"] = len(docs) / dt
        else:
            sft_step()
        t = time.perf_counter()
        for _ in range(args.steps):
            sft_step()
        dt = (time.perf_counter() - t) / args.steps
        # forward + backward (2 x forward) of the layers that run: all, or (cached) the top ones
        n_layers = m.model.get_base_model().config.num_hidden_layers
        flops = 3 * ((top or n_layers) / n_layers) * 2 * params * tokens
        result[f"sft_{label}_pairs_per_s"] = len(docs) / dt
        result[f"sft_{label}_gflops"] = flops / dt / 1e9
        if bf16 and not top:

            def grpo_step() -> None:
                with torch.no_grad():
                    old = torch.log_softmax(m.forward(prompts, 8), -1)  # noqa: B023
                    ref = torch.log_softmax(m.forward(prompts, 8), -1)  # noqa: B023
                samples = torch.multinomial(torch.exp(old), 4, replacement=True)
                adv = torch.randn(len(docs), 4)
                for half in (slice(0, 8), slice(8, 16)):
                    new = torch.log_softmax(m.forward(prompts[half], 8), -1)  # noqa: B023
                    loss, _ = grpo_loss(new, old[half], ref[half], samples[half], adv[half], 0.2, 0.001)
                    opt.zero_grad()  # noqa: B023
                    loss.backward()
                    opt.step()  # noqa: B023

            grpo_step()
            t = time.perf_counter()
            for _ in range(args.steps):
                grpo_step()
            dt = (time.perf_counter() - t) / args.steps
            flops = (2 + 3) * 2 * params * tokens
            result["grpo_bf16_pairs_per_s"] = len(docs) / dt
            result["grpo_bf16_gflops"] = flops / dt / 1e9
        result["tokens_per_step"] = tokens
    for k in ("sft_fp32", "sft_bf16", "grpo_bf16", "sft_top12_bf16"):
        result[f"{k}_share_of_bf16_ceiling"] = result[f"{k}_gflops"] / result["bf16_matmul_gflops"]
    print(json.dumps({k: round(v, 3) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
