"""(4) llama.cpp versus transformers on CPU for the default model: pairs/s and peak RSS.

Each engine runs in its own subprocess (so the peak RSS is its own), ERank direct mode, the same
pairs of ``--tokens`` tokens, shared prefix on in both (llama.cpp reuses its KV cache across a
query's prompts). transformers de-quantizes the Q4_1 GGUF to fp32; llama.cpp computes on it.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_llamacpp.py --pairs 16
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

import speed_common as sc


def child(engine_name: str, pairs: int, tokens: int) -> None:
    from erank import Reranker

    model = str(sc.default_dir()) if engine_name == "transformers" else None
    kwargs = {"batch_tokens": 4096} if engine_name == "transformers" else {}
    r = Reranker(model, engine=engine_name, mode="direct", **kwargs)
    docs = sc.docs_for_length(r.method, tokens, pairs)
    r.score(sc.QUERY, docs[:2])  # warm-up
    start = time.perf_counter()
    res = r.score(sc.QUERY, docs)
    dt = time.perf_counter() - start
    print(
        json.dumps(
            {
                "engine": engine_name,
                "pairs_per_s": pairs / dt,
                "peak_rss_mib": sc.peak_rss_mib(),
                "ranking": res.ranking,
            }
        )
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=16)
    ap.add_argument("--tokens", type=int, default=256)
    ap.add_argument("--child")
    a = ap.parse_args()
    if a.child:
        child(a.child, a.pairs, a.tokens)
        return
    rows = {}
    for name in ("transformers", "llamacpp"):
        cmd = [sys.executable, __file__, "--child", name, "--pairs", str(a.pairs), "--tokens", str(a.tokens)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
        rows[name] = json.loads(out)
        print(
            f"{name:12s} {rows[name]['pairs_per_s']:6.2f} pairs/s  peak RSS {rows[name]['peak_rss_mib']:6.0f} MiB",
            flush=True,
        )
    t, ll = rows["transformers"], rows["llamacpp"]
    print(
        f"llama.cpp / transformers: speed {ll['pairs_per_s'] / t['pairs_per_s']:.2f}x, "
        f"memory {ll['peak_rss_mib'] / t['peak_rss_mib']:.2f}x; same ranking: {ll['ranking'] == t['ranking']}"
    )


if __name__ == "__main__":
    main()
