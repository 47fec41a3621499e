"""The direct-style pointwise trainer (SFT + GRPO) on the tiny random Qwen3 model, and its pure parts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from erank.errors import InputError
from erank.scoring import ScoreTokens, label_probabilities
from erank.training.config import LoraConfig, RLConfig, SFTConfig
from erank.training.pointwise import (
    _pick_group,
    grpo_loss,
    score_logprobs_batch,
    sft_loss,
    two_point_target,
)


@pytest.mark.parametrize("t", [0.0, 0.3, 4.5, 7.25, 9.99, 10.0])
def test_two_point_target_is_a_distribution_whose_mean_is_the_target(t: float) -> None:
    d = two_point_target(t)
    assert abs(sum(d) - 1.0) < 1e-9
    assert abs(sum(s * p for s, p in enumerate(d)) - t) < 1e-9
    assert sum(1 for p in d if p > 0) <= 2


def test_batched_score_logprobs_match_the_inference_rule() -> None:
    # "10" = "1" then "0" (token ids 33, 32 in SmolLM2's tokenizer); single digits 32..41.
    st = ScoreTokens(tuple((32 + s,) for s in range(10)) + ((33, 32),))
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 2, 60, generator=g) * 3
    got = torch.exp(score_logprobs_batch(st, logits))[:, :11]  # the 12th column: anything else
    for b in range(3):
        lp1 = torch.log_softmax(logits[b, 0], -1)
        lp2 = torch.log_softmax(logits[b, 1], -1)
        want = label_probabilities(
            st, {t: float(lp1[t]) for t in range(60)}, {t: float(lp2[t]) for t in range(60)}
        )
        assert torch.allclose(got[b], torch.tensor(want), atol=1e-5), (got[b], want)


def test_sft_loss_prefers_the_teacher_order() -> None:
    targets = torch.tensor([9.0, 1.0])
    right = torch.log(torch.tensor([two_point_target(8.9), two_point_target(1.2)]) * 0.98 + 0.001)
    wrong = torch.log(torch.tensor([two_point_target(1.2), two_point_target(8.9)]) * 0.98 + 0.001)
    assert sft_loss(right, targets)[0] < sft_loss(wrong, targets)[0]
    # the listwise term alone also prefers it
    assert sft_loss(right, targets)[1]["listwise"] < sft_loss(wrong, targets)[1]["listwise"]


def test_a_grpo_step_raises_positive_advantage_samples_and_lowers_negative_ones() -> None:
    logits = torch.nn.Parameter(torch.zeros(1, 12))
    old = torch.log_softmax(logits.detach(), -1)
    samples = torch.tensor([[3, 7]])
    adv = torch.tensor([[1.0, -1.0]])
    opt = torch.optim.SGD([logits], lr=0.5)
    loss, _ = grpo_loss(torch.log_softmax(logits, -1), old, old, samples, adv, clip=0.2, kl_coef=0.0)
    loss.backward()
    opt.step()
    p = torch.softmax(logits.detach(), -1)[0]
    assert p[3] > 1 / 12 > p[7]


def test_the_clip_stops_the_gradient_once_the_ratio_left_the_trust_region() -> None:
    logits = torch.nn.Parameter(torch.tensor([[2.0] + [0.0] * 11]))
    old = torch.log_softmax(torch.zeros(1, 12), -1)  # the sample's ratio is e^2 / (e^2 + 11) * 12 >> 1.2
    loss, parts = grpo_loss(
        torch.log_softmax(logits, -1), old, old, torch.tensor([[0]]), torch.tensor([[1.0]]), 0.2, 0.0
    )
    loss.backward()
    assert parts["clipped"] == 1.0
    assert logits.grad is not None and float(logits.grad.abs().sum()) == 0.0


def test_the_kl_term_pulls_towards_the_reference() -> None:
    logits = torch.nn.Parameter(torch.tensor([[3.0] + [0.0] * 11]))
    ref = torch.log_softmax(torch.zeros(1, 12), -1)
    loss, parts = grpo_loss(
        torch.log_softmax(logits, -1), ref, ref, torch.tensor([[1]]), torch.tensor([[0.0]]), 0.2, 1.0
    )
    assert parts["kl"] > 0.1
    loss.backward()
    assert logits.grad is not None and float(logits.grad[0, 0]) > 0  # descent lowers the peaked logit


def test_a_group_without_a_positive_is_refused() -> None:
    import random

    rows = [{"target": 1.0, "grade": 0}, {"target": 2.0, "grade": 0}]
    with pytest.raises(InputError, match="no positive"):
        _pick_group(rows, 2, 5.0, random.Random(0))
    rows.append({"target": 8.0, "grade": 3})
    assert any(r["target"] >= 5 for r in _pick_group(rows, 2, 5.0, random.Random(0)))


def _sft_cfg(model: Path, data: Path, out: Path, steps: int) -> SFTConfig:
    return SFTConfig(
        model=str(model),
        trainer="pointwise",
        data=data,
        output_dir=out,
        lora=LoraConfig(r=4, alpha=8),
        learning_rate=3e-2,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        max_steps=steps,
        docs_per_step=3,
        per_device_batch_size=2,
        save_steps=2,
        logging_steps=1,
        cutoff=512,
        bf16=False,
    )


def _lora(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_pointwise_sft_learns_and_resumes_exactly_after_a_kill(
    tiny_qwen3_dir: Path, toy_data: Path, tmp_path: Path
) -> None:
    from erank.training.pointwise import run_pointwise_sft

    full = run_pointwise_sft(_sft_cfg(tiny_qwen3_dir, toy_data, tmp_path / "full", 8))
    assert full["steps"] == 8
    losses = [json.loads(x)["loss"] for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses  # nats
    # killed after step 4 (the checkpoint of step 4 is on disk), then resumed: the same weights
    part = run_pointwise_sft(_sft_cfg(tiny_qwen3_dir, toy_data, tmp_path / "cut", 8), stop_after=4)
    assert part["stopped"]
    run_pointwise_sft(_sft_cfg(tiny_qwen3_dir, toy_data, tmp_path / "cut", 8))
    a, b = _lora(tmp_path / "full/adapter"), _lora(tmp_path / "cut/adapter")
    assert a.keys() == b.keys()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_pointwise_rl_moves_the_policy_and_the_clip_acts(
    answering_tiny_dir: Path, toy_data: Path, tmp_path: Path
) -> None:
    """From a tiny model that answers "7" (so its samples are scores, not "anything else")."""
    from erank.training.pointwise import run_pointwise_rl, run_pointwise_sft

    tiny_qwen3_dir = answering_tiny_dir
    run_pointwise_sft(_sft_cfg(tiny_qwen3_dir, toy_data, tmp_path / "sft", 2))

    def cfg(out: str) -> RLConfig:
        return RLConfig(
            model=str(tmp_path / "sft/adapter"),
            base_model=str(tiny_qwen3_dir),
            trainer="pointwise",
            data=toy_data,
            output_dir=tmp_path / out,
            rollouts=4,
            docs_per_query=3,
            mini_batches=3,
            positive_target=5.0,
            learning_rate=2e-1,
            max_steps=3,
            micro_batch=3,
            save_steps=1,
            bf16=False,
        )

    summary = run_pointwise_rl(cfg("rl"))
    assert summary["steps"] == 3
    recs = [json.loads(x) for x in (tmp_path / "rl/metrics.jsonl").read_text().splitlines()]
    assert all(math.isfinite(r["reward"]) for r in recs)
    # later mini-batches see a moved policy: some ratios leave 1 +- 0.2 at this learning rate
    assert max(r["clipped"] for r in recs) > 0
    before, after = _lora(tmp_path / "sft/adapter"), _lora(tmp_path / "rl/adapter")
    assert any(not torch.allclose(before[k], after[k]) for k in before)
    # resume after a kill gives the same adapter
    run_pointwise_rl(cfg("cut"), stop_after=1)
    run_pointwise_rl(cfg("cut"))
    c = _lora(tmp_path / "cut/adapter")
    assert all(torch.allclose(after[k], c[k], atol=1e-6) for k in after)


def test_cached_lower_layers_score_exactly_like_the_full_forward(tiny_qwen3_dir: Path) -> None:
    """``lora.top_layers``: the frozen lower layers' output is cached per prompt; the scores from
    the cache equal the full forward pass's (so training on it trains what inference runs)."""
    from erank.training.pointwise import _Model

    m = _Model(str(tiny_qwen3_dir), LoraConfig(r=4, alpha=8, top_layers=1), None, bf16=False)
    n_layers = m.model.get_base_model().config.num_hidden_layers
    assert m.split == n_layers - 1
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.trainable():  # a non-zero adapter, so the upper layers' LoRA matters
            p.copy_(torch.randn(p.shape, generator=g) * 0.5)
    rows = [{"ids": [5 + (i * 7 + j) % 90 for j in range(4 + 3 * i)]} for i in range(5)]
    m.cache_lower(rows, micro=2)
    assert all(r["h"].shape[0] == len(r["ids"]) + len(m.ext) for r in rows)
    cached = m.forward(rows, micro=3)
    split, m.split = m.split, 0
    full = m.forward(rows, micro=3)
    m.split = split
    assert torch.allclose(cached, full, atol=1e-4), (cached - full).abs().max()
    # and the adapter really is confined to the top layer
    names = [n for n, p in m.model.named_parameters() if p.requires_grad]
    assert names and all(f"layers.{n_layers - 1}." in n for n in names)


