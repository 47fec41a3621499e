"""``erank compare`` end to end on the real DL20 BM25 candidates with a tiny model (mechanics)."""

from __future__ import annotations

import json
import math

import pytest

from erank.cli import main
from erank.errors import InputError
from erank.evaluation.compare import find_qrels, load_candidates, load_qrels
from erank.evaluation.compare_cli import parse_queries_for, parse_sets
from erank.evaluation.experiment import first_queries


def _dl20(shared_data):
    return shared_data / "trec-dl20-passage" / "BM25" / "retrieve_results_dl20_top100.json"


def _ndcg10(ranked, rels):
    dcg = sum(rels.get(d, 0) / math.log2(r + 2) for r, d in enumerate(ranked[:10]))
    ideal = sorted(rels.values(), reverse=True)[:10]
    idcg = sum(g / math.log2(r + 2) for r, g in enumerate(ideal))
    return dcg / idcg if idcg else 0.0


def test_compare_writes_runs_and_a_table(shared_data, tiny_qwen3_dir, tmp_path, capsys):
    data = _dl20(shared_data)
    out = tmp_path / "cmp"
    code = main(
        [
            "compare",
            "--first-stage", str(data),
            "--methods", "yesno,first,setwise@direct",
            "--model", str(tiny_qwen3_dir),
            "--top-k", "4",
            "--queries", "2",
            "--queries-for", "setwise@direct=1",
            "--set", "first.window=4",
            "--set", "setwise@direct.mode=direct",
            "--set", "setwise@direct.top_k=2",
            "--truncate-length", "32",
            "--out", str(out),
        ]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    assert "| yesno |" in printed and "| first |" in printed and "| setwise@direct | direct | 1 |" in printed
    rows = json.loads((out / "rows.json").read_text())
    assert [r["method"] for r in rows] == ["yesno", "first", "setwise@direct"]
    assert rows[0]["queries"] == 2 and rows[0]["calls_per_query"] == 4.0  # one pass per document
    assert rows[1]["calls_per_query"] == 1.0  # one window of 4
    assert rows[2]["queries"] == 1
    table = (out / "table.md").read_text().splitlines()
    assert [ln.split(" | ")[0] for ln in table if ln.startswith("| ") and "---" not in ln][1:] == [
        "| yesno",
        "| first",
        "| setwise@direct",
    ]

    # The first stage's nDCG@10 on the same queries, computed independently from the files.
    judged = load_qrels(find_qrels(data))
    # --queries 2 is the first two judged queries by id, the ones `erank eval --queries 2` takes
    by_qid = {c["qid"]: c for c in load_candidates(data) if c["qid"] in judged}
    first_two = sorted(by_qid, key=int)[:2]
    assert first_two == first_queries(list(by_qid), 2)
    cands = [by_qid[q] for q in first_two]
    expected = sum(_ndcg10([h["docid"] for h in c["hits"][:4]], judged[c["qid"]]) for c in cands) / 2
    assert rows[0]["first_stage_ndcg@10"] == pytest.approx(expected, abs=1e-4)

    # The run file is a valid TREC run with the method's order, 4 documents per query.
    lines = (out / "yesno.run").read_text().splitlines()
    assert len(lines) == 8
    qid, q0, docid, rank, score, tag = lines[0].split()
    assert q0 == "Q0" and rank == "1" and tag == "erank-yesno"
    assert {ln.split()[0] for ln in lines} == {c["qid"] for c in cands}
    for r in rows:
        assert 0.0 <= r["ndcg@10"] <= 1.0


def test_compare_rejects_bad_arguments_with_exit_code_2(shared_data, tmp_path, capsys):
    assert main(["compare", "--first-stage", str(_dl20(shared_data)), "--methods", "erank,nosuch"]) == 2
    assert "unknown methods ['nosuch']" in capsys.readouterr().err
    assert main(["compare", "--first-stage", str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in capsys.readouterr().err
    # a misspelt method argument is named, with the accepted ones, before any model loads
    missing_model = str(tmp_path / "missing.gguf")
    args = [
        "compare",
        "--first-stage",
        str(_dl20(shared_data)),
        "--methods",
        "listwise",
        "--model",
        missing_model,
    ]
    assert main([*args, "--set", "listwise.windw=4"]) == 2
    err = capsys.readouterr().err
    assert "takes no argument 'windw' (did you mean 'window'?)" in err and "does not exist" not in err


def test_compare_old_data_spelling_still_works_with_a_warning(shared_data, tmp_path, capsys):
    # `--data FILE` is deprecated (it means a collection in eval): same parse, plus a warning
    assert main(["compare", "--data", str(tmp_path / "missing.json")]) == 2
    err = capsys.readouterr().err
    assert "--data is deprecated here; use --first-stage FILE" in err and "does not exist" in err


def test_cli_argument_parsers():
    assert parse_sets(["rank1.max_new_tokens=64", "setwise@d.mode=direct", "x.flag=true"]) == {
        "rank1": {"max_new_tokens": 64},
        "setwise@d": {"mode": "direct"},
        "x": {"flag": True},
    }
    assert parse_queries_for("rank1=5, pairwise=2") == {"rank1": 5, "pairwise": 2}
    with pytest.raises(InputError, match="METHOD.ARG=VALUE"):
        parse_sets(["max_new_tokens=3"])
    with pytest.raises(InputError, match="METHOD=N"):
        parse_queries_for("rank1=zero")
