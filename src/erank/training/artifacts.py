"""The files a training run reads and writes, in one place for SFT, GRPO and the pointwise trainer.

An ``erank train data`` output folder holds ``train.jsonl`` (the pairs), ``eval.jsonl`` (the
held-out queries with their candidates and judgements) and ``params.json`` (the data config it
was built with); a trainer's output folder holds ``checkpoint-N`` folders.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from erank.errors import InputError

__all__ = ["load_pairs", "data_params", "eval_rows_path", "latest_checkpoint"]


def load_pairs(data: str | Path) -> list[dict[str, Any]]:
    """The training pairs of an ``erank train data`` output folder (or a JSONL file)."""
    from erank.training.data import read_jsonl

    p = Path(data)
    if p.is_dir():
        if not (p / "train.jsonl").is_file():
            raise InputError(f"{p} has no train.jsonl: build it with `erank train data CONFIG.yaml`")
        p = p / "train.jsonl"
    rows = read_jsonl(p)
    need = {"query", "doc", "instruction", "completion", "qid"}
    for i, r in enumerate(rows[:1]):
        missing = need - set(r)
        if missing:
            raise InputError(
                f"{p}, row {i + 1}: missing fields {sorted(missing)} (not an erank training set)"
            )
    if not rows:
        raise InputError(f"{p} has no training pairs")
    return rows


def data_params(data: str | Path) -> dict[str, Any]:
    """The data config a training set was built with (its ``params.json``), or ``{}``."""
    p = Path(data)
    f = (p if p.is_dir() else p.parent) / "params.json"
    if f.is_file():
        return dict(json.loads(f.read_text(encoding="utf-8")).get("config", {}))
    return {}


def eval_rows_path(data: str | Path) -> Path | None:
    """The training set's non-empty ``eval.jsonl``, or ``None``."""
    p = Path(data)
    f = (p if p.is_dir() else p.parent) / "eval.jsonl"
    return f if f.is_file() and f.stat().st_size > 0 else None


def latest_checkpoint(output_dir: str | Path) -> Path | None:
    """The ``checkpoint-N`` folder with the largest N, or None."""
    best: tuple[int, Path] | None = None
    for d in Path(output_dir).glob("checkpoint-*"):
        try:
            n = int(d.name.split("-")[-1])
        except ValueError:
            continue
        if d.is_dir() and (best is None or n > best[0]):
            best = (n, d)
    return best[1] if best else None
