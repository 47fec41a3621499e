"""The experiment: several rerankers (and the first stage itself) over one collection.

In the spirit of ``pyterrier.Experiment``: one table of metrics, paired significance tests against a
baseline, per-query results, hybrid fusion with the first stage and an alpha sweep, latency per query
and pairs per second. Long runs show progress on stderr and resume from a score cache.

>>> from erank import Reranker                                            # doctest: +SKIP
>>> from erank.datasets import load_collection                            # doctest: +SKIP
>>> from erank.evaluation import Experiment                               # doctest: +SKIP
>>> dl20 = load_collection("../shared/data/trec-dl20-passage")            # doctest: +SKIP
>>> exp = Experiment(dl20, {"erank-135m": Reranker()}, first_stage="BM25", top_k=20, queries=5)  # doctest: +SKIP
>>> result = exp.run()                                                    # doctest: +SKIP
>>> result.write("out/dl20")        # runs, metrics.json, report.md, plots  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erank.datasets.formats import write_run
from erank.datasets.types import Candidate, Collection, Run
from erank.errors import InputError
from erank.evaluation.cache import ScoreCache, reranker_identity
from erank.evaluation.metrics import DEFAULT_METRICS, evaluate_run, name_for_depth, p_mrr, p_mrr_per_query
from erank.evaluation.significance import paired_tests
from erank.progress import progress_bar
from erank.prompts import resolve_instruction
from erank.retrieval.first_stage import FirstStageReranker, first_stage_run
from erank.scoring import hybrid_scores
from erank.types import Scorer, ranking_from_scores

__all__ = [
    "Experiment",
    "ExperimentResult",
    "SystemResult",
    "evaluate_reranker",
    "rerank_run",
    "hybrid_run",
    "first_queries",
    "DEFAULT_SWEEP",
]

logger = logging.getLogger(__name__)

DEFAULT_SWEEP = tuple(round(0.1 * i, 1) for i in range(11))


@dataclass
class SystemResult:
    """One row of an experiment: a run, its metrics (aggregate and per query) and its cost."""

    name: str
    run: Run
    aggregate: dict[str, float]
    per_query: dict[str, dict[str, float]]
    latency: dict[str, float] = field(default_factory=dict)
    unparsed: int = 0
    p_mrr: float | None = None
    p_mrr_per_query: dict[str, float] | None = None

    def as_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "name": self.name,
            **self.aggregate,
            "latency": self.latency,
            "unparsed": self.unparsed,
        }
        if self.p_mrr is not None:
            d["p-MRR"] = self.p_mrr
        return d


@dataclass
class ExperimentResult:
    """Everything an experiment produced; :meth:`write` saves it."""

    collection: str
    first_stage: str
    top_k: int
    metrics: list[str]
    systems: list[SystemResult]
    baseline: str
    significance: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    alpha_sweep: dict[str, dict[float, float]] = field(default_factory=dict)
    queries: list[str] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)

    def system(self, name: str) -> SystemResult:
        for s in self.systems:
            if s.name == name:
                return s
        raise KeyError(f"no system {name!r}; have {[s.name for s in self.systems]}")

    def table(self) -> list[dict[str, Any]]:
        """One dict per system: metrics, delta and p-values against the baseline, latency."""
        rows = []
        main = self.metrics[0]
        for s in self.systems:
            row: dict[str, Any] = {"system": s.name, **{m: s.aggregate[m] for m in self.metrics}}
            if s.p_mrr is not None:
                row["p-MRR"] = s.p_mrr
            sig = self.significance.get(s.name, {}).get(main)
            if sig:
                row[f"delta {main}"] = sig["mean_delta"]
                row["p (t-test)"] = sig["t_p"]
                row["p (permutation)"] = sig["permutation_p"]
            row["s/query"] = s.latency.get("seconds_per_query", 0.0)
            row["pairs/s"] = s.latency.get("pairs_per_second", 0.0)
            rows.append(row)
        return rows

    def to_json(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "first_stage": self.first_stage,
            "top_k": self.top_k,
            "metrics": self.metrics,
            "baseline": self.baseline,
            "queries": len(self.queries),
            "settings": self.settings,
            "systems": {s.name: s.as_dict() for s in self.systems},
            "significance": self.significance,
            "alpha_sweep": {k: {str(a): v for a, v in sw.items()} for k, sw in self.alpha_sweep.items()},
        }

    def write(self, out_dir: str | os.PathLike[str], *, plots: bool = True) -> Path:
        """Write ``runs/<system>.run``, ``metrics.json``, ``per_query.tsv``, ``report.md`` and plots."""
        from erank.evaluation.report import write_plots, write_report

        out = Path(out_dir)
        (out / "runs").mkdir(parents=True, exist_ok=True)
        for s in self.systems:
            write_run(s.run, out / "runs" / f"{_safe(s.name)}.run", tag=_safe(s.name))
        (out / "metrics.json").write_text(json.dumps(self.to_json(), indent=2, default=_json_default) + "\n")
        with open(out / "per_query.tsv", "w", encoding="utf-8") as fh:
            fh.write("system\tmetric\tqid\tvalue\n")
            for s in self.systems:
                for m, vals in s.per_query.items():
                    for q, v in sorted(vals.items()):
                        fh.write(f"{s.name}\t{m}\t{q}\t{v:.6f}\n")
        plot_files = write_plots(self, out) if plots else []
        write_report(self, out, plot_files)
        return out


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    return str(o)


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in name)


def first_queries(qids: Sequence[str], n: int | None) -> list[str]:
    """The first ``n`` of ``qids`` by id, whatever order a file lists them in: numeric ids in
    numeric order, then the others alphabetically (:func:`erank.batch.rows.qid_sort_key`, the order
    of batch run files too). What ``--queries N`` means in every command; ``None``: all of them."""
    from erank.batch.rows import qid_sort_key

    ordered = sorted(qids, key=qid_sort_key)
    return ordered if n is None else ordered[:n]


def _is_pointwise(reranker: Scorer) -> bool:
    """Whether a document's score is independent of the others: then scores are cached per
    document and computed in chunks (a killed run loses at most one chunk); otherwise per query.

    Decided by the scorer's ``pointwise`` (:attr:`erank.Reranker.pointwise`, which is
    :attr:`erank.methods.Method.pointwise`); a scorer that does not say is treated as listwise.
    """
    flag = getattr(reranker, "pointwise", None)
    if isinstance(flag, bool):
        return flag
    method = getattr(reranker, "method", None)
    flag = getattr(method, "pointwise", None)
    return flag if isinstance(flag, bool) else False


def rerank_run(
    collection: Collection,
    candidates: Mapping[str, Sequence[Candidate]],
    reranker: Scorer,
    *,
    qids: Sequence[str] | None = None,
    top_k: int = 100,
    instruction: str | None = None,
    truncate_length: int | None = 2048,
    cache: ScoreCache | None = None,
    chunk_size: int = 10,
    progress: bool = False,
    desc: str = "rerank",
) -> tuple[Run, dict[str, float], int]:
    """Rerank the top ``top_k`` candidates of every query with ``reranker``.

    ``reranker`` is a :class:`~erank.types.Scorer` (an :class:`erank.Reranker` or
    :class:`~erank.retrieval.FirstStageReranker`): its ``identity()`` keys the cache and its
    ``pointwise`` decides whether scores are cached per document or per query.
    Returns ``(run, latency, unparsed)``; ``latency`` has ``seconds_per_query``, ``pairs_per_second``,
    ``pairs``, ``computed_pairs``, ``cached_pairs``, ``seconds`` (model time, cached pairs included at
    the time they took when computed) and ``wall_seconds`` (this call).
    """
    wall = time.perf_counter()
    instr = resolve_instruction(instruction if instruction is not None else collection.instruction, "beir")
    ident = reranker_identity(reranker)
    pointwise = _is_pointwise(reranker)
    is_first = isinstance(reranker, FirstStageReranker)
    qids = list(qids) if qids is not None else [q for q in collection.queries if q in candidates]
    run: Run = {}
    total_seconds = 0.0
    pairs = computed = cached_n = unparsed = 0
    total_pairs = sum(len(list(candidates.get(q, []))[:top_k]) for q in qids)
    # One bar per system, counting (query, document) pairs: rich, with an ETA, on a terminal only.
    with progress_bar(total_pairs, desc, unit="pairs", enabled=None if progress else False) as bar:
        for qid in qids:
            query = collection.queries[qid]
            cands = list(candidates.get(qid, []))[:top_k]
            if not cands:
                run[qid] = []
                continue
            texts = [collection.corpus.get(c.docid, c.text if c.text is not None else "") for c in cands]
            docs: list[dict[str, Any]] = [
                {"content": t, "id": c.docid, "first_stage_score": float(c.score)}
                for c, t in zip(cands, texts, strict=True)
            ]
            if is_first:
                scores = [float(c.score) for c in cands]
                run[qid] = [Candidate(cands[i].docid, scores[i]) for i in ranking_from_scores(scores)]
                pairs += len(cands)
                bar.advance(len(cands))
                continue
            context = (
                "" if pointwise else hashlib.sha256("\x00".join(c.docid for c in cands).encode()).hexdigest()
            )
            keys = [ScoreCache.key(ident, instr, truncate_length, query, t, context) for t in texts]
            got = cache.get_many(keys) if cache is not None else {}
            values: list[float | None] = [got[k][0] if k in got else None for k in keys]
            secs = [got[k][1] if k in got else 0.0 for k in keys]
            cached_n += sum(v is not None for v in values)
            bar.advance(sum(v is not None for v in values))
            missing = [i for i, v in enumerate(values) if v is None]
            if missing and not pointwise:
                missing = list(range(len(docs)))  # the whole list is one unit
            step = chunk_size if pointwise else max(1, len(missing))
            for start in range(0, len(missing), step):
                idx = missing[start : start + step]
                t0 = time.perf_counter()
                res = reranker.score(query, [docs[i] for i in idx], instr, truncate_length)
                dt = time.perf_counter() - t0
                if len(res.scores) != len(idx):
                    raise InputError(f"reranker returned {len(res.scores)} scores for {len(idx)} documents")
                unparsed += int(getattr(res.usage, "unparsed", 0) or 0)
                rows = []
                for j, i in enumerate(idx):
                    sc = float(res.scores[j].score)
                    values[i] = sc
                    secs[i] = dt / len(idx)
                    rows.append((keys[i], sc, dt / len(idx)))
                computed += len(idx)
                bar.advance(len(idx))
                if cache is not None:
                    cache.put_many(rows)
            final = [float(v) if v is not None else 0.0 for v in values]
            total_seconds += sum(secs)
            pairs += len(cands)
            run[qid] = [Candidate(cands[i].docid, final[i]) for i in ranking_from_scores(final)]
    n_q = max(1, sum(1 for q in run if run[q]))
    latency = {
        "queries": float(len(run)),
        "pairs": float(pairs),
        "computed_pairs": float(computed),
        "cached_pairs": float(cached_n),
        "seconds": total_seconds,
        "seconds_per_query": total_seconds / n_q,
        "pairs_per_second": pairs / total_seconds if total_seconds > 0 else 0.0,
        "wall_seconds": time.perf_counter() - wall,
    }
    return run, latency, unparsed


def hybrid_run(first: Mapping[str, Sequence[Candidate]], reranked: Run, alpha: float) -> Run:
    """Fuse a reranked run with the first-stage scores (spec 2.4) through :func:`erank.scoring.hybrid_scores`."""
    out: Run = {}
    for qid, cands in reranked.items():
        fs = {c.docid: c.score for c in first.get(qid, [])}
        rows = [
            {"content": "", "id": c.docid, "first_stage_score": fs[c.docid], "rank_score": c.score}
            for c in cands
        ]
        fused = hybrid_scores(rows, alpha=alpha)
        out[qid] = [Candidate(r["id"], float(r["hybrid_score"])) for r in fused]
    return out


class Experiment:
    """Compare rerankers (and the first stage) on one collection.

    Args:
        collection: a :class:`~erank.datasets.Collection`.
        rerankers: ``{name: reranker}`` (or a list; names from ``repr``). A reranker is anything with
            ``score(query, docs, instruction, truncate_length) -> RerankResult``.
        first_stage: ``"bm25"``, ``"dense"``, a shipped candidate list name, a file, or a run.
        top_k: candidates reranked per query.
        metrics: names (``nDCG@10``, ``MAP``, ``MRR@10``, ``R@100``...); the first drives the
            significance tests and the alpha sweep.
        alphas: hybrid rows added per reranker (``name+hybrid@alpha``); ``()`` for none.
        sweep: the alpha grid of the sweep plot (``None`` for the default 0, 0.1 .. 1; ``()`` off).
        baseline: the system the tests compare against (default: the first stage).
        queries: the first N judged queries by id (:func:`first_queries`), or a list of query ids (default: all judged ones).
        instruction: the task instruction (name or text); default: the collection's.
        cache: a score cache file (SQLite) or ``None``; the CLI puts it in the output folder.
        progress: show a progress bar on stderr.
    """

    def __init__(
        self,
        collection: Collection,
        rerankers: Mapping[str, Scorer] | Sequence[Scorer],
        *,
        first_stage: str | os.PathLike[str] | Mapping[str, Sequence[Candidate]] = "bm25",
        first_stage_name: str | None = None,
        top_k: int = 100,
        metrics: Sequence[str] = DEFAULT_METRICS,
        alphas: Sequence[float] = (0.2,),
        sweep: Sequence[float] | None = None,
        baseline: str | None = None,
        queries: int | Sequence[str] | None = None,
        instruction: str | None = None,
        truncate_length: int | None = 2048,
        cache: str | os.PathLike[str] | ScoreCache | None = None,
        chunk_size: int = 10,
        significance_permutations: int = 10000,
        progress: bool = True,
    ) -> None:
        if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k <= 0:
            raise InputError(f"top_k must be a positive integer, got {top_k!r}")
        if not metrics:
            raise InputError("give at least one metric")
        for a in alphas:
            if not 0.0 <= float(a) <= 1.0:
                raise InputError(f"alpha must be between 0 and 1, got {a}")
        self.collection = collection
        if isinstance(rerankers, Mapping):
            self.rerankers: dict[str, Scorer] = dict(rerankers)
        else:
            self.rerankers = {}
            for r in rerankers:
                name = f"{getattr(r, 'model_name', type(r).__name__)}"
                mode = getattr(r, "mode", "")
                self.rerankers[f"{name}-{mode}" if mode else name] = r
        self.first_stage = first_stage
        if isinstance(first_stage, Mapping):
            self.first_stage_name = first_stage_name or "first-stage"
        else:
            self.first_stage_name = first_stage_name or Path(str(first_stage)).name.split(".")[0]
        if self.first_stage_name in self.rerankers:
            raise InputError(
                f"a reranker is named like the first stage ({self.first_stage_name!r}); rename it"
            )
        self.top_k = top_k
        # Recall beyond the reranked depth is recall at the depth: name it so (R@100 -> R@20).
        self.metrics = list(dict.fromkeys(name_for_depth(m, top_k) for m in metrics))
        if self.metrics != list(metrics):
            logger.info("metrics over top-%d lists: %s", top_k, ", ".join(self.metrics))
        self.alphas = [float(a) for a in alphas]
        self.sweep = DEFAULT_SWEEP if sweep is None else tuple(float(a) for a in sweep)
        self.baseline = baseline or self.first_stage_name
        self.queries = queries
        self.instruction = instruction
        self.truncate_length = truncate_length
        self.cache = cache if isinstance(cache, ScoreCache) or cache is None else ScoreCache(Path(cache))
        self.chunk_size = chunk_size
        self.permutations = significance_permutations
        self.progress = progress

    def _candidates(self) -> Run:
        if isinstance(self.first_stage, Mapping):
            return {q: list(c) for q, c in self.first_stage.items()}
        return first_stage_run(self.collection, self.first_stage, k=max(self.top_k, 100))

    def _qids(self, candidates: Run) -> list[str]:
        judged = [q for q in self.collection.judged_queries if q in candidates]
        if not judged:
            raise InputError(
                f"no judged query of {self.collection.name} has candidates: check that the first stage's query ids "
                "match the collection's"
            )
        if self.queries is None:
            return judged
        if isinstance(self.queries, int):
            if self.queries <= 0:
                raise InputError(f"queries must be a positive number, got {self.queries}")
            return first_queries(judged, self.queries)
        unknown = [q for q in self.queries if q not in candidates or q not in self.collection.queries]
        if unknown:
            raise InputError(f"query ids without text or candidates: {unknown[:5]}")
        return list(self.queries)

    def _evaluate(self, name: str, run: Run, collection: Collection) -> SystemResult:
        ev = evaluate_run(
            run,
            collection.qrels,
            self.metrics,
            relevance_level=collection.relevance_level,
            beir_rule=collection.beir_rule,
            excluded_ids=collection.excluded_ids,
        )
        return SystemResult(name, run, ev["aggregate"], ev["per_query"])

    def run(self) -> ExperimentResult:
        """Run every system, evaluate, test against the baseline, sweep alpha."""
        coll = self.collection
        candidates = self._candidates()
        qids = self._qids(candidates)
        first = {q: candidates[q][: self.top_k] for q in qids}
        systems: list[SystemResult] = []
        fs_row = self._evaluate(self.first_stage_name, first, coll)
        systems.append(fs_row)
        changed_first = None
        if coll.changed is not None:
            fs_row.p_mrr = 0.0  # the same candidates under both instructions
            changed_first = first
        sweep: dict[str, dict[float, float]] = {}
        main = self.metrics[0]
        for name, reranker in self.rerankers.items():
            run, latency, unparsed = rerank_run(
                coll,
                first,
                reranker,
                qids=qids,
                top_k=self.top_k,
                instruction=self.instruction,
                truncate_length=self.truncate_length,
                cache=self.cache,
                chunk_size=self.chunk_size,
                progress=self.progress,
                desc=name,
            )
            row = self._evaluate(name, run, coll)
            row.latency, row.unparsed = latency, unparsed
            if coll.changed is not None and changed_first is not None:
                ch_run, _, _ = rerank_run(
                    coll.changed,
                    changed_first,
                    reranker,
                    qids=[q for q in qids if q in coll.changed.queries],
                    top_k=self.top_k,
                    instruction=self.instruction,
                    truncate_length=self.truncate_length,
                    cache=self.cache,
                    chunk_size=self.chunk_size,
                    progress=self.progress,
                    desc=f"{name} (changed)",
                )
                row.p_mrr = p_mrr(run, ch_run, coll.qrels, coll.changed.qrels)
                row.p_mrr_per_query = p_mrr_per_query(run, ch_run, coll.qrels, coll.changed.qrels)
            systems.append(row)
            for alpha in self.alphas:
                h = self._evaluate(f"{name}+hybrid@{alpha:g}", hybrid_run(first, run, alpha), coll)
                h.latency = dict(latency)
                systems.append(h)
            if self.sweep:
                sweep[name] = {
                    a: self._evaluate("sweep", hybrid_run(first, run, a), coll).aggregate[main]
                    for a in self.sweep
                }
        names = [s.name for s in systems]
        if self.baseline not in names:
            raise InputError(f"baseline {self.baseline!r} is not a system; systems: {names}")
        base = systems[names.index(self.baseline)]
        significance: dict[str, dict[str, dict[str, Any]]] = {}
        for s in systems:
            if s.name == base.name:
                continue
            significance[s.name] = {
                m: paired_tests(s.per_query[m], base.per_query[m], permutations=self.permutations)
                for m in self.metrics
            }
        settings = {
            "instruction": resolve_instruction(
                self.instruction if self.instruction is not None else coll.instruction
            ),
            "truncate_length": self.truncate_length,
            "relevance_level": coll.relevance_level,
            "beir_rule": coll.beir_rule,
            "rerankers": {n: reranker_identity(r) for n, r in self.rerankers.items()},
            "load_stats": coll.stats.as_dict(),
        }
        return ExperimentResult(
            collection=coll.name,
            first_stage=self.first_stage_name,
            top_k=self.top_k,
            metrics=self.metrics,
            systems=systems,
            baseline=self.baseline,
            significance=significance,
            alpha_sweep=sweep,
            queries=qids,
            settings=settings,
        )


def evaluate_reranker(
    collection: Collection,
    reranker: Scorer,
    *,
    first_stage: str | os.PathLike[str] | Mapping[str, Sequence[Candidate]] = "bm25",
    top_k: int = 100,
    metrics: Sequence[str] = DEFAULT_METRICS,
    queries: int | Sequence[str] | None = None,
    instruction: str | None = None,
    truncate_length: int | None = 2048,
    cache: str | os.PathLike[str] | ScoreCache | None = None,
    progress: bool = False,
) -> SystemResult:
    """Rerank ``collection``'s candidates with one reranker; return its run, metrics and latency.

    The function another benchmark calls: the reranker is a :class:`~erank.types.Scorer`,
    ``score(query, docs, instruction, truncate_length) -> RerankResult`` with ``identity()`` and
    ``pointwise``.

    >>> from erank import Reranker                                          # doctest: +SKIP
    >>> from erank.datasets import load_collection                          # doctest: +SKIP
    >>> dl20 = load_collection("../shared/data/trec-dl20-passage")          # doctest: +SKIP
    >>> r = evaluate_reranker(dl20, Reranker(), first_stage="BM25", top_k=20, queries=3)  # doctest: +SKIP
    >>> r.aggregate["nDCG@10"], r.latency["pairs_per_second"]               # doctest: +SKIP
    """
    exp = Experiment(
        collection,
        {"reranker": reranker},
        first_stage=first_stage,
        top_k=top_k,
        metrics=metrics,
        alphas=(),
        sweep=(),
        queries=queries,
        instruction=instruction,
        truncate_length=truncate_length,
        cache=cache,
        progress=progress,
    )
    return exp.run().system("reranker")
