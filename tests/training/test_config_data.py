"""Config validation, data construction (tiers, grades, teacher selection) and the CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from erank.errors import InputError
from erank.training.config import DataConfig, RLConfig, SFTConfig, TierConfig, load_config
from erank.training.data import grade_to_score, sample_group, select_closest_to_mean, target_text

REPO = Path(__file__).resolve().parents[2]


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_the_example_configs_are_valid() -> None:
    kinds = {"data": DataConfig, "sft": SFTConfig, "rl": RLConfig}
    files = sorted((REPO / "configs/train").glob("*.yaml"))
    assert len(files) >= 6
    for f in files:
        kind = f.stem.split("-")[-1]
        load_config(f, kinds[kind])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("model: m\ndata: d\noutput_dir: o\nlearning_rat: 0.1\n", "learning_rat: unknown setting"),
        (
            "model: m\ndata: d\noutput_dir: o\nlearning_rate: -1\n",
            "learning_rate: Input should be greater than 0",
        ),
        ("model: m\ndata: d\n", "output_dir: Field required"),
        ("model: m\ndata: d\noutput_dir: o\nlora: {r: zero}\n", "lora.r: Input should be a valid integer"),
        ("- just\n- a list\n", "must contain a mapping"),
        ("model: [unclosed\n", "not valid YAML"),
    ],
)
def test_sft_config_errors_name_the_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(InputError, match="invalid config|must contain|not valid YAML") as exc:
        load_config(_write(tmp_path, text), SFTConfig)
    assert message in str(exc.value)


def test_data_and_rl_config_errors(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="needs 'candidates' and 'qrels'"):
        load_config(
            _write(tmp_path, "output_dir: o\nsources: [{name: a, format: trec-dl, path: x}]\n"), DataConfig
        )
    with pytest.raises(InputError, match="labels: teacher needs a 'teacher' section"):
        load_config(
            _write(tmp_path, "output_dir: o\nlabels: teacher\nsources: [{name: a, format: beir, path: x}]\n"),
            DataConfig,
        )
    with pytest.raises(InputError, match="end .* is before start"):
        TierConfig.model_validate({"name": "t", "start": 5, "end": 2, "count": 1}) if False else load_config(
            _write(
                tmp_path,
                "output_dir: o\ntiers: [{name: t, start: 5, end: 2, count: 1}]\nsources: [{name: a, format: beir, path: x}]\n",
            ),
            DataConfig,
        )
    with pytest.raises(InputError, match="rollouts: Input should be greater than or equal to 2"):
        load_config(_write(tmp_path, "model: m\ndata: d\noutput_dir: o\nrollouts: 1\n"), RLConfig)
    with pytest.raises(InputError, match="does not exist"):
        load_config(tmp_path / "missing.yaml", RLConfig)


def test_grade_mapping_and_targets() -> None:
    assert [grade_to_score(g, 3) for g in (None, 0, 1, 2, 3)] == [0, 0, 3, 7, 10]
    assert [grade_to_score(g, 1) for g in (0, 1)] == [0, 10]
    assert grade_to_score(2, 3, {2: 6}) == 6 and grade_to_score(3, 3, {2: 6}) == 10
    assert target_text(7, "direct") == "7</answer>"
    assert target_text(0, "reasoning", "no") == "<think>no</think><answer>0</answer>"


def test_teacher_run_closest_to_the_mean() -> None:
    assert select_closest_to_mean([2, 9, 6]) == 2  # mean 5.67
    assert select_closest_to_mean([4, 6]) == 0  # tie: the first
    with pytest.raises(InputError):
        select_closest_to_mean([])


def test_negatives_come_from_the_tiers_and_never_are_positive() -> None:
    ranked = [f"d{i}" for i in range(1, 201)]
    positives = {"d3", "d50"}
    tiers = [
        TierConfig(name="hard", start=1, end=10, count=4),
        TierConfig(name="medium", start=11, end=100, count=3),
        TierConfig(name="easy", start=101, end=1000, count=2),
    ]
    group = sample_group(ranked, sorted(positives), positives, tiers, 10, random.Random(1))
    assert len(group) == 10 and group[0][1] == "positive" and group[0][0] in positives
    negs = group[1:]
    assert not {d for d, _, _ in negs} & positives
    assert [t for _, t, _ in negs] == ["hard"] * 4 + ["medium"] * 3 + ["easy"] * 2
    for _, tier, rank in negs:
        lo, hi = {"hard": (1, 10), "medium": (11, 100), "easy": (101, 1000)}[tier]
        assert rank is not None and lo <= rank <= hi
    # a shallow first stage (top 12 only): the missing easy/medium negatives are topped up
    short = sample_group(ranked[:12], ["d3"], {"d3"}, tiers, 10, random.Random(1))
    assert len(short) == 10 and len({d for d, _, _ in short}) == 10


@pytest.mark.data
def test_build_dataset_from_shared_collections(shared_data: Path, smollm2_dir: Path, tmp_path: Path) -> None:
    """DL20 (rank_llm JSON + TREC qrels) and MED (BEIR, BM25 candidates): the written dataset."""
    from datasets import load_from_disk

    from erank.methods.erank import DIRECT_SUFFIX
    from erank.training.data import build_dataset, read_jsonl

    cfg = DataConfig.model_validate(
        {
            "output_dir": tmp_path / "out",
            "tokenizer": str(smollm2_dir),
            "docs_per_query": 5,
            "tiers": [
                {"name": "hard", "start": 1, "end": 10, "count": 2},
                {"name": "medium", "start": 11, "end": 100, "count": 2},
            ],
            "positive_min_grade": 2,
            "truncate_length": 64,
            "eval_fraction": 0.5,
            "sources": [
                {
                    "name": "dl20",
                    "format": "trec-dl",
                    "path": shared_data / "trec-dl20-passage",
                    "candidates": "BM25/retrieve_results_dl20_top100.json",
                    "qrels": "qrels.dl20-passage.txt",
                    "instruction": "trec-dl",
                    "max_queries": 4,
                },
                {
                    "name": "med",
                    "format": "beir",
                    "path": shared_data / "med",
                    "max_queries": 2,
                    "depth": 100,
                },
            ],
        }
    )
    stats = build_dataset(cfg)
    out = tmp_path / "out"
    rows = read_jsonl(out / "train.jsonl")
    evals = read_jsonl(out / "eval.jsonl")
    assert stats["pairs"] == len(rows) == len(load_from_disk(str(out / "dataset")))
    assert stats["eval_queries"] == len(evals) == 3  # half of 4 DL20 + half of 2 MED queries (rounded)
    assert not {r["qid"] for r in rows} & {e["qid"] for e in evals}  # held-out queries never trained on
    for r in rows:
        assert r["prompt"].endswith(DIRECT_SUFFIX) and r["completion"].endswith("</answer>")
        if r["is_positive"]:
            assert r["target"] >= 7  # DL grade >= 2 -> 7 or 10; MED binary 1 -> 10
        else:
            assert r["grade"] < 2
    params = json.loads((out / "params.json").read_text())
    assert params["config"]["docs_per_query"] == 5 and params["counts"]["pairs"] == len(rows)


def test_cli_registers_train_and_reports_config_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from erank.cli import main

    bad = _write(tmp_path, "model: m\ndata: d\noutput_dir: o\nrollouts: 1\n")
    assert main(["train", "rl", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "rollouts" in err and "Traceback" not in err


def _write_trec(root: Path, queries: dict[str, tuple[str, dict[str, str], set[str]]]) -> Path:
    """A trec-dl source: per query ``(text, {docid: content} in first-stage order, positives)``."""
    root.mkdir(parents=True, exist_ok=True)
    entries = [
        {
            "query": text,
            "hits": [
                {"qid": qid, "docid": d, "content": c, "score": float(len(docs) - i)}
                for i, (d, c) in enumerate(docs.items())
            ],
        }
        for qid, (text, docs, _) in queries.items()
    ]
    (root / "cands.json").write_text(json.dumps(entries))
    (root / "qrels.txt").write_text(
        "".join(f"{q} 0 {d} {int(d in pos)}\n" for q, (_, docs, pos) in queries.items() for d in docs)
    )
    return root


def _data_cfg(tmp_path: Path, tokenizer: Path, **kw: object) -> DataConfig:
    base: dict[str, object] = {
        "output_dir": tmp_path / "out",
        "tokenizer": str(tokenizer),
        "docs_per_query": 3,
        "tiers": [{"name": "hard", "start": 1, "end": 10, "count": 2}],
        "truncate_length": 2048,
        "cutoff": 200,
        "sources": [
            {
                "name": "s",
                "format": "trec-dl",
                "path": tmp_path / "src",
                "candidates": "cands.json",
                "qrels": "qrels.txt",
            }
        ],
    }
    base.update(kw)
    return DataConfig.model_validate(base)


LONG = "a very long passage about nothing in particular " * 40  # ~320 tokens


def test_a_query_whose_positive_is_dropped_is_dropped_whole(tmp_path: Path, tiny_qwen3_dir: Path) -> None:
    from erank.training.data import build_dataset, read_jsonl

    _write_trec(
        tmp_path / "src",
        {
            # q1's positive is over the cutoff: without it r_RR would reward q1's negatives for anything
            "q1": ("long positive", {"p1": LONG, "n1": "short one", "n2": "short two"}, {"p1"}),
            # q2 loses one negative to the cutoff and keeps its positive and other negative
            "q2": ("long negative", {"p2": "the answer", "n3": LONG, "n4": "short four"}, {"p2"}),
            "q3": ("all short", {"p3": "the answer", "n5": "short five", "n6": "short six"}, {"p3"}),
        },
    )
    stats = build_dataset(_data_cfg(tmp_path, tiny_qwen3_dir))
    rows = read_jsonl(tmp_path / "out/train.jsonl")
    by_q: dict[str, list[str]] = {}
    for r in rows:
        by_q.setdefault(r["qid"], []).append(r["docid"])
    assert by_q == {"s/q2": ["p2", "n4"], "s/q3": ["p3", "n5", "n6"]}
    assert {k: stats[k] for k in ("queries", "pairs", "dropped_long", "dropped_queries")} == {
        "queries": 2,
        "pairs": 5,
        "dropped_long": 2,  # q1's positive (its negatives are not even built) and q2's n3
        "dropped_queries": 1,
    }
    assert json.loads((tmp_path / "out/params.json").read_text())["counts"]["dropped_queries"] == 1


def test_a_query_whose_positive_the_teacher_drops_is_dropped_whole(
    tmp_path: Path, tiny_qwen3_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import types

    import erank.reranker
    from erank.training.data import build_dataset, read_jsonl

    class _Teacher:
        """Direct mode: no mass on any score for the documents that say "void" (dropped)."""

        def __init__(self, *a: object, **kw: object) -> None:
            pass

        def score(self, query: str, docs: list[str], *a: object, **kw: object) -> object:
            dist = [0.0] * 11 if "void" in docs[0] else [0.0] * 8 + [1.0, 0.0, 0.0]
            return types.SimpleNamespace(scores=[types.SimpleNamespace(distribution=dist)])

    monkeypatch.setattr(erank.reranker, "Reranker", _Teacher)
    _write_trec(
        tmp_path / "src",
        {
            "q1": ("dropped positive", {"p1": "void", "n1": "short one", "n2": "short two"}, {"p1"}),
            "q2": ("dropped negative", {"p2": "the answer", "n3": "void", "n4": "short four"}, {"p2"}),
        },
    )
    cfg = _data_cfg(tmp_path, tiny_qwen3_dir, labels="teacher", teacher={"model": "m", "mode": "direct"})
    stats = build_dataset(cfg)
    rows = read_jsonl(tmp_path / "out/train.jsonl")
    assert [(r["qid"], r["docid"], r["target"], r["teacher_runs"]) for r in rows] == [
        ("s/q2", "p2", 8, [8, 8, 8]),
        ("s/q2", "n4", 8, [8, 8, 8]),
    ]
    assert (stats["dropped_teacher"], stats["dropped_queries"], stats["queries"]) == (2, 1, 1)
