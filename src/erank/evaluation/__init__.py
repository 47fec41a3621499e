"""Evaluation: metrics (ir_measures), p-MRR, the experiment runner, reports and plots.

>>> from erank.evaluation import Experiment, evaluate_reranker, evaluate_run   # doctest: +SKIP

Heavy modules (scipy, matplotlib, ir_measures) are imported when used.
"""

from __future__ import annotations

from erank.evaluation.cache import ScoreCache, reranker_identity
from erank.evaluation.experiment import (
    DEFAULT_SWEEP,
    Experiment,
    ExperimentResult,
    SystemResult,
    evaluate_reranker,
    hybrid_run,
    rerank_run,
)
from erank.evaluation.metrics import (
    DEFAULT_METRICS,
    apply_protocol,
    evaluate_run,
    p_mrr,
    p_mrr_per_query,
    parse_metric,
)
from erank.evaluation.significance import paired_tests

__all__ = [
    "DEFAULT_METRICS",
    "DEFAULT_SWEEP",
    "Experiment",
    "ExperimentResult",
    "SystemResult",
    "ScoreCache",
    "apply_protocol",
    "evaluate_reranker",
    "evaluate_run",
    "hybrid_run",
    "p_mrr",
    "p_mrr_per_query",
    "paired_tests",
    "parse_metric",
    "rerank_run",
    "reranker_identity",
]
