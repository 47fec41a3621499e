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

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from erank.datasets.types import Candidate, Collection, Run
from erank.errors import InputError
from erank.evaluation.cache import ScoreCache, reranker_identity
from erank.evaluation.metrics import DEFAULT_METRICS, evaluate_run, name_for_depth, p_mrr, p_mrr_per_query
from erank.evaluation.results import ExperimentResult, SystemResult
from erank.evaluation.runs import first_queries, hybrid_run, rerank_run
from erank.evaluation.significance import paired_tests
from erank.prompts import resolve_instruction
from erank.retrieval.first_stage import first_stage_run
from erank.types import Scorer

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
        # what every reranking run of this experiment shares
        settings: dict[str, Any] = {
            "top_k": self.top_k,
            "instruction": self.instruction,
            "truncate_length": self.truncate_length,
            "cache": self.cache,
            "chunk_size": self.chunk_size,
            "progress": self.progress,
        }
        for name, reranker in self.rerankers.items():
            run, latency, unparsed = rerank_run(coll, first, reranker, qids=qids, desc=name, **settings)
            row = self._evaluate(name, run, coll)
            row.latency, row.unparsed = latency, unparsed
            if coll.changed is not None and changed_first is not None:
                ch_run, _, _ = rerank_run(
                    coll.changed,
                    changed_first,
                    reranker,
                    qids=[q for q in qids if q in coll.changed.queries],
                    desc=f"{name} (changed)",
                    **settings,
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
