"""The shipped default erank-smol: its checksum, the LoRA merge, and obvious cases with the real model."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import torch

from erank.errors import ModelLoadError
from erank.models import (
    BASE_MODEL,
    DEFAULT_MODEL,
    default_method_settings,
    embedded_adapter_dir,
    merge_lora,
    resolve_model,
    verify_embedded_adapter,
)

REPO = Path(__file__).resolve().parents[1]


def test_the_shipped_adapter_is_small_and_passes_its_checksum() -> None:
    folder = verify_embedded_adapter()
    weights = folder / "adapter_model.safetensors"
    assert weights.stat().st_size < 20 * 1024 * 1024
    recorded = dict(
        reversed(line.split(maxsplit=1)) for line in (folder / "SHA256SUMS").read_text().splitlines()
    )
    assert recorded["adapter_model.safetensors"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert json.loads((folder / "adapter_config.json").read_text())["r"] >= 1


def test_a_changed_adapter_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import erank.models as models

    copy = tmp_path / DEFAULT_MODEL
    shutil.copytree(embedded_adapter_dir(), copy)
    data = bytearray((copy / "adapter_model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "adapter_model.safetensors").write_bytes(bytes(data))
    monkeypatch.setattr(models, "embedded_adapter_dir", lambda: copy)
    with pytest.raises(ModelLoadError, match="fails its checksum"):
        models.verify_embedded_adapter()
    (copy / "adapter_model.safetensors").unlink()
    with pytest.raises(ModelLoadError, match="missing"):
        models.verify_embedded_adapter()


def test_default_names_resolve_to_the_trained_model_and_the_base_stays_selectable() -> None:
    assert resolve_model(None).kind == "embedded" and resolve_model(None).name == DEFAULT_MODEL
    assert resolve_model("default").name == DEFAULT_MODEL
    base = resolve_model(BASE_MODEL)
    assert base.kind == "gguf" and base.location.endswith(".gguf")
    assert default_method_settings(None) == {"mode": "direct", "rule": "expected", "template": "erank_smol"}
    assert default_method_settings(BASE_MODEL) == {"mode": "direct"}
    assert default_method_settings("Alibaba-NLP/ERank-4B") == {"mode": "reasoning"}


def test_merging_a_peft_adapter_gives_the_adapted_model_s_logits(
    tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    peft_model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir),
        LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False),
    )
    peft_model.save_pretrained(tmp_path / "adapter")
    ids = torch.tensor([[5, 17, 99, 3, 42]])
    with torch.no_grad():
        want = peft_model(input_ids=ids).logits
        plain = AutoModelForCausalLM.from_pretrained(tiny_qwen3_dir)
        before = plain(input_ids=ids).logits
        assert merge_lora(plain, tmp_path / "adapter") > 0
        got = plain(input_ids=ids).logits
    assert not torch.allclose(before, want, atol=1e-3)  # the adapter matters
    assert torch.allclose(got, want, atol=1e-4)


CASES = [
    (
        "what is the capital of france",
        "Paris is the capital and largest city of France.",
        [
            "Bananas are a yellow fruit rich in potassium.",
            "The Amazon is the largest rainforest on Earth.",
            "Photosynthesis turns light into chemical energy in plants.",
        ],
    ),
    (
        "how do vaccines work",
        "Vaccines train the immune system to recognise a pathogen by exposing it to a harmless antigen.",
        [
            "The stock market fell sharply on Monday.",
            "Sourdough bread needs a starter culture.",
            "Coral reefs are built by tiny animals.",
        ],
    ),
    (
        "symptoms of dehydration",
        "Signs of dehydration include thirst, dark urine, dizziness, dry mouth and fatigue.",
        [
            "The Eiffel Tower was completed in 1889.",
            "Jupiter is the largest planet in the solar system.",
            "A sonnet is a poem of fourteen lines.",
        ],
    ),
    (
        "how to boil an egg",
        "Place the egg in boiling water for about nine minutes, then cool it in cold water and peel it.",
        [
            "Interest rates are set by the central bank.",
            "Penguins live in the southern hemisphere.",
            "Python is a programming language.",
        ],
    ),
    (
        "who wrote romeo and juliet",
        "Romeo and Juliet is a tragedy written by William Shakespeare early in his career.",
        [
            "Mount Everest is the highest mountain above sea level.",
            "Electric cars use lithium batteries.",
            "The violin has four strings.",
        ],
    ),
]


@pytest.fixture
def as_a_user_gets_it(monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's own default precision (bf16 autocast where the CPU has bf16 units)."""
    monkeypatch.delenv("ERANK_CPU_BF16", raising=False)


@pytest.mark.slow
def test_the_default_ranks_the_obvious_answer_first(as_a_user_gets_it: None) -> None:
    from erank import Reranker

    reranker = Reranker()
    assert reranker.model_name == DEFAULT_MODEL and reranker.mode == "direct"
    for query, good, bad in CASES:
        rows = reranker.rerank(query, [*bad[:2], good, bad[2]], "beir")
        assert rows[0]["content"] == good, (query, [r["content"][:30] for r in rows])
        assert all("expected_score" in r for r in rows)
        assert rows[0]["rank_score"] == pytest.approx(rows[0]["expected_score"])


@pytest.mark.slow
def test_the_readme_sample_puts_vaccines_first_and_off_topic_last(as_a_user_gets_it: None) -> None:
    from erank import Reranker

    docs = [json.loads(line) for line in (REPO / "examples/sample.jsonl").read_text().splitlines()]
    rows = Reranker().rerank("how do vaccines train the immune system", docs, "beir")
    order = [r["content"].lower() for r in rows]
    assert sorted(r["id"] for r in rows[:2]) == ["d1", "d5"], order  # the two vaccine passages
    off_topic = [t for t in order if any(w in t for w in ("reef", "bread", "sourdough", "stock"))]
    assert len(off_topic) == 3 and order[-3:] == off_topic, order
