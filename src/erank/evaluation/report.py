"""The Markdown report and the plots of an experiment (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from erank.errors import MissingExtraError

if TYPE_CHECKING:
    from erank.evaluation.experiment import ExperimentResult

__all__ = ["markdown_table", "write_report", "write_plots"]

logger = logging.getLogger(__name__)


def _fmt(v: Any, digits: int = 4) -> str:
    if isinstance(v, float):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}f}"
    return str(v)


def markdown_table(result: ExperimentResult) -> str:
    """The results table: metrics, delta and p-values of the first metric, cost per query.

    A dagger marks p < 0.05 in the paired t-test against the baseline.
    """
    rows = result.table()
    main = result.metrics[0]
    cols = ["system", *result.metrics]
    if any("p-MRR" in r for r in rows):
        cols.append("p-MRR")
    cols += [f"delta {main}", "p (t-test)", "p (permutation)", "s/query", "pairs/s"]
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            if c == main and r.get("p (t-test)", 1.0) < 0.05:
                cells.append(_fmt(v) + " †")
            elif c in ("s/query", "pairs/s"):
                cells.append(_fmt(v, 2) if v else "–")
            elif c.startswith("p ("):
                cells.append(_fmt(v, 3) if v != "" else "")
            else:
                cells.append(_fmt(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_report(result: ExperimentResult, out: Path, plot_files: list[Path]) -> Path:
    lines = [
        f"# {result.collection}: reranking the {result.first_stage} top-{result.top_k}",
        "",
        f"{len(result.queries)} judged queries; baseline for the tests: `{result.baseline}` "
        "(paired t-test, Wilcoxon signed-rank and randomisation tests over per-query values; † p < 0.05 in the t-test).",
        f"Instruction: `{result.settings.get('instruction', '')}`; truncate_length "
        f"{result.settings.get('truncate_length')}; binary measures count grade >= "
        f"{result.settings.get('relevance_level', 1)} as relevant"
        + (
            "; BEIR rule on (a document whose id equals the query id is ignored)"
            if result.settings.get("beir_rule")
            else ""
        )
        + ".",
        "",
        markdown_table(result),
        "",
    ]
    cost = [s for s in result.systems if s.latency.get("pairs")]
    if cost:
        lines += [
            "## Cost",
            "",
            "| system | pairs | computed | from cache | model s | s/query | pairs/s | unparsed |",
        ]
        lines.append("|---|---|---|---|---|---|---|---|")
        for s in cost:
            la = s.latency
            lines.append(
                f"| {s.name} | {int(la['pairs'])} | {int(la['computed_pairs'])} | {int(la['cached_pairs'])} | "
                f"{la['seconds']:.1f} | {la['seconds_per_query']:.2f} | {la['pairs_per_second']:.2f} | {s.unparsed} |"
            )
        lines.append("")
    if result.alpha_sweep:
        alphas = sorted({a for sw in result.alpha_sweep.values() for a in sw})
        lines += [f"## Hybrid alpha sweep ({result.metrics[0]})", ""]
        lines.append("| reranker | " + " | ".join(f"{a:g}" for a in alphas) + " |")
        lines.append("|---|" + "|".join("---" for _ in alphas) + "|")
        for name, sw in result.alpha_sweep.items():
            lines.append(f"| {name} | " + " | ".join(_fmt(sw.get(a, math.nan)) for a in alphas) + " |")
        lines.append("")
        lines.append(
            "alpha = 0 is the reranker alone, alpha = 1 the first stage alone (z-score fusion, spec 2.4)."
        )
        lines.append("")
    if plot_files:
        lines += ["## Plots", ""]
        lines += [f"![{p.stem}]({p.relative_to(out)})" for p in plot_files]
        lines.append("")
    lines += [
        "Files: `runs/*.run` (TREC runs, strictly decreasing scores), `metrics.json`, `per_query.tsv`.",
        "",
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def write_plots(result: ExperimentResult, out: Path) -> list[Path]:
    """Per-query delta of each reranker versus the first stage, and the metric against alpha."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MissingExtraError("matplotlib", "eval", "plots") from exc
    (out / "plots").mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    main = result.metrics[0]
    base = result.system(result.first_stage)
    for s in result.systems:
        if s.name == base.name or "+hybrid@" in s.name:
            continue
        deltas = sorted(
            (s.per_query[main][q] - base.per_query[main].get(q, 0.0) for q in s.per_query[main]), reverse=True
        )
        fig, ax = plt.subplots(figsize=(7, 3.2))
        ax.bar(range(len(deltas)), deltas, color=["tab:green" if d >= 0 else "tab:red" for d in deltas])
        ax.axhline(0, color="black", linewidth=0.8)
        ax.set_xlabel("query (sorted by delta)")
        ax.set_ylabel(f"delta {main}")
        ax.set_title(f"{s.name} versus {base.name}: per-query {main}")
        fig.tight_layout()
        f = out / "plots" / f"delta_{_safe(s.name)}.png"
        fig.savefig(f, dpi=100)
        plt.close(fig)
        files.append(f)
    if result.alpha_sweep:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, sw in result.alpha_sweep.items():
            xs = sorted(sw)
            ax.plot(xs, [sw[a] for a in xs], marker="o", label=name)
        ax.axhline(base.aggregate[main], color="gray", linestyle="--", label=base.name)
        ax.set_xlabel("alpha (weight of the first stage)")
        ax.set_ylabel(main)
        ax.set_title(f"hybrid fusion: {main} against alpha")
        ax.legend(fontsize=8)
        fig.tight_layout()
        f = out / "plots" / "alpha_sweep.png"
        fig.savefig(f, dpi=100)
        plt.close(fig)
        files.append(f)
    return files


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.@" else "_" for ch in name)
