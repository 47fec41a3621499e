"""Training speed of the pointwise trainer on real DL20 pairs, against this CPU's matmul ceilings.

One run measures, on the same 16 real DL20 BM25 pairs of one query (the ERank template, documents
cut to 128 tokens, SmolLM2-135M + LoRA r16):

* the fp32 and bf16 matmul rates (the ceilings; bf16 is emulated, and useless, on a CPU without
  bf16 units, so the trainer's dtype there is fp32 and so is the ceiling reported against);
* an SFT step (forward at two positions + backward + AdamW) with the query's shared prompt start
  run once (the trainer's default) and without (``plain``), in fp32, and under bf16 autocast
  where the CPU has bf16 units;
* a GRPO step (rollout forward, reference forward, two mini-batch updates) in the trainer's dtype;
* where the CPU has bf16 units, an SFT step with the adapter on the top 12 of 30 layers
  (``lora.top_layers: 12``): the first visit of the pairs (the lower 18 layers run and are
  cached) and a later one (the cache is read: the top 12 layers only);

and reports pairs/s and the fraction of the ceiling of the trainer's dtype on the FLOPs the step
computes (forward 2 x params x tokens run, backward counted as 2 x forward: the activation
gradients of every layer; LoRA's own weight gradients are small). ``effective`` fractions count
the full prompt of every pair, so the shared prefix can take them above the computed ones.

    .venv/bin/python benchmarks/train_throughput.py [--steps 2] [--threads 2]
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
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from erank.engines.transformers import cpu_has_bf16
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
    has_bf16 = cpu_has_bf16()
    ceiling = result["bf16_matmul_gflops" if has_bf16 else "fp32_matmul_gflops"]
    result["trainer_dtype_bf16"] = float(has_bf16)
    passes = [("fp32_plain", False, None, False), ("fp32", False, None, True)]
    if has_bf16:
        passes += [
            ("bf16_plain", True, None, False),
            ("bf16", True, None, True),
            ("top12_bf16", True, 12, False),
        ]
    for label, bf16, top, share in passes:
        m = _Model("smollm2-135m", LoraConfig(r=16, alpha=32, top_layers=top), None, bf16)
        m.share_prefix = share
        pb = PromptBuilder(m.tok, "direct", 128)
        prompts = [
            {"ids": pb.engine.tokenizer.encode_prompt(pb.prompt(entry["query"], d, instr))} for d in docs
        ]
        full = sum(len(p["ids"]) + 1 for p in prompts)
        ids = [p["ids"] for p in prompts]
        common = next((i for i in range(min(map(len, ids))) if len({s[i] for s in ids}) > 1), 0)
        tokens = full - (len(ids) - 1) * common if share else full  # what the step computes
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
            result["sft_top12_first_visit_pairs_per_s"] = len(docs) / (time.perf_counter() - t)
        else:
            sft_step()
        t = time.perf_counter()
        for _ in range(args.steps):
            sft_step()
        dt = (time.perf_counter() - t) / args.steps
        n_layers = m.model.get_base_model().config.num_hidden_layers
        frac = (top or n_layers) / n_layers
        result[f"sft_{label}_pairs_per_s"] = len(docs) / dt
        result[f"sft_{label}_share_of_ceiling"] = 3 * frac * 2 * params * tokens / dt / 1e9 / ceiling
        result[f"sft_{label}_effective_share_of_ceiling"] = 3 * frac * 2 * params * full / dt / 1e9 / ceiling
        result["prompt_tokens_per_step"] = full
        result["shared_prefix_tokens"] = common
        if share and bf16 == has_bf16:

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
            half_tokens = full // 2 - 7 * common  # each mini-batch of 8 runs the prefix once
            result[f"grpo_{label}_pairs_per_s"] = len(docs) / dt
            result[f"grpo_{label}_share_of_ceiling"] = (
                (2 * 2 * params * tokens + 2 * 3 * 2 * params * half_tokens) / dt / 1e9 / ceiling
            )
    print(json.dumps({k: round(v, 3) for k, v in result.items()}, indent=1))


if __name__ == "__main__":
    main()
