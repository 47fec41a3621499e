"""Fixtures for the training tests: a small synthetic training set in the layout of ``erank train data``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUERIES = {
    "q1": ("what is rust", ["Rust is a systems programming language.", "Bread is baked.", "The sea is blue."]),
    "q2": ("green tea", ["Green tea is a drink made from leaves.", "Cars have wheels.", "Snow is cold."]),
    "q3": ("python snakes", ["Pythons are large snakes.", "Tables are furniture.", "Music has rhythm."]),
}


def write_toy_data(root: Path, style: str = "direct") -> Path:
    """Three queries x three documents (the first positive, target 9; the others 1)."""
    from erank.prompts import resolve_instruction
    from erank.training.data import target_text

    root.mkdir(parents=True, exist_ok=True)
    instr = resolve_instruction("beir")
    rows = []
    for qid, (query, docs) in QUERIES.items():
        for i, doc in enumerate(docs):
            target = 9 if i == 0 else 1
            rows.append(
                {
                    "qid": qid,
                    "docid": f"{qid}-d{i}",
                    "query": query,
                    "doc": doc,
                    "instruction": instr,
                    "completion": target_text(target, style, "ok"),
                    "target": target,
                    "is_positive": i == 0,
                    "style": style,
                }
            )
    with (root / "train.jsonl").open("w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r) + "\n")
    evals = [
        {
            "qid": qid,
            "query": query,
            "instruction": instr,
            "candidates": [{"docid": f"{qid}-d{i}", "content": d, "score": float(3 - i)} for i, d in enumerate(docs)][::-1],
            "qrels": {f"{qid}-d0": 1},
        }
        for qid, (query, docs) in QUERIES.items()
    ]
    with (root / "eval.jsonl").open("w", encoding="utf-8") as fh:
        for r in evals:
            fh.write(json.dumps(r) + "\n")
    (root / "params.json").write_text(json.dumps({"config": {"truncate_length": 64, "target_style": style}}))
    return root


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path / "data")
