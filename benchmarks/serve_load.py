"""Load test of ``erank serve`` on loopback: documents/s and latency by concurrency, with and
without cross-request batching, in one run.

For each batching setting (``cross``: pairs of concurrent requests share model calls; ``single``:
``--no-cross-batching``, one request per model call) the script starts ``erank serve`` in a
subprocess (both stay up; settings are measured alternately, level by level), sends two warm-up
requests, then for each concurrency level ``c`` runs ``c`` client threads, each sending ``--rounds`` requests of ``--docs`` documents back to back (at least
``--min-requests`` requests per level in all). It reports documents/s (all documents of the
level / its wall time) and p50/p99 request latency, then the gain cross/single at each level.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/serve_load.py \\
        --concurrency 1 8 32 --docs 20 --out /tmp/serve_load.json

``--model`` defaults to the embedded SmolLM2-135M (direct mode).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx

WORDS = (
    "rust cargo crate borrow checker lifetime trait generic compiler memory safety thread "
    "bread flour oven yeast water salt butter kitchen recipe dough"
).split()


def documents(n: int, words: int, seed: int) -> list[str]:
    return [" ".join(WORDS[(seed * 31 + i * 7 + j * 3) % len(WORDS)] for j in range(words)) for i in range(n)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: argparse.Namespace, cross: bool) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "erank.cli", "serve", "--mode", args.mode, "--port", str(port)]
    cmd += ["--max-batch-pairs", str(args.max_batch_pairs), "--max-wait-ms", str(args.max_wait_ms)]
    cmd += ["--log-level", "warning", "--max-queue", "1024", "--request-timeout", "3600"]
    if args.model:
        cmd += ["--model", args.model]
    if not cross:
        cmd.append("--no-cross-batching")
    proc = subprocess.Popen(cmd, env=dict(os.environ, HF_HUB_OFFLINE="1"))
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(base + "/ready", timeout=2).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("the server did not become ready in 600 s")


def run_level(base: str, c: int, args: argparse.Namespace) -> dict[str, Any]:
    rounds = max(args.rounds, -(-args.min_requests // c))
    latencies: list[float] = []
    failures = 0

    def client(k: int) -> None:
        nonlocal failures
        with httpx.Client(base_url=base, timeout=3600) as http:
            for r in range(rounds):
                body = {
                    "query": f"rust memory safety {k} {r}",
                    "documents": documents(args.docs, args.words, k * 97 + r),
                }
                t = time.perf_counter()
                resp = http.post("/v1/rerank", json=body)
                latencies.append(time.perf_counter() - t)
                if resp.status_code != 200 or len(resp.json()["results"]) != args.docs:
                    failures += 1

    start = time.perf_counter()
    with cf.ThreadPoolExecutor(c) as ex:
        list(ex.map(client, range(c)))
    wall = time.perf_counter() - start
    lat = sorted(latencies)
    p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
    return {
        "concurrency": c,
        "requests": len(lat),
        "failures": failures,
        "seconds": wall,
        "docs_per_s": len(lat) * args.docs / wall,
        "p50_s": statistics.median(lat),
        "p99_s": p99,
    }


def batch_stats(base: str) -> dict[str, float]:
    text = httpx.get(base + "/metrics", timeout=30).text
    out: dict[str, float] = {}
    for line in text.splitlines():
        for name in ("erank_batch_pairs_sum", "erank_batch_pairs_count", "erank_batch_requests_sum"):
            if line.startswith(name + " "):
                out[name] = float(line.split()[-1])
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default: the embedded SmolLM2-135M")
    p.add_argument("--mode", default="direct")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--docs", type=int, default=20, help="documents per request")
    p.add_argument("--words", type=int, default=12, help="words per document")
    p.add_argument("--rounds", type=int, default=1, help="requests per client")
    p.add_argument("--min-requests", type=int, default=4, help="requests per level at least")
    p.add_argument("--max-batch-pairs", type=int, default=64)
    p.add_argument("--max-wait-ms", type=float, default=5.0)
    p.add_argument("--settings", nargs="+", default=["cross", "single"], choices=["cross", "single"])
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()

    # Both servers run for the whole benchmark and the settings are measured level by level, in
    # alternating order, so that drifts in the machine's load hit both alike.
    servers = {setting: start_server(args, cross=setting == "cross") for setting in args.settings}
    results: dict[str, list[dict[str, Any]]] = {setting: [] for setting in args.settings}
    try:
        for _, base in servers.values():
            for _ in range(2):
                body = {"query": "warm up", "documents": documents(args.docs, args.words, 0)}
                httpx.post(base + "/v1/rerank", json=body, timeout=600)
        for level, c in enumerate(args.concurrency):
            order = list(args.settings) if level % 2 == 0 else list(reversed(args.settings))
            for setting in order:
                base = servers[setting][1]
                before = batch_stats(base)
                row = run_level(base, c, args)
                after = batch_stats(base)
                calls = after.get("erank_batch_pairs_count", 0) - before.get("erank_batch_pairs_count", 0)
                pairs = after.get("erank_batch_pairs_sum", 0) - before.get("erank_batch_pairs_sum", 0)
                reqs = after.get("erank_batch_requests_sum", 0) - before.get("erank_batch_requests_sum", 0)
                row["pairs_per_call"] = pairs / calls if calls else 0.0
                row["requests_per_call"] = reqs / calls if calls else 0.0
                results[setting].append(row)
                print(setting, json.dumps(row), flush=True)
    finally:
        for setting, (proc, _) in servers.items():
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(300)
            print(f"server ({setting}) exited with {code}", flush=True)

    print()
    print("| batching | clients | requests | failed | docs/s | p50 s | p99 s | pairs/call | requests/call |")
    print("|---|---|---|---|---|---|---|---|---|")
    for setting, rows in results.items():
        for r in rows:
            print(
                f"| {setting} | {r['concurrency']} | {r['requests']} | {r['failures']} | {r['docs_per_s']:.1f} | "
                f"{r['p50_s']:.2f} | {r['p99_s']:.2f} | {r['pairs_per_call']:.1f} | {r['requests_per_call']:.2f} |"
            )
    if "cross" in results and "single" in results:
        print()
        for a, b in zip(results["cross"], results["single"], strict=True):
            print(
                f"gain of cross-request batching at {a['concurrency']} clients: {a['docs_per_s'] / b['docs_per_s']:.2f}x"
            )
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
