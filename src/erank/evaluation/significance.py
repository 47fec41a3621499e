"""Paired significance tests over per-query values (system versus baseline)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from erank.errors import require

__all__ = ["paired_tests"]


def paired_tests(
    system: Mapping[str, float], baseline: Mapping[str, float], *, permutations: int = 10000, seed: int = 0
) -> dict[str, Any]:
    """Paired tests over the queries both have: Student's paired t-test, Wilcoxon signed-rank and a
    two-sided randomisation (sign-flip permutation) test of the mean difference.

    Returns ``{"queries", "mean_delta", "t_p", "wilcoxon_p", "permutation_p"}``; a p-value is 1.0
    where every difference is zero (no evidence of a difference) and NaN with fewer than 2 queries.

    >>> r = paired_tests({"a": 0.5, "b": 0.7, "c": 0.9}, {"a": 0.4, "b": 0.5, "c": 0.6})
    >>> round(r["mean_delta"], 3), r["queries"]
    (0.2, 3)
    """
    np: Any = require("numpy", "eval")
    stats: Any = require("scipy.stats", "eval", "significance tests")
    qids = sorted(set(system) & set(baseline))
    out: dict[str, Any] = {"queries": len(qids)}
    a = np.array([system[q] for q in qids], dtype=float)
    b = np.array([baseline[q] for q in qids], dtype=float)
    d = a - b
    out["mean_delta"] = float(d.mean()) if len(qids) else math.nan
    if len(qids) < 2:
        out.update(t_p=math.nan, wilcoxon_p=math.nan, permutation_p=math.nan)
        return out
    if np.allclose(d, 0.0):
        out.update(t_p=1.0, wilcoxon_p=1.0, permutation_p=1.0)
        return out
    t = stats.ttest_rel(a, b)
    out["t_p"] = float(t.pvalue) if math.isfinite(float(t.pvalue)) else 1.0
    try:
        out["wilcoxon_p"] = float(stats.wilcoxon(a, b, zero_method="wilcox").pvalue)
    except ValueError:
        out["wilcoxon_p"] = 1.0
    rng = np.random.default_rng(seed)
    observed = abs(d.mean())
    signs = rng.choice(np.array([-1.0, 1.0]), size=(permutations, len(d)))
    perm_means = np.abs((signs * d).mean(axis=1))
    out["permutation_p"] = float((np.sum(perm_means >= observed - 1e-15) + 1) / (permutations + 1))
    return out
