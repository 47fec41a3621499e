"""Loaders on the real shared collections and on small files written here, including bad input."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from erank.datasets import (
    Candidate,
    load_bright,
    load_candidates,
    load_collection,
    load_followir,
    read_qrels,
    read_rankllm_candidates,
    read_run,
    read_topics,
    read_trec_docs,
    write_rankllm_candidates,
    write_run,
)
from erank.errors import DataFormatError, InputError


@pytest.mark.parametrize(
    ("name", "docs", "queries", "judged", "qrels_rows", "level"),
    [
        ("vaswani", 11429, 93, 93, 2083, 1),
        ("cranfield", 1400, 225, 225, 1837, 1),
        ("cacm", 3204, 64, 52, 796, 1),
        ("med", 1033, 30, 30, 696, 1),
        ("adi", 82, 35, 35, 170, 1),
        ("trec-dl20-passage", 0, 200, 54, 11386, 2),
    ],
)
def test_shared_collections_load_with_readme_counts(
    shared_data, name, docs, queries, judged, qrels_rows, level
):
    c = load_collection(shared_data / name)
    assert len(c.corpus) == docs
    assert len(c.queries) == queries
    assert len(c.judged_queries) == judged
    assert sum(len(v) for v in c.qrels.values()) == qrels_rows
    assert c.relevance_level == level
    assert c.stats.unknown_qrels_queries == 0 and c.stats.unknown_qrels_documents == 0


def test_cranfield_empty_documents_are_kept_and_counted(shared_data, caplog):
    with caplog.at_level(logging.WARNING):
        c = load_collection(shared_data / "cranfield")
    assert c.corpus["471"] == "" and c.corpus["995"] == ""
    assert c.stats.empty_documents == 2
    assert "no text" in caplog.text


def test_vaswani_trec_sgml_documents_and_topics(shared_data):
    c = load_collection(shared_data / "vaswani")
    assert (
        c.queries["1"] == "MEASUREMENT OF DIELECTRIC CONSTANT OF LIQUIDS BY THE USE OF MICROWAVE TECHNIQUES"
    )
    assert c.corpus["1"].startswith("compact memories have flexible capacities")
    assert c.complete_corpus


def test_dl20_candidates_fill_corpus_from_rankllm_json(shared_data):
    c = load_collection(shared_data / "trec-dl20-passage")
    assert "BM25" in c.candidate_files and not c.complete_corpus
    run = load_candidates(c, "bm25")  # case-insensitive name of a shipped list
    assert len(run) == 54 and all(len(v) == 100 for v in run.values())
    first = run["23849"][0]
    assert first.docid == "4348282" and first.text and c.corpus["4348282"] == first.text
    trec = load_candidates(c, str(c.candidate_files["BM25"].with_name("trec_results_dl20_top100.txt")))
    assert [x.docid for x in trec["23849"]] == [x.docid for x in run["23849"]]


def _beir(tmp: Path, corpus: list[dict], queries: list[dict], qrels: str) -> Path:
    (tmp / "qrels").mkdir(parents=True, exist_ok=True)
    (tmp / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in corpus))
    (tmp / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (tmp / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return tmp


def test_qrels_with_unknown_queries_and_documents_warn_and_count(tmp_path, caplog):
    _beir(
        tmp_path,
        [{"_id": "d1", "title": "", "text": "a"}, {"_id": "d2", "title": "t", "text": "b"}],
        [{"_id": "q1", "text": "query one"}],
        "q1\td1\t1\nq1\td9\t1\nq7\td2\t1\n",
    )
    with caplog.at_level(logging.WARNING):
        c = load_collection(tmp_path)
    assert c.stats.unknown_qrels_queries == 1
    assert c.stats.unknown_qrels_documents == 1  # d9 (for q1)
    assert "unknown query" in caplog.text and "not in the corpus" in caplog.text
    assert list(c.qrels) == ["q1"]  # judgements of unknown queries are not evaluated


def test_duplicate_ids_are_an_error_naming_both_lines(tmp_path):
    _beir(
        tmp_path,
        [{"_id": "d1", "text": "a"}, {"_id": "d2", "text": "b"}, {"_id": "d1", "text": "c"}],
        [{"_id": "q1", "text": "x"}],
        "q1\td1\t1\n",
    )
    with pytest.raises(DataFormatError, match=r"corpus.jsonl:3: duplicate id 'd1' \(first on line 1\)"):
        load_collection(tmp_path)


def test_duplicate_judgement_with_other_grade_is_an_error(tmp_path):
    p = tmp_path / "qrels.txt"
    p.write_text("q1 0 d1 1\nq1 0 d1 1\nq1 0 d1 2\n")
    with pytest.raises(DataFormatError, match=r"qrels.txt:3: pair \(q1, d1\) judged again with grade 2"):
        read_qrels(p)


def test_empty_query_text_is_an_error_with_line(tmp_path):
    _beir(
        tmp_path,
        [{"_id": "d1", "text": "a"}],
        [{"_id": "q1", "text": "x"}, {"_id": "q2", "text": "  "}],
        "q1\td1\t1\n",
    )
    with pytest.raises(DataFormatError, match=r"queries.jsonl:2: query 'q2' has empty text"):
        load_collection(tmp_path)


def test_collection_folder_missing_a_file_says_which(tmp_path):
    _beir(tmp_path, [{"_id": "d1", "text": "a"}], [{"_id": "q1", "text": "x"}], "q1\td1\t1\n")
    (tmp_path / "qrels" / "test.tsv").unlink()
    with pytest.raises(DataFormatError, match=r"has no qrels/test.tsv"):
        load_collection(tmp_path)
    (tmp_path / "queries.jsonl").unlink()
    with pytest.raises(DataFormatError, match=r"has no queries.jsonl"):
        load_collection(tmp_path)


def test_unknown_folder_and_missing_path(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(DataFormatError, match="not a known collection layout"):
        load_collection(tmp_path)
    with pytest.raises(InputError, match="not found"):
        load_collection(tmp_path / "nope")


def test_run_file_with_wrong_number_of_columns_names_the_line(tmp_path):
    p = tmp_path / "run.txt"
    p.write_text("q1 Q0 d1 1 3.0 tag\nq1 Q0 d2 2 2.0\n")
    with pytest.raises(DataFormatError, match=r"run.txt:2: run line has 5 columns; expected 6"):
        read_run(p)


def test_run_file_duplicate_document_and_bad_score(tmp_path):
    p = tmp_path / "run.txt"
    p.write_text("q1 Q0 d1 1 3.0 t\nq1 Q0 d1 2 2.0 t\n")
    with pytest.raises(DataFormatError, match=r"run.txt:2: document 'd1' appears twice"):
        read_run(p)
    p.write_text("q1 Q0 d1 1 abc t\n")
    with pytest.raises(DataFormatError, match=r"run.txt:1: .*not a number"):
        read_run(p)


def test_write_run_makes_ties_strictly_decreasing_and_round_trips(tmp_path):
    run = {"q1": [Candidate("b", 1.0), Candidate("a", 1.0), Candidate("c", 1.0), Candidate("d", 0.5)]}
    p = tmp_path / "out.run"
    write_run(run, p, tag="my run")
    lines = p.read_text().splitlines()
    scores = [float(line.split()[4]) for line in lines]
    assert all(x > y for x, y in zip(scores, scores[1:], strict=False))
    assert [line.split()[3] for line in lines] == ["1", "2", "3", "4"]
    assert lines[0].split()[5] == "myrun"
    assert [c.docid for c in read_run(p)["q1"]] == ["b", "a", "c", "d"]


def test_trec_docs_and_sgml_topics(tmp_path):
    d = tmp_path / "docs.trec"
    d.write_text(
        "<DOC>\n<DOCNO> X1 </DOCNO>\n<TEXT>hello <b>world</b></TEXT>\n</DOC>\n<DOC><DOCNO>X2</DOCNO></DOC>\n"
    )
    docs = read_trec_docs(d)
    assert docs == {"X1": "hello world", "X2": ""}
    t = tmp_path / "topics.txt"
    t.write_text("<top>\n<num> Number: 301\n<title> Topic: international crime\n<desc> long\n</top>\n")
    assert read_topics(t) == {"301": "international crime"}
    t.write_text("1\tfirst\n2 no tab\n")
    with pytest.raises(DataFormatError, match=r"topics.txt:2: expected 'qid<TAB>text'"):
        read_topics(t)


def test_rankllm_json_round_trip_and_errors(tmp_path):
    p = tmp_path / "c.json"
    write_rankllm_candidates(
        {"7": "q text"}, {"7": [Candidate("d2", 2.0, "two"), Candidate("d1", 1.0, "one")]}, p, corpus={}
    )
    queries, run = read_rankllm_candidates(p)
    assert queries == {"7": "q text"}
    assert [(c.docid, c.text) for c in run["7"]] == [("d2", "two"), ("d1", "one")]
    p.write_text(
        '[{"query": "q", "hits": [{"qid": 1, "docid": "a", "content": "x", "rank": 1, "score": 1}, '
        '{"qid": 1, "docid": "a", "content": "y", "rank": 2, "score": 0}]}]'
    )
    with pytest.raises(DataFormatError, match="appears twice"):
        read_rankllm_candidates(p)
    p.write_text("{not json")
    with pytest.raises(DataFormatError, match="not valid JSON"):
        read_rankllm_candidates(p)


def test_bright_layout_with_excluded_ids(tmp_path):
    folder = tmp_path / "biology"
    folder.mkdir()
    (folder / "documents.jsonl").write_text(
        "".join(json.dumps({"id": f"d{i}", "content": f"text {i}"}) + "\n" for i in range(4))
    )
    (folder / "examples.jsonl").write_text(
        json.dumps(
            {"id": "0", "query": "why do cells divide", "gold_ids": ["d1"], "excluded_ids": ["d3", "N/A"]}
        )
        + "\n"
    )
    c = load_collection(folder)
    assert c.name == "bright/biology" and c.instruction == "bright/biology"
    assert c.qrels == {"0": {"d1": 1}} and c.excluded_ids == {"0": {"d3"}}
    (folder / "examples.jsonl").write_text(
        json.dumps({"id": "0", "query": "q", "gold_ids": ["d1"], "excluded_ids": ["d1"]}) + "\n"
    )
    with pytest.raises(DataFormatError, match="both gold and excluded"):
        load_bright(folder)


def test_followir_layout_has_both_instructions_and_qrels(tmp_path):
    (tmp_path / "qrels").mkdir()
    (tmp_path / "corpus.jsonl").write_text(
        "".join(json.dumps({"_id": f"d{i}", "title": "", "text": f"doc {i}"}) + "\n" for i in range(3))
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
        json.dumps({"qid": "q1", "doc_ids": ["d1", "d0", "d2"]}) + "\n"
    )
    c = load_collection(tmp_path)
    assert c.queries["q1"] == "oil spills Any spill." and c.changed is not None
    assert c.changed.queries["q1"] == "oil spills Only 2010."
    assert c.changed.qrels["q1"]["d1"] == 0
    run = load_candidates(c, "top_ranked")
    assert [x.docid for x in run["q1"]] == ["d1", "d0", "d2"]
    assert load_followir(tmp_path).instruction == "followir"


def test_loading_by_name_offline_names_the_local_alternative(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match="pass the folder instead"):
        load_collection("beir/scifact")
