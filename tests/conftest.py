"""Shared fixtures: tiny random models at real architecture, the real default model, shared data.

* ``tiny_qwen3_dir`` / ``tiny_llama_dir``: Qwen3 / Llama models with random weights built from a
  config (2 layers, hidden 64) and the SmolLM2 tokenizer (a real tokenizer with a chat template),
  saved as ordinary model folders. Milliseconds per forward pass.
* ``answering_tiny_dir``: the tiny Qwen3 trained for a few seconds to always write
  ``<think>short</think><answer>7</answer>``, so reasoning-mode parsing runs through real generation.
* ``smollm2_dir``: the embedded default model converted once into the cache (slow tests only).
* ``shared_data``: ``../shared/data``; tests that need it skip with a clear reason when absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ERANK_SHARED_DATA", REPO.parent / "shared" / "data"))
ANSWER_TEXT = "<think>short</think><answer>7</answer>"


# Numerical tests compare paths (batched vs one by one, shared prefix vs plain) at fp32 tolerances:
# they run the CPU engine in fp32. The bf16 default is exercised where it is named
# (tests/test_default_model.py runs the shipped model exactly as a user gets it).
os.environ.setdefault("ERANK_CPU_BF16", "0")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "README.md").exists():
        pytest.skip(f"../shared/data is absent ({SHARED_DATA}); this test needs the shared IR collections")
    return SHARED_DATA


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded default model as a transformers folder (converted once, cached)."""
    from erank.models import default_gguf_path, ensure_converted_gguf

    return ensure_converted_gguf(default_gguf_path())


@pytest.fixture(scope="session")
def smollm2_gguf() -> Path:
    from erank.models import default_gguf_path

    return default_gguf_path()


@pytest.fixture(scope="session")
def tiny_tokenizer(smollm2_dir: Path):  # noqa: ANN201
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_dir)


def _tiny(arch: str, tok, seed: int = 0):  # noqa: ANN001, ANN202
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    common = dict(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        tie_word_embeddings=True,
    )
    if arch == "qwen3":
        model = Qwen3ForCausalLM(Qwen3Config(head_dim=16, **common))
    else:
        model = LlamaForCausalLM(LlamaConfig(**common))
    return model.eval()


@pytest.fixture(scope="session")
def tiny_qwen3_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("tiny-qwen3")
    _tiny("qwen3", tiny_tokenizer).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    path = tmp_path_factory.mktemp("tiny-llama")
    _tiny("llama", tiny_tokenizer, seed=1).save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def answering_tiny_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer) -> Path:  # noqa: ANN001
    """A tiny Qwen3 overfitted to answer every ERank prompt with ``ANSWER_TEXT`` (a few seconds)."""
    from erank.prompts import render_template

    model = _tiny("qwen3", tiny_tokenizer, seed=2).train()
    prompts = [
        tiny_tokenizer.apply_chat_template(
            [{"role": "user", "content": render_template("erank", instruction="i", query=q, doc=d)}],
            tokenize=False,
            add_generation_prompt=True,
        )
        for q, d in [("a", "b"), ("what is rust", "Rust is a language."), ("tea", "Green tea is a drink.")]
    ]
    target = tiny_tokenizer(ANSWER_TEXT + tiny_tokenizer.eos_token, add_special_tokens=False)["input_ids"]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(120):
        p = tiny_tokenizer(prompts[step % len(prompts)], add_special_tokens=False)["input_ids"]
        ids = torch.tensor([p + target])
        hidden = model.model(input_ids=ids).last_hidden_state[:, len(p) - 1 : -1]
        logits = model.lm_head(hidden)[0]
        loss = torch.nn.functional.cross_entropy(logits, torch.tensor(target))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    path = tmp_path_factory.mktemp("tiny-answering")
    model.save_pretrained(path)
    tiny_tokenizer.save_pretrained(path)
    return path
