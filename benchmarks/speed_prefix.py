"""(2) Shared-prefix speedup versus the fraction of the prompt that is shared.

Pairs of ``--tokens`` tokens (prompt + extension) whose first ``f x tokens`` are identical, on the
default model through the transformers engine, timed with the shared-prefix path off and on in
the same process, alternating, at each fraction.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_prefix.py --pairs 8
"""

from __future__ import annotations

import argparse
import random
import time

import speed_common as sc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=8)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--fractions", default="0.1,0.25,0.4,0.6,0.8")
    a = ap.parse_args()
    from erank.engines.base import LogprobRequest
    from erank.engines.transformers import TransformersEngine

    engine = TransformersEngine(str(sc.default_dir()), device="cpu", batch_tokens=4096)
    rng = random.Random(0)
    vocab = len(engine.hf_tokenizer)
    score_ids = engine.tokenizer.encode("0123456789")
    engine.logprobs([LogprobRequest([rng.randrange(100, vocab) for _ in range(64)], score_ids)])  # warm-up
    print("fraction  plain_pairs/s  shared_pairs/s  speedup")
    for f in (float(x) for x in a.fractions.split(",")):
        n_prefix = int(f * a.tokens)
        prefix = [rng.randrange(100, vocab) for _ in range(n_prefix)]
        reqs = [
            LogprobRequest(
                prefix + [rng.randrange(100, vocab) for _ in range(a.tokens - 1 - n_prefix)],
                score_ids,
                [score_ids[1]],
            )
            for _ in range(a.pairs)
        ]
        times = {}
        for share in (False, True):
            engine.share_prefix = share
            start = time.perf_counter()
            engine.logprobs(reqs)
            times[share] = time.perf_counter() - start
        print(
            f"{f:8.2f}  {a.pairs / times[False]:13.2f}  {a.pairs / times[True]:14.2f}  {times[False] / times[True]:6.2f}x",
            flush=True,
        )


if __name__ == "__main__":
    main()
