"""Issue 15's "done means" on real pairs, in one process, one run: erank against the plain fp32
forward and the peers, and the fraction of the bf16 ceiling.

Pairs: the first ``--queries`` TREC DL 2020 queries by id x their BM25 top ``--per-query``
passages (default 10 x 20 = 200), the ERank template of ``Reranker()`` (erank-smol's), instruction
``trec-dl``, documents truncated as ``Reranker()`` does by default (2048 tokens). Every row scores
the same pairs, one call per query, and is timed ``--repeats`` times, the order of the rows reversed
on every other repeat; the best time counts. Rows:

1. **baseline**: the plain fp32 batched forward a competent user writes. The same model folder
   (the dequantised SmolLM2, ``speed_common.default_dir()``) loaded with ``AutoModelForCausalLM``
   in float32, the same ERank prompt texts as erank builds them (chat template), tokenised per
   query, length-sorted batches of ``--batch`` (16), left padding with the attention mask and
   position ids, ``logits_to_keep=1``, log-softmax over the vocabulary, the score tokens gathered.
2. ``Reranker()``: the defaults (embedded erank-smol, ``dtype="auto"``, shared prefix on), its
   public ``score`` per query.
3. ``Reranker(dtype="float32")`` (bf16 apart from the rest), and ``Reranker()`` with the shared
   prefix off (``engine_kwargs={"share_prefix": False}``, the transformers engine's argument).
4. Peers on the base folder: one ``model.generate(max_new_tokens=1, output_scores=True)`` per
   document (the official example's way) on the baseline's fp32 model; sentence-transformers
   ``CrossEncoder`` (a score head on the same backbone; the ERank prompt as the passage, as in
   ``speed_peers.py``); FlagEmbedding ``FlagLLMReranker`` (its own prompt around the passages).
   A peer that cannot load or run is reported as such.
5. FLOPs and ceiling, for the baseline and each ``Reranker`` row: 2 x non-embedding parameters x
   the tokens actually run through the model (the engine's own counter: a shared prefix once per
   query, no padding; and, from a forward hook, the same with the padding computed), + the LM head
   at the positions it computes (the hook: rows x ``logits_to_keep``), against the fp32 and bf16
   matmul rates measured in the same run (``speed_common.matmul_gflops``); and each row's pairs/s
   against the full-prompt ceiling (every prompt token computed, no padding), where the shared
   prefix makes more than 100% possible. Attention's own products (QK^T, AV) are not counted.

Output: a markdown table on stdout; ``--json PATH`` writes the figures.

    flock /tmp/erank-heavy.lock .venv/bin/python benchmarks/speed_real.py --json speed_real.json
"""

from __future__ import annotations

import argparse
import inspect
import json
import logging
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

import speed_common as sc  # sets HF_HUB_OFFLINE and the transformers verbosity first
from bf16_fidelity import DATA, load_pairs

logger = logging.getLogger("speed_real")

#: (query, passages) per query
Queries = list[tuple[str, list[str]]]


class ForwardCounter:
    """Counts what a model's forward passes compute, from their inputs (a forward pre-hook): rows x
    width tokens (padding included) and rows x ``logits_to_keep`` positions through the LM head."""

    def __init__(self, model: Any) -> None:
        self.tokens = 0
        self.head = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is None:
            return
        rows, width = ids.shape
        keep = kwargs.get("logits_to_keep", 0)
        self.tokens += rows * width
        self.head += rows * (keep if isinstance(keep, int) and 0 < keep < width else width)


@dataclass
class Row:
    """One system: ``run(i)`` scores query ``i``'s pairs; the best time over the repeats counts."""

    name: str
    note: str
    run: Callable[[int], object]
    #: ``baseline``, ``erank`` or ``peer``
    kind: str = "peer"
    dtype: str = "float32"
    #: what the model's forward passes compute (baseline and ``Reranker`` rows)
    counter: ForwardCounter | None = None
    #: the engine whose counter says how many prompt tokens (no padding) went through the model
    engine: Any = None
    seconds: list[float] = field(default_factory=list)
    #: from the first timed run: tokens without padding, tokens computed (padding included),
    #: positions the LM head computed
    tokens_useful: int | None = None
    tokens_computed: int | None = None
    head_positions: int | None = None
    error: str | None = None

    @property
    def best(self) -> float | None:
        return min(self.seconds) if self.seconds and self.error is None else None