@pytest.mark.parametrize("fixture", ["tiny_qwen3_dir", "tiny_llama_dir"])
def test_shared_prefix_pass_gives_the_plain_passs_scores_and_gradients(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    """One query's documents share the prompt's start; running it once must change nothing the
    optimiser sees: the same log-probabilities and the same LoRA gradients as the plain pass."""
    from erank.training.pointwise import _Model

    m = _Model(str(request.getfixturevalue(fixture)), LoraConfig(r=4, alpha=8), None, bf16=False)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in m.trainable():  # a non-zero adapter, so the prefix's keys and values carry gradient
            p.copy_(torch.randn(p.shape, generator=g) * 0.3)
    prefix = [5 + (j * 11) % 90 for j in range(20)]
    rows = [{"ids": prefix + [7 + (i * 13 + j) % 80 for j in range(2 + 3 * i)]} for i in range(5)]
    targets = torch.tensor([1.0, 8.0, 3.0, 10.0, 0.0])

    def run(share: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
        m.share_prefix = share
        m.model.zero_grad(set_to_none=True)
        lp = m.forward(rows, micro=2)
        sft_loss(lp, targets)[0].backward()
        return lp.detach(), [p.grad.clone() for p in m.trainable()]

    calls = []
    handle = m.model.register_forward_pre_hook(lambda _mod, args, kw: calls.append(kw), with_kwargs=True)
    shared, g_shared = run(True)
    handle.remove()
    assert any(c.get("past_key_values") is not None for c in calls), "the shared path did not run"
    plain, g_plain = run(False)
    assert torch.allclose(shared, plain, atol=1e-4), (shared - plain).abs().max()
    for a, b in zip(g_shared, g_plain, strict=True):
        assert torch.allclose(a, b, atol=1e-4, rtol=1e-3), (a - b).abs().max()
    # rows without a common start of min_prefix_tokens take the plain pass
    m.share_prefix = True
    assert m._forward_shared([{"ids": [5, 6, 7]}, {"ids": [9, 6, 7]}], micro=2) is None


def test_pointwise_sft_on_top_layers_learns_and_resumes(
    tiny_qwen3_dir: Path, toy_data: Path, tmp_path: Path
) -> None:
    from erank.training.pointwise import run_pointwise_sft

    def cfg(out: str) -> SFTConfig:
        c = _sft_cfg(tiny_qwen3_dir, toy_data, tmp_path / out, 8)
        return c.model_copy(update={"lora": LoraConfig(r=4, alpha=8, top_layers=1)})

    run_pointwise_sft(cfg("full"))
    losses = [json.loads(x)["loss"] for x in (tmp_path / "full/metrics.jsonl").read_text().splitlines()]
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.3, losses
    run_pointwise_sft(cfg("cut"), stop_after=4)
    run_pointwise_sft(cfg("cut"))
    a, b = _lora(tmp_path / "full/adapter"), _lora(tmp_path / "cut/adapter")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
