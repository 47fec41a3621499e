"""The experiment runner with real (tiny) models through the public Reranker, the CLI, and resume."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from erank import Reranker
from erank.datasets import load_collection, read_run
from erank.errors import InputError
from erank.evaluation import Experiment, evaluate_reranker, evaluate_run, hybrid_run
from erank.retrieval import FirstStageReranker, first_stage_run
from erank.scoring import hybrid_scores

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def tiny_reranker(tiny_qwen3_dir):
    r = Reranker(str(tiny_qwen3_dir), mode="direct")
    yield r
    r.close()


@pytest.fixture()
def adi(shared_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ERANK_CACHE", str(tmp_path / "cache"))
    return load_collection(shared_data / "adi", beir_rule=False)


def test_experiment_table_significance_hybrid_and_outputs(adi, tiny_reranker, tmp_path):
    exp = Experiment(
        adi,
        {"tiny": tiny_reranker},
        first_stage="bm25",
        top_k=5,
        queries=4,
        alphas=(0.2,),
        sweep=(0.0, 0.5, 1.0),
        cache=tmp_path / "scores.sqlite",
        progress=False,
    )
    res = exp.run()
    assert [s.name for s in res.systems] == ["bm25", "tiny", "tiny+hybrid@0.2"]
    assert len(res.queries) == 4
    fs = res.system("bm25")
    expected = evaluate_run(
        first_stage_run(adi, "bm25", 5), adi.qrels
    )  # the first stage row is the plain run
    for q in res.queries:
        assert fs.per_query["nDCG@10"][q] == pytest.approx(expected["per_query"]["nDCG@10"][q])
    tiny = res.system("tiny")
    assert tiny.latency["pairs"] == 20 and tiny.latency["computed_pairs"] == 20
    assert tiny.latency["pairs_per_second"] > 0 and tiny.latency["seconds_per_query"] > 0
    # the run is the reranker's order: scores descending, every candidate kept
    for q in res.queries:
        scores = [c.score for c in tiny.run[q]]
        assert scores == sorted(scores, reverse=True) and len(scores) == 5
    # hybrid row equals erank.scoring.hybrid_scores on the same scores
    q0 = res.queries[0]
    fs_scores = {c.docid: c.score for c in fs.run[q0]}
    rows = [
        {"id": c.docid, "first_stage_score": fs_scores[c.docid], "rank_score": c.score} for c in tiny.run[q0]
    ]
    fused = [r["id"] for r in hybrid_scores(rows, alpha=0.2)]
    assert [c.docid for c in res.system("tiny+hybrid@0.2").run[q0]] == fused
    # alpha = 1 is the first stage alone
    assert res.alpha_sweep["tiny"][1.0] == pytest.approx(fs.aggregate["nDCG@10"])
    assert set(res.significance) == {"tiny", "tiny+hybrid@0.2"}
    sig = res.significance["tiny"]["nDCG@10"]
    assert sig["mean_delta"] == pytest.approx(tiny.aggregate["nDCG@10"] - fs.aggregate["nDCG@10"])
    out = res.write(tmp_path / "out")
    assert {p.name for p in (out / "runs").iterdir()} == {"bm25.run", "tiny.run", "tiny_hybrid@0.2.run"}
    assert [c.docid for c in read_run(out / "runs" / "tiny.run")[q0]] == [c.docid for c in tiny.run[q0]]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["systems"]["tiny"]["nDCG@10"] == pytest.approx(tiny.aggregate["nDCG@10"])
    report = (out / "report.md").read_text()
    assert "| system | nDCG@10 |" in report and "| tiny |" in report and "alpha sweep" in report
    assert (out / "plots" / "delta_tiny.png").stat().st_size > 1000
    assert (out / "plots" / "alpha_sweep.png").stat().st_size > 1000
    assert len((out / "per_query.tsv").read_text().splitlines()) == 1 + 3 * 4 * 4


def test_second_run_reads_every_score_from_the_cache(adi, tiny_reranker, tmp_path):
    kw = dict(
        first_stage="bm25",
        top_k=4,
        queries=3,
        alphas=(),
        sweep=(),
        cache=tmp_path / "s.sqlite",
        progress=False,
    )
    a = Experiment(adi, {"tiny": tiny_reranker}, **kw).run().system("tiny")
    b = Experiment(adi, {"tiny": tiny_reranker}, **kw).run().system("tiny")
    assert (
        a.latency["computed_pairs"] == 12
        and b.latency["computed_pairs"] == 0
        and b.latency["cached_pairs"] == 12
    )
    assert {q: [(c.docid, c.score) for c in v] for q, v in a.run.items()} == {
        q: [(c.docid, c.score) for c in v] for q, v in b.run.items()
    }
    # another instruction is another cache key: recomputed
    c = Experiment(adi, {"tiny": tiny_reranker}, instruction="msmarco-other text", **kw).run().system("tiny")
    assert c.latency["computed_pairs"] == 12


def test_evaluate_reranker_and_first_stage_as_a_reranker(adi, tmp_path):
    row = evaluate_reranker(adi, FirstStageReranker(), first_stage="bm25", top_k=10)
    plain = evaluate_run(first_stage_run(adi, "bm25", 10), adi.qrels)
    # R@100 of a top-10 list is its R@10, and is named so
    expected = {k: v for k, v in plain["aggregate"].items() if k != "R@100"}
    expected["R@10"] = plain["aggregate"]["R@100"]
    assert row.aggregate == pytest.approx(expected)


def test_experiment_bad_arguments(adi, tiny_reranker):
    with pytest.raises(InputError, match="top_k must be a positive integer"):
        Experiment(adi, {"t": tiny_reranker}, top_k=0)
    with pytest.raises(InputError, match="alpha must be between 0 and 1"):
        Experiment(adi, {"t": tiny_reranker}, alphas=(1.5,))
    with pytest.raises(InputError, match="named like the first stage"):
        Experiment(adi, {"bm25": tiny_reranker}, first_stage="bm25")
    with pytest.raises(InputError, match="no judged query"):
        Experiment(adi, {"t": tiny_reranker}, first_stage={"nope": []}, progress=False).run()


def test_hybrid_run_alpha_one_is_first_stage_order(adi):
    first = first_stage_run(adi, "bm25", 5)
    reversed_run = {q: [type(c)(c.docid, float(i)) for i, c in enumerate(cs)] for q, cs in first.items()}
    h = hybrid_run(first, reversed_run, 1.0)
    assert all([c.docid for c in h[q]] == [c.docid for c in first[q]] for q in first if len(first[q]) > 1)


def _cli(args, env):
    return subprocess.Popen(
        [sys.executable, "-m", "erank.cli", "eval", *args],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _rows(db: Path) -> int:
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(str(db), timeout=5) as conn:
            return int(conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
    except sqlite3.OperationalError:
        return 0


def test_cli_killed_part_way_resumes_without_recomputing(
    shared_data, tiny_qwen3_dir, tiny_reranker, tmp_path, monkeypatch, capsys
):
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "ERANK_CACHE": str(tmp_path / "cache"),
        "PYTHONPATH": str(REPO / "src"),
    }
    out = tmp_path / "run"
    args = [
        "--data",
        str(shared_data / "adi"),
        "--model",
        str(tiny_qwen3_dir),
        "--mode",
        "direct",
        "--alpha",
        "0.3",
    ]
    args += [
        "--top-k",
        "3",
        "--queries",
        "4",
        "--chunk-size",
        "1",
        "--no-plots",
        "--no-progress",
        "--out",
        str(out),
    ]
    total = 12
    proc = _cli(args, env)
    db = out / "scores.sqlite"
    deadline = time.time() + 240
    while _rows(db) < 3 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed: " + proc.stderr.read()[-2000:]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = _rows(db)
    assert 3 <= done_before < total and not (out / "metrics.json").exists()
    # resume in this process through the same command line (saves a second interpreter start)
    from erank.cli import main

    monkeypatch.setenv("ERANK_CACHE", str(tmp_path / "cache"))
    assert main(["eval", *args]) == 0
    stdout = capsys.readouterr().out
    m = json.loads((out / "metrics.json").read_text())
    name = next(k for k in m["systems"] if k.endswith("direct"))
    lat = m["systems"][name]["latency"]
    assert lat["cached_pairs"] == done_before  # nothing that finished was recomputed
    assert lat["computed_pairs"] == total - done_before
    assert "| system | nDCG@10 |" in stdout
    # an uninterrupted run of the same reranker gives the same rankings and scores
    coll = load_collection(shared_data / "adi")
    fresh = Experiment(
        coll, {name: tiny_reranker}, top_k=3, queries=4, alphas=(0.3,), sweep=(), chunk_size=1, progress=False
    ).run()
    for system in (name, f"{name}+hybrid@0.3"):
        resumed = read_run(out / "runs" / f"{system.replace('+', '_')}.run")
        expected = fresh.system(system).run
        assert {q: [c.docid for c in v] for q, v in resumed.items()} == {
            q: [c.docid for c in v] for q, v in expected.items()
        }
        for q, cands in expected.items():
            assert [c.score for c in resumed[q]] == pytest.approx(
                [c.score for c in cands], rel=1e-5, abs=1e-9
            )


def test_followir_experiment_reports_p_mrr(tmp_path, tiny_reranker):
    (tmp_path / "qrels").mkdir()
    docs = ["oil spill in the gulf in 2010", "oil spill report 1989", "cooking with olive oil", "gulf news"]
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": t}) + "\n" for i, t in enumerate(docs))
    )
    (tmp_path / "queries.jsonl").write_text(
        json.dumps(
            {
                "_id": "q1",
                "text": "oil spills",
                "instruction_og": "Any spill.",
                "instruction_changed": "Only 2010.",
            }
        )
        + "\n"
    )
    (tmp_path / "qrels" / "og.tsv").write_text("q1\td0\t1\nq1\td1\t1\n")
    (tmp_path / "qrels" / "changed.tsv").write_text("q1\td0\t1\nq1\td1\t0\n")
    (tmp_path / "top_ranked.jsonl").write_text(
        json.dumps({"qid": "q1", "doc_ids": ["d1", "d0", "d2", "d3"]}) + "\n"
    )
    coll = load_collection(tmp_path)
    res = Experiment(
        coll, {"tiny": tiny_reranker}, first_stage="top_ranked", alphas=(), sweep=(), progress=False
    ).run()
    assert res.system("top_ranked").p_mrr == 0.0
    tiny = res.system("tiny")
    assert tiny.p_mrr is not None and -1.0 <= tiny.p_mrr <= 1.0
    assert set(tiny.p_mrr_per_query or {}) == {"q1"}
    assert "p-MRR" in res.table()[1]


def test_cli_bad_data_path_is_a_clear_error(tmp_path):
    from erank.cli import main

    assert (
        main(
            ["eval", "--data", str(tmp_path / "missing"), "--first-stage-only", "--out", str(tmp_path / "o")]
        )
        == 2
    )


@pytest.mark.slow
def test_default_model_reranks_dl20_through_the_harness(shared_data, tmp_path):
    """The real embedded SmolLM2-135M in direct mode on 1 DL20 query x 2 BM25 candidates."""
    coll = load_collection(shared_data / "trec-dl20-passage")
    reranker = Reranker()
    try:
        row = evaluate_reranker(
            coll, reranker, first_stage="BM25", top_k=2, queries=1, cache=tmp_path / "s.sqlite"
        )
    finally:
        reranker.close()
    assert row.latency["pairs"] == 2 and row.unparsed == 0
    assert 0.0 <= row.aggregate["nDCG@10"] <= 1.0
    for cands in row.run.values():
        assert len(cands) == 2 and all(c.score >= 0 for c in cands)


def test_recall_is_named_for_the_depth_that_was_reranked(adi, tmp_path):
    # A top-5 rerank has 5 documents per query: its "R@100" is R@5, and the report says so.
    res = Experiment(
        adi, {}, first_stage="bm25", top_k=5, queries=3, alphas=(), sweep=(), progress=False
    ).run()
    assert res.metrics == ["nDCG@10", "MAP", "MRR@10", "R@5"]
    fs = res.system("bm25")
    expected = evaluate_run({q: first_stage_run(adi, "bm25", 5)[q] for q in res.queries}, adi.qrels, ["R@5"])
    assert fs.aggregate["R@5"] == pytest.approx(expected["aggregate"]["R@5"])
    out = res.write(tmp_path / "out", plots=False)
    report = (out / "report.md").read_text()
    assert "| R@5 |" in report and "R@100" not in report
    # with the default depth of 100 it keeps its name
    assert Experiment(adi, {}, top_k=100, progress=False).metrics[-1] == "R@100"


def test_queries_n_is_the_first_n_by_id():
    from erank.evaluation.experiment import first_queries

    assert first_queries(["10", "9", "100", "2"], 2) == ["2", "9"]
    assert first_queries(["b", "10", "a", "9"], None) == ["9", "10", "a", "b"]
