"""Fixtures for the training tests: a small synthetic training set in the layout of ``erank train data``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

QUERIES = {
    "q1": (
        "what is rust",
        ["Rust is a systems programming language.", "Bread is baked.", "The sea is blue."],
    ),
    "q2": ("green tea", ["Green tea is a drink made from leaves.", "Cars have wheels.", "Snow is cold."]),
    "q3": ("python snakes", ["Pythons are large snakes.", "Tables are furniture.", "Music has rhythm."]),
}


def write_toy_data(root: Path, style: str = "direct", n_queries: int = 3) -> Path:
    """``n_queries`` queries x three documents (the first positive, target 9; the others 1)."""
    from erank.prompts import resolve_instruction
    from erank.training.data import target_text

    root.mkdir(parents=True, exist_ok=True)
    instr = resolve_instruction("beir")
    rows = []
    chosen = dict(list(QUERIES.items())[:n_queries])
    for qid, (query, docs) in chosen.items():
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
            "candidates": [
                {"docid": f"{qid}-d{i}", "content": d, "score": float(3 - i)} for i, d in enumerate(docs)
            ][::-1],
            "qrels": {f"{qid}-d0": 1},
        }
        for qid, (query, docs) in chosen.items()
    ]
    with (root / "eval.jsonl").open("w", encoding="utf-8") as fh:
        for r in evals:
            fh.write(json.dumps(r) + "\n")
    (root / "params.json").write_text(json.dumps({"config": {"truncate_length": 64, "target_style": style}}))
    return root


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():  # noqa: ANN202
    """One intra-op thread: on the shared 2-core machine two threads spin against other jobs and the
    tiny-model steps run about 2.5x slower (measured); restored after each module."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def toy_data(tmp_path: Path) -> Path:
    return write_toy_data(tmp_path / "data")


@pytest.fixture
def make_toy_data():  # noqa: ANN201
    return write_toy_data


@pytest.fixture(scope="session")
def scoring_tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    """The tiny random Qwen3 trained for a few seconds to answer "1" or "9" after the direct suffix.

    A random model puts ~0.02% of its mass on score tokens, so every GRPO rollout would be
    unparsable and every advantage 0; this one writes scores, undecided between 1 and 9.
    """
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    from erank.training.data import PromptBuilder

    torch.manual_seed(3)
    model = Qwen3ForCausalLM(
        Qwen3Config(
            vocab_size=len(tiny_tokenizer),
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=8192,
            eos_token_id=tiny_tokenizer.eos_token_id,
            pad_token_id=tiny_tokenizer.pad_token_id,
            tie_word_embeddings=True,
        )
    ).train()
    pb = PromptBuilder(tiny_tokenizer, "direct", 64)
    from erank.prompts import resolve_instruction

    pairs = []
    for q, docs in QUERIES.values():
        for d in docs:
            for target in ("1</answer>", "9</answer>"):
                pairs.append(pb.encode(pb.prompt(q, d, resolve_instruction("beir")), target))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see _one_torch_thread (this session fixture is built before it)
    for step in range(40):
        p, c = pairs[step % len(pairs)]
        # logits only where the target is predicted (the full 49k-vocabulary rows are the cost)
        logits = model(input_ids=torch.tensor([p + c[:-1]]), logits_to_keep=len(c)).logits[0]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(c))
        opt.zero_grad()
        loss.backward()
        opt.step()
    torch.set_num_threads(threads)
    path = tmp_path_factory.mktemp("tiny-scoring")
    model.eval().save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
