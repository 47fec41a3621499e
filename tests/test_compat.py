"""The official ERank classes: the input dicts come back as they were, instructions as the official code reads them."""

from __future__ import annotations

import pytest

from erank import ERank_Transformer
from erank.compat import official_instruction
from erank.prompts import InstructionText, resolve_instruction


@pytest.fixture(scope="module")
def official(answering_tiny_dir):
    return ERank_Transformer(str(answering_tiny_dir), max_new_tokens=24)


def test_input_dicts_come_back_with_their_own_values_and_types(official):
    docs = [
        {"id": 1, "content": "excited", "first_stage_score": 46, "meta": {"source": ["a", 2]}},
        {"id": 2, "content": "sad", "first_stage_score": 1.5},
        {"id": 3, "content": "peaceful"},
    ]
    results = official.rerank("I am happy", docs, "Retrieval the relevant passage.", truncate_length=2048)
    assert sorted(r["id"] for r in results) == [1, 2, 3]  # integers, not "1"
    by_id = {r["id"]: r for r in results}
    assert by_id[1]["first_stage_score"] == 46 and isinstance(by_id[1]["first_stage_score"], int)
    assert by_id[1]["meta"] == {"source": ["a", 2]}
    assert "first_stage_score" not in by_id[3]
    for r, d in ((by_id[i], docs[i - 1]) for i in (1, 2, 3)):
        assert {k: v for k, v in r.items() if k != "rank_score"} == d
    assert [r["rank_score"] for r in results] == sorted((r["rank_score"] for r in results), reverse=True)
    assert all("rank_score" not in d for d in docs)  # the caller's dicts are not modified
    assert official.rerank("I am happy", ["excited", "sad"], "beir", top_k=1)[0].keys() == {
        "content",
        "rank_score",
    }


def test_a_one_word_instruction_is_free_text(official):
    # The library's own API refuses a near-name as a probable typo; the official classes do not.
    results = official.rerank("I am happy", [{"id": 7, "content": "excited"}], "relevance")
    assert results[0]["id"] == 7
    assert official_instruction("relevance") == "relevance"
    assert isinstance(official_instruction("relevance"), InstructionText)
    assert resolve_instruction(official_instruction("relevance")) == "relevance"
    # an exact name is still a name
    assert official_instruction("beir") == "beir" and not isinstance(
        official_instruction("beir"), InstructionText
    )
    assert resolve_instruction(official_instruction("bright/leetcode")).startswith("I am looking to find")


def test_official_class_keeps_reasoning_mode_for_model_folders(official):
    assert official.mode == "reasoning"  # the published checkpoints' reference behaviour


@pytest.mark.slow
def test_official_class_ranks_with_the_embedded_default_model():
    # ERank_Transformer(None) used to force reasoning mode on erank-smol: nothing parsed, every score 0
    reranker = ERank_Transformer(None)
    assert reranker.mode == "direct"
    docs = [{"id": 1, "content": "The immune system learns from vaccines."}, {"id": 2, "content": "Bread."}]
    results = reranker.rerank("how do vaccines work", docs, "beir")
    assert all(r["rank_score"] > 0 for r in results) and {r["id"] for r in results} == {1, 2}