class PlainForward:
    """Row 1, the baseline: a plain fp32 batched forward over the ERank prompt texts."""

    def __init__(self, path: str, batch: int) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.tok = AutoTokenizer.from_pretrained(path)
        self.tok.padding_side = "left"
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        self.batch = batch
        # the first token of each score "0".."10" ("10" starts with "1")
        self.score_ids = sorted({self.tok.encode(str(s), add_special_tokens=False)[0] for s in range(11)})

    def encode(self, texts: list[str]) -> list[list[int]]:
        return [list(x) for x in self.tok(texts, add_special_tokens=False)["input_ids"]]

    @torch.inference_mode()
    def __call__(self, texts: list[str]) -> torch.Tensor:
        ids = self.encode(texts)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        out = torch.empty(len(ids), len(self.score_ids))
        for at in range(0, len(order), self.batch):
            rows = order[at : at + self.batch]
            enc = self.tok.pad({"input_ids": [ids[i] for i in rows]}, return_tensors="pt")
            pos = (enc["attention_mask"].cumsum(-1) - 1).clamp(min=0)
            logits = self.model(**enc, position_ids=pos, logits_to_keep=1, use_cache=False).logits[:, -1]
            out[rows] = torch.log_softmax(logits.float(), -1)[:, self.score_ids]
        return out


def reranker_row(name: str, note: str, queries: Queries, instruction: str, **kwargs: Any) -> tuple[Row, Any]:
    """A ``Reranker(**kwargs)`` row (its public ``score`` per query) and the reranker."""
    from erank import Reranker

    r = Reranker(**kwargs)
    row = Row(
        name,
        note,
        lambda i: r.score(queries[i][0], queries[i][1], instruction),
        kind="erank",
        dtype=str(getattr(r.engine, "dtype", "")).replace("torch.", ""),
        counter=ForwardCounter(r.engine.model),
        engine=r.engine,
    )
    return row, r


def erank_prompts(
    reranker: Any, queries: Queries, instruction: str
) -> tuple[list[list[str]], list[list[list[int]]]]:
    """Per query, the ERank prompt texts and token ids exactly as ``reranker.score`` builds them:
    its template and instruction, query and documents cut to ``score``'s default truncate length."""
    from erank import Reranker

    n = inspect.signature(Reranker.score).parameters["truncate_length"].default
    texts, ids = [], []
    for query, docs in queries:
        p = reranker.prepare(query, docs, instruction, n)
        q = reranker.method.truncate(p.query, n)[0]
        texts.append(
            [reranker.method.build_prompt(q, reranker.method.truncate(d, n)[0], p.instruction) for d in docs]
        )
        ids.append([list(u.payload) for u in p.units])
    return texts, ids


def peer_row(name: str, note: str, make: Callable[[], Callable[[int], object]]) -> Row:
    """A peer: ``make()`` loads it and returns its per-query call; a failure is kept as the row's error."""
    try:
        return Row(name, note, make())
    except Exception as exc:  # noqa: BLE001 - a peer that cannot load is reported, not fatal
        logger.warning("%s cannot load: %s: %s", name, type(exc).__name__, exc)
        row = Row(name, note, lambda i: None)
        row.error = f"cannot load: {type(exc).__name__}: {str(exc)[:200]}"
        return row


