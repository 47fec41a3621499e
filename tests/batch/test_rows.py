"""The Ray-free parts of the batch job: validation reasons, the qid partition, TREC ordering."""

from __future__ import annotations

import math

import pytest

from erank.batch.rows import order_key, parse_json_line, parse_record, shard_of, strictly_decreasing


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"qid": 1, "query": "q", "docid": "d", "text": ""}, "empty text"),
        ({"qid": 1, "query": " ", "docid": "d", "text": "t"}, "empty query"),
        ({"qid": 1, "query": "q", "text": "t"}, "missing field 'docid'"),
        ({"qid": 1, "query": "q", "docid": "d", "text": None}, "missing field 'text'"),
        ({"qid": True, "query": "q", "docid": "d", "text": "t"}, "'qid' must be a string or an integer"),
        ({"qid": "a b", "query": "q", "docid": "d", "text": "t"}, "contains whitespace"),
        ({"qid": 1, "query": "q", "docid": "d", "text": 5}, "'text' must be a string"),
        ({"qid": 1, "query": "q", "docid": "d", "text": "\ud800"}, "invalid unicode"),
        ({"qid": 1, "query": "q", "docid": "d", "text": b"caf\xe9"}, "not valid UTF-8"),
        ({"qid": 1, "query": "q", "docid": "d", "text": "t", "first_stage_score": "x"}, "finite number"),
        ({"qid": 1, "query": "q", "docid": "d", "text": "t", "first_stage_score": math.nan}, "finite number"),
        ([1, 2], "not an object"),
    ],
)
def test_unscorable_rows_get_a_reason(row: object, reason: str) -> None:
    parsed, err = parse_record(row)
    assert parsed is None and err is not None and reason in err


def test_good_rows_and_json_lines() -> None:
    assert parse_record({"qid": 7, "query": "q", "docid": 12, "text": "t", "first_stage_score": 3}) == (
        ("7", "q", "12", "t", 3.0),
        None,
    )
    assert "not valid UTF-8" in (parse_json_line(b'{"qid": 1, "text": "\xff"}')[1] or "")
    assert "invalid JSON" in (parse_json_line(b"{nope")[1] or "")


def test_shards_are_stable_and_spread() -> None:
    # Fixed values: a rerun (another process, another machine) must put a qid in the same shard.
    assert shard_of("1132213", 16) == 6
    counts = [0] * 8
    for i in range(800):
        counts[shard_of(str(i), 8)] += 1
    assert min(counts) > 60


def test_trec_scores_strictly_decreasing_and_order() -> None:
    s = strictly_decreasing([0.5, 0.5, 0.5, 0.2, 0.2, 0.1])
    assert all(a > b for a, b in zip(s, s[1:], strict=False))
    assert s[0] == 0.5 and s[3] == 0.2 and s[2] == pytest.approx(0.5, rel=1e-5)  # a small nudge
    assert float(repr(s[1])) == s[1]  # survives the text round trip
    keys = sorted(
        [
            order_key(0.5, 1.0, "b"),
            order_key(0.5, 2.0, "c"),
            order_key(0.5, 2.0, "a"),
            order_key(0.9, None, "z"),
        ]
    )
    assert [k[2] for k in keys] == ["z", "a", "c", "b"]
