"""What an experiment gives back: one :class:`SystemResult` per system, gathered in an
:class:`ExperimentResult` that writes runs, metrics, a report and plots."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from erank.datasets.formats import write_run
from erank.datasets.types import Run

__all__ = ["ExperimentResult", "SystemResult"]

logger = logging.getLogger(__name__)


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