def time_rows(rows: list[Row], n_queries: int, repeats: int) -> None:
    for row in rows:  # warm-up: thread pools, first allocations
        if row.error is None:
            try:
                row.run(0)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row.error = f"cannot run: {type(exc).__name__}: {str(exc)[:200]}"
                logger.warning("%s %s", row.name, row.error)
    for rep in range(repeats):
        for row in rows if rep % 2 == 0 else list(reversed(rows)):
            if row.error is not None:
                continue
            c0 = (row.counter.tokens, row.counter.head) if row.counter else (0, 0)
            useful0 = row.engine.stats.prompt_tokens if row.engine is not None else 0
            try:
                start = time.perf_counter()
                for i in range(n_queries):
                    row.run(i)
                row.seconds.append(time.perf_counter() - start)
            except Exception as exc:  # noqa: BLE001 - reported in the table
                row.error = f"cannot run: {type(exc).__name__}: {str(exc)[:200]}"
                logger.warning("%s %s", row.name, row.error)
                continue
            if row.counter is not None and row.tokens_computed is None:
                row.tokens_computed, row.head_positions = row.counter.tokens - c0[0], row.counter.head - c0[1]
                if row.engine is not None:
                    row.tokens_useful = row.engine.stats.prompt_tokens - useful0
            logger.info("repeat %d/%d  %-45s %7.2f s", rep + 1, repeats, row.name, row.seconds[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DATA, help="DL20 BM25 top-100 (retrieve_results JSON)")
    ap.add_argument("--queries", type=int, default=10)
    ap.add_argument("--per-query", type=int, default=20, help="BM25 passages per query")
    ap.add_argument(
        "--repeats", type=int, default=3, help="timed runs per row, order reversed every other; best counts"
    )
    ap.add_argument("--batch", type=int, default=16, help="the baseline's (and the peers') batch size")
    ap.add_argument("--instruction", default="trec-dl")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--matmul-seconds", type=float, default=3.0, help="how long each matmul rate is measured")
    ap.add_argument(
        "--no-peers", action="store_true", help="skip row 4 (naive generate, CrossEncoder, FlagEmbedding)"
    )
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    for name in ("transformers", "httpx", "erank", "sentence_transformers", "FlagEmbedding"):
        logging.getLogger(name).setLevel(logging.WARNING)
    if not a.data.is_file():
        print(f"SKIPPED: the DL20 BM25 candidates are not at {a.data} (pass --data)", file=sys.stderr)
        return 0
    if a.threads:
        torch.set_num_threads(a.threads)

    from erank.engines.precision import cpu_has_bf16

    loaded = load_pairs(a.data, a.queries, a.per_query)
    queries: Queries = [(q, docs) for _, q, docs, _ in loaded]
    n_pairs = sum(len(d) for _, d in queries)
    path = str(sc.default_dir())
    logger.info(
        "%d queries x up to %d BM25 passages = %d pairs (TREC DL 2020); torch threads %d; CPU bf16 units: %s",
        len(queries), a.per_query, n_pairs, torch.get_num_threads(), cpu_has_bf16(),
    )  # fmt: skip

    default, reranker = reranker_row(
        "Reranker()", "defaults: dtype auto, shared prefix on", queries, a.instruction
    )
    texts, prompt_ids = erank_prompts(reranker, queries, a.instruction)
    full_tokens = sum(len(ids) for q in prompt_ids for ids in q)

    plain = PlainForward(path, a.batch)
    same = all(plain.encode(t) == ids for t, ids in zip(texts, prompt_ids, strict=True))
    logger.info("baseline prompts tokenise to erank's own prompt ids: %s", same)
    baseline = Row(
        "baseline: plain fp32 batched forward",
        f"AutoModelForCausalLM fp32, chat template, length-sorted batches of {a.batch}, left padding, "
        "logits_to_keep=1",
        lambda i: plain(texts[i]),
        kind="baseline",
        counter=ForwardCounter(plain.model),
    )
    rows = [
        baseline,
        default,
        reranker_row(
            "Reranker(dtype='float32')", "fp32, shared prefix on", queries, a.instruction, dtype="float32"
        )[0],
        reranker_row(
            "Reranker(), shared prefix off",
            "engine_kwargs={'share_prefix': False}",
            queries,
            a.instruction,
            engine_kwargs={"share_prefix": False},
        )[0],
    ]
    if not a.no_peers:
        rows += peers(path, plain, queries, texts, a.batch, max(len(ids) for q in prompt_ids for ids in q))

    time_rows(rows, len(queries), a.repeats)
    logger.info("measuring the matmul rates (%.0f s each)", a.matmul_seconds)
    rates = {
        "float32": sc.matmul_gflops(a.matmul_seconds, dtype=torch.float32),
        "bfloat16": sc.matmul_gflops(a.matmul_seconds, dtype=torch.bfloat16),
    }
    model = default.engine.model
    body = 2 * sc.non_embedding_params(model)  # FLOPs per token through the layers
    head = 2 * model.get_output_embeddings().weight.numel()  # FLOPs per position through the LM head
    # the full-prompt ceiling: every prompt token computed, no padding, 2 positions read per pair
    full_flops = body * full_tokens + head * 2 * n_pairs
    baseline.tokens_useful = full_tokens
    figures = [row_figures(row, baseline.best, n_pairs, full_flops, body, head, rates) for row in rows]
    ceiling_pairs = rates["bfloat16"] * 1e9 / (full_flops / n_pairs)
    summary: dict[str, Any] = {
        "date_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "machine": {"cpu": platform.processor() or platform.machine(), "cpu_bf16_units": cpu_has_bf16()},
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "queries": len(queries),
        "pairs": n_pairs,
        "repeats": a.repeats,
        "instruction": a.instruction,
        "baseline_prompts_equal_erank_ids": same,
        "full_prompt_tokens": full_tokens,
        "mean_prompt_tokens": full_tokens / n_pairs,
        "non_embedding_params": body // 2,
        "matmul_gflops": rates,
        "full_prompt_ceiling_pairs_per_s_bf16": ceiling_pairs,
        "full_prompt_ceiling_pairs_per_s_fp32": rates["float32"] * 1e9 / (full_flops / n_pairs),
        "rows": figures,
    }
    print_tables(summary)
    if a.json:
        a.json.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    return 0


def row_figures(
    row: Row,
    base_s: float | None,
    n_pairs: int,
    full_flops: float,
    body: int,
    head: int,
    rates: dict[str, float],
) -> dict[str, Any]:
    """One row's figures: pairs/s, the ratio to the baseline, and (where its forward passes were
    counted) the FLOPs it computed against the matmul rates."""
    fig: dict[str, Any] = {
        "name": row.name,
        "kind": row.kind,
        "note": row.note,
        "dtype": row.dtype,
        "seconds": row.seconds,
    }
    best = row.best
    if best is None:
        fig["error"] = row.error or "not timed"
        return fig
    fig["pairs_per_s"] = n_pairs / best
    fig["vs_baseline"] = base_s / best if base_s else None
    # pairs/s against the full-prompt ceiling (> 100% possible with a shared prefix)
    fig["full_prompt_ceiling_fraction_bf16"] = full_flops / best / 1e9 / rates["bfloat16"]
    fig["full_prompt_ceiling_fraction_fp32"] = full_flops / best / 1e9 / rates["float32"]
    if row.tokens_computed is not None and row.head_positions is not None and row.tokens_useful is not None:
        useful = body * row.tokens_useful + head * row.head_positions
        computed = body * row.tokens_computed + head * row.head_positions
        own = rates.get(row.dtype, rates["float32"])
        fig.update(
            tokens_useful=row.tokens_useful,
            tokens_computed=row.tokens_computed,
            padding_share=1 - row.tokens_useful / row.tokens_computed,
            head_positions=row.head_positions,
            gflop_useful=useful / 1e9,
            gflop_computed=computed / 1e9,
            achieved_gflops_useful=useful / best / 1e9,
            achieved_gflops_computed=computed / best / 1e9,
            fraction_of_bf16_ceiling_useful=useful / best / 1e9 / rates["bfloat16"],
            fraction_of_bf16_ceiling_computed=computed / best / 1e9 / rates["bfloat16"],
            fraction_of_own_dtype_ceiling_useful=useful / best / 1e9 / own,
        )
    return fig


def peers(
    path: str, plain: PlainForward, queries: Queries, texts: list[list[str]], batch: int, longest: int
) -> list[Row]:
    """Row 4: the peers on the base folder, each called once per query (``speed_common``'s loaders)."""

    def naive() -> Callable[[int], object]:
        return lambda i: sc.naive_generate(plain.model, plain.tok, texts[i])

    def cross() -> Callable[[int], object]:
        ce = sc.cross_encoder(path, longest + 64)
        return lambda i: ce.predict([(queries[i][0], t) for t in texts[i]], batch_size=batch)

    def flag() -> Callable[[int], object]:
        fr = sc.flag_llm_reranker(path, batch, longest + 128)
        return lambda i: fr.compute_score([[queries[i][0], d] for d in queries[i][1]])

    return [
        peer_row(
            "naive: one generate() per document", "the official example's way, 1 new token, fp32", naive
        ),
        peer_row(
            "sentence-transformers CrossEncoder",
            "score head on the same backbone, ERank prompt as passage",
            cross,
        ),
        peer_row(
            "FlagEmbedding FlagLLMReranker", "its own yes/no prompt around the same passages, fp32", flag
        ),
    ]


def _f(x: float | None, fmt: str) -> str:
    return "n/a" if x is None else format(x, fmt)


def print_tables(s: dict[str, Any]) -> None:
    """The figures as markdown: the speed table, then FLOPs and the ceiling."""
    rates = s["matmul_gflops"]
    print(
        f"\n{s['pairs']} real pairs ({s['queries']} TREC DL 2020 queries x BM25 top passages, ERank template, "
        f"instruction {s['instruction']}), {s['mean_prompt_tokens']:.0f} prompt tokens per pair on average; "
        f"torch {s['torch']}, {s['threads']} threads, best of {s['repeats']} (order reversed every other); "
        f"{s['date_utc']} UTC, this machine's absolute figures\n"
    )
    print("| system | pairs/s | vs baseline | how |")
    print("|---|---|---|---|")
    for r in s["rows"]:
        if "error" in r:
            print(f"| {r['name']} | n/a | n/a | {r['note']}; {r['error']} |")
        else:
            print(f"| {r['name']} | {r['pairs_per_s']:.2f} | {_f(r['vs_baseline'], '.2f')}x | {r['note']} |")
    print(
        f"\nmatmul rates (1024 x 1024 @ 1024 x 4096, same run): fp32 {rates['float32']:.1f} GFLOP/s, "
        f"bf16 {rates['bfloat16']:.1f} GFLOP/s ({rates['bfloat16'] / rates['float32']:.2f}x). "
        f"{s['non_embedding_params'] / 1e6:.1f}M non-embedding parameters. Full-prompt ceiling "
        f"(every prompt token computed): {s['full_prompt_ceiling_pairs_per_s_bf16']:.2f} pairs/s at the bf16 "
        f"rate, {s['full_prompt_ceiling_pairs_per_s_fp32']:.2f} at the fp32 rate.\n"
    )
    print(
        "| system | dtype | tokens per pair: prompt run (+ padding) | GFLOP: useful (with padding) "
        "| achieved GFLOP/s, useful | of its dtype's matmul rate | of the bf16 rate: useful (with padding) "
        "| pairs/s vs full-prompt bf16 ceiling |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in s["rows"]:
        if "gflop_useful" not in r:
            continue
        n = s["pairs"]
        print(
            f"| {r['name']} | {r['dtype']} | {r['tokens_useful'] / n:.0f} ({r['tokens_computed'] / n:.0f}) "
            f"| {r['gflop_useful']:.0f} ({r['gflop_computed']:.0f}) | {r['achieved_gflops_useful']:.1f} "
            f"| {r['fraction_of_own_dtype_ceiling_useful']:.0%} | {r['fraction_of_bf16_ceiling_useful']:.0%} "
            f"({r['fraction_of_bf16_ceiling_computed']:.0%}) | {r['full_prompt_ceiling_fraction_bf16']:.0%} |"
        )


if __name__ == "__main__":
    sys.exit(main())
