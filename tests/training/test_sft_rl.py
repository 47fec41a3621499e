"""SFT and GRPO on the tiny random Qwen3 model: real TRL, PEFT and torch, a few steps each."""

from __future__ import annotations

import io
import json
import logging
import sys
from pathlib import Path

import pytest

from erank.training.config import EvalConfig, LoraConfig, RLConfig, SFTConfig


class _Terminal(io.StringIO):
    """A standard error that says it is a terminal: the progress bar is drawn into it."""

    def isatty(self) -> bool:
        return True


def test_sft_drives_the_target_loss_down_on_a_fixed_batch(
    tiny_qwen3_dir: Path,
    tmp_path: Path,
    make_toy_data,  # noqa: ANN001
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from erank import Reranker
    from erank.training.sft import run_sft

    data = make_toy_data(tmp_path / "one", n_queries=1)  # 3 pairs: every step sees the same batch
    cfg = SFTConfig(
        model=str(tiny_qwen3_dir),
        data=data,
        output_dir=tmp_path / "sft",
        lora=None,  # full fine-tuning: a random 2-layer model learns the target in a few steps
        learning_rate=1e-2,
        warmup_ratio=0.0,
        lr_scheduler_type="constant",
        max_steps=6,
        per_device_batch_size=3,
        logging_steps=1,
        save_steps=6,
        eval=EvalConfig(max_queries=1, candidates=3, truncate_length=64),
        eval_steps=6,
        cutoff=512,
    )
    caplog.set_level(logging.INFO, logger="erank.training")
    summary = run_sft(cfg)
    # progress: a line with the step, the loss and an ETA at every logged step; nothing on stdout
    # (the trainer's own printer wrote every log dict there, before the command's JSON)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("sft step ")]
    assert len(lines) == 6 and lines[0].startswith("sft step 1/6 steps") and "ETA" in lines[0]
    assert capsys.readouterr().out == ""
    losses = [x["loss"] for x in summary["loss"]]
    assert summary["steps"] == 6
    assert all(b < a for a, b in zip(losses, losses[1:], strict=False)), losses  # down at every step
    assert losses[-1] < 0.6 * losses[0], losses
    # the trained model against the same evaluation run independently on the merged folder
    from erank.training.evaluate import evaluate_model

    again = evaluate_model(
        tmp_path / "sft/merged", data / "eval.jsonl", max_queries=1, candidates=3, truncate_length=64
    )
    assert summary["val"][-1]["val_ndcg@10"] == pytest.approx(again["ndcg@10"], abs=1e-6)
    metrics = [json.loads(line) for line in (tmp_path / "sft/metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in metrics) and any("val_ndcg@10" in m for m in metrics)
    # the merged folder loads for inference and writes the trained scores (9 or 1)
    rr = Reranker(str(tmp_path / "sft/merged"), mode="direct")
    res = rr.score("what is rust", ["Rust is a systems programming language.", "Bread is baked."], "beir", 64)
    assert {s.label for s in res.scores} <= {1, 9}


def test_sft_with_lora_saves_an_adapter_and_resumes_after_a_kill(
    tiny_qwen3_dir: Path, toy_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from erank import Reranker
    from erank.training.sft import latest_checkpoint, run_sft

    def cfg(steps: int) -> SFTConfig:
        return SFTConfig(
            model=str(tiny_qwen3_dir),
            data=toy_data,
            output_dir=tmp_path / "lora",
            lora=LoraConfig(r=4, alpha=8),
            max_steps=steps,
            per_device_batch_size=3,
            save_steps=1,
            cutoff=512,
        )

    run_sft(cfg(1))  # as if killed after step 1: checkpoint-1 is on disk
    assert latest_checkpoint(tmp_path / "lora") == tmp_path / "lora/checkpoint-1"
    monkeypatch.delenv("ERANK_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", term := _Terminal())
    summary = run_sft(cfg(2))
    monkeypatch.undo()
    assert summary["resumed_from"].endswith("checkpoint-1") and summary["steps"] == 2
    drawn = term.getvalue()  # the step bar, from the resumed step 1 to 2 of 2
    assert "sft" in drawn and "2/2" in drawn and "ETA" in drawn
    adapter = tmp_path / "lora/adapter"
    assert (adapter / "adapter_config.json").is_file()
    assert sum(f.stat().st_size for f in adapter.iterdir()) < 5_000_000
    merged = Reranker(str(tmp_path / "lora/merged"), mode="direct").score("q", ["d", "e"], "beir", 64)
    # the adapter folder itself loads too (transformers' PEFT integration) and scores the same
    direct = Reranker(str(adapter), mode="direct").score("q", ["d", "e"], "beir", 64)
    for a, b in zip(merged.scores, direct.scores, strict=True):
        assert a.label == b.label and a.score == pytest.approx(b.score, rel=1e-3, abs=1e-6)


def test_sft_loss_is_on_the_target_only(tiny_qwen3_dir: Path, toy_data: Path) -> None:
    from erank.training.data import PromptBuilder
    from erank.training.sft import load_causal_lm, load_pairs, tokenize_pairs

    _, tok, _ = load_causal_lm(str(tiny_qwen3_dir))
    rows = load_pairs(toy_data)
    t = tokenize_pairs(rows, tok, 512, 64, "direct")[0]
    n_target = sum(1 for x in t["labels"] if x != -100)
    # "9</answer>" + EOS, and the prompt ids are exactly what the ERank direct mode scores
    assert tok.decode([x for x in t["labels"] if x != -100]) == "9</answer>" + tok.eos_token
    pb = PromptBuilder(tok, "direct", 64)
    prompt_ids = pb.engine.tokenizer.encode_prompt(
        pb.prompt(rows[0]["query"], rows[0]["doc"], rows[0]["instruction"])
    )
    assert t["input_ids"][: len(t["input_ids"]) - n_target] == prompt_ids


def _rl_cfg(model: Path, data: Path, out: Path, **kw: object) -> RLConfig:
    base: dict[str, object] = dict(
        model=str(model),
        data=data,
        output_dir=out,
        rollouts=3,
        queries_per_batch=1,
        learning_rate=1e-3,
        lora=LoraConfig(r=4, alpha=8),
        save_steps=2,
        cutoff=512,
        epochs=1,
    )
    base.update(kw)
    return RLConfig.model_validate(base)


def test_grpo_runs_checkpoints_and_resumes_to_the_same_end(
    scoring_tiny_dir: Path,
    toy_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import torch

    from erank.training.rl import run_rl

    # killed after 2 of 3 steps (one query per step), then resumed
    model = scoring_tiny_dir
    first = run_rl(_rl_cfg(model, toy_data, tmp_path / "a"), stop_after=2)
    assert first["stopped"] and (tmp_path / "a/checkpoint-2/trainable.pt").is_file()
    caplog.set_level(logging.INFO, logger="erank.training")
    monkeypatch.delenv("ERANK_NO_PROGRESS", raising=False)
    monkeypatch.setattr(sys, "stderr", term := _Terminal())
    resumed = run_rl(_rl_cfg(model, toy_data, tmp_path / "a"))
    monkeypatch.undo()
    assert resumed["steps"] == 3 and resumed["resumed_from"].endswith("checkpoint-2")
    drawn = term.getvalue()  # the step bar, from the resumed step 2 to 3 of 3
    assert "rl" in drawn and "3/3" in drawn and "ETA" in drawn
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("rl step ")]
    assert lines[-1].startswith("rl step 3/3 steps") and "ETA" in lines[-1]
    # an uninterrupted run reaches the same weights
    straight = run_rl(_rl_cfg(model, toy_data, tmp_path / "b"))
    assert straight["steps"] == 3
    wa = torch.load(tmp_path / "a/checkpoint-3/trainable.pt")
    wb = torch.load(tmp_path / "b/checkpoint-3/trainable.pt")
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa)
    w0 = torch.load(tmp_path / "a/checkpoint-2/trainable.pt")
    assert any(not torch.equal(w0[k], wa[k]) for k in wa), "the third step changed nothing"
    metrics = [json.loads(line) for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all(m["docs"] == 3 for m in metrics)  # every step holds all documents of its query
    assert min(m["unparsable"] for m in metrics) < 1.0
    # mini_batches (default 2): two optimiser steps per batch, so from the second one on the policy
    # (a fresh LoRA adapter: equal to the reference before the first) differs from the reference
    assert all(m["updates"] == 2 for m in metrics)
    assert all(m["kl"] > 0.0 for m in metrics), metrics
    assert (tmp_path / "b/final/config.json").is_file()


def test_completion_logprobs_match_one_sequence_at_a_time(
    tiny_qwen3_dir: Path, toy_data: Path, tmp_path: Path
) -> None:
    """Left-padded prompts + right-padded completions give each completion token the log-probability
    the model gives it in an unpadded forward pass (the reasoning-style GRPO loss rests on this)."""
    import torch

    from erank.training.rl import _Policy

    pol = _Policy(_rl_cfg(tiny_qwen3_dir, toy_data, tmp_path / "o"), "reasoning")
    pol.model.eval()
    prompts = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    comps = [[20, 21], [22, 23, 24, 25]]
    with torch.no_grad():
        lp, mask = pol.completion_logprobs(pol.model, prompts, comps)
        assert mask.tolist() == [[1, 1, 0, 0], [1, 1, 1, 1]]
        assert lp[0, 2:].abs().sum() == 0
        for r, (p, c) in enumerate(zip(prompts, comps, strict=True)):
            logits = pol.model(input_ids=torch.tensor([p + c])).logits[0].float()
            want = torch.log_softmax(logits[len(p) - 1 : len(p) + len(c) - 1], -1)
            want = want.gather(-1, torch.tensor(c).unsqueeze(-1)).squeeze(-1)
            assert torch.allclose(lp[r, : len(c)], want, atol=1e-4), (r, lp[r], want)


def test_grpo_reasoning_style_runs_checkpoints_and_resumes(
    answering_tiny_dir: Path,
    tmp_path: Path,
    make_toy_data,  # noqa: ANN001
) -> None:
    """Reasoning-style rollouts: G generated completions per document, parsed, rewarded listwise."""
    import torch

    from erank.training.rl import run_rl

    data = make_toy_data(tmp_path / "r", style="reasoning", n_queries=2)
    kw: dict[str, object] = dict(max_new_tokens=24, temperature=1.1, micro_batch=6)
    first = run_rl(_rl_cfg(answering_tiny_dir, data, tmp_path / "a", **kw), stop_after=1)
    assert first["stopped"]
    resumed = run_rl(_rl_cfg(answering_tiny_dir, data, tmp_path / "a", **kw))
    assert resumed["steps"] == 2 and resumed["style"] == "reasoning"
    assert run_rl(_rl_cfg(answering_tiny_dir, data, tmp_path / "b", **kw))["steps"] == 2
    wa = torch.load(tmp_path / "a/checkpoint-2/trainable.pt")
    wb = torch.load(tmp_path / "b/checkpoint-2/trainable.pt")
    assert all(torch.allclose(wa[k], wb[k], atol=1e-6) for k in wa), "a resumed run drew other rollouts"
    metrics = [json.loads(line) for line in (tmp_path / "b/metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2]
    assert all(m["docs"] == 3 for m in metrics)
    # trained to answer <think>short</think><answer>7</answer>; at temperature 1.1 most rollouts parse,
    # some do not, so rewards differ within a group and the advantages are not all 0
    assert min(m["unparsable"] for m in metrics) < 0.5
    assert all(0 < m["completion_tokens"] <= 24 for m in metrics)
    assert all(m["updates"] == 2 for m in metrics)
    assert all(m["kl"] > 0.0 for m in metrics), metrics  # the second update sees a moved policy
    w0 = torch.load(tmp_path / "a/checkpoint-1/trainable.pt")
    assert any(not torch.equal(w0[k], wa[k]) for k in wa), "the second step changed nothing"
    assert (tmp_path / "b/final/config.json").is_file()


def _direct_policy(model: Path, data: Path, out: Path, **kw: object):  # noqa: ANN202
    from erank.training.rl import _Policy
    from erank.training.sft import load_pairs

    cfg = _rl_cfg(model, data, out, **kw)
    pol = _Policy(cfg, "direct")
    pol.builder.truncate_length = 64
    rows = load_pairs(data)
    encode = pol.builder.engine.tokenizer.encode_prompt
    prompts = [encode(pol.builder.prompt(r["query"], r["doc"], r["instruction"])) for r in rows]
    return cfg, pol, rows, prompts


@pytest.mark.parametrize(("inner_epochs", "mini_batches"), [(1, 1), (3, 1), (1, 3)])
def test_the_ppo_clip_acts_only_after_the_first_update_of_a_batch(
    scoring_tiny_dir: Path, toy_data: Path, tmp_path: Path, inner_epochs: int, mini_batches: int
) -> None:
    """One optimiser step per rollout batch: the ratio is exactly 1 (nothing clipped) and the
    policy is the reference (KL 0). Several (inner epochs or mini-batches) at a large learning
    rate: the later steps see a moved policy, ratios leave 1 +- clip and the KL grows."""
    import torch

    from erank.training.rl import _direct_step

    cfg, pol, rows, prompts = _direct_policy(
        scoring_tiny_dir,
        toy_data,
        tmp_path / "o",
        lora=None,  # full parameters: the reference is a frozen copy of the start
        learning_rate=1e-2,
        rollouts=8,
        inner_epochs=inner_epochs,
        mini_batches=mini_batches,
    )
    opt = torch.optim.AdamW(pol.trainable(), lr=cfg.learning_rate, weight_decay=0.0)
    batch = [i for i, r in enumerate(rows) if r["qid"] == "q1"]
    stats = _direct_step(pol, opt, cfg, rows, prompts, batch, 0)
    assert stats["updates"] == inner_epochs * mini_batches
    if stats["updates"] == 1:
        assert stats["clip_frac"] == 0.0
        assert stats["kl"] == pytest.approx(0.0, abs=1e-9)
    else:
        assert stats["clip_frac"] > 0.0, stats
        assert stats["kl"] > 1e-4, stats


def test_rl_refuses_a_query_without_a_positive(scoring_tiny_dir: Path, tmp_path: Path, make_toy_data) -> None:  # noqa: ANN001
    import torch

    from erank.errors import InputError
    from erank.training.rl import _query_rewards, run_rl

    data = make_toy_data(tmp_path / "d")
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    for r in rows:
        if r["qid"] == "q2":
            r["is_positive"] = False
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"1 of 3 queries have no positive document .*'q2'"):
        run_rl(_rl_cfg(scoring_tiny_dir, data, tmp_path / "o"))
    # r_SE needs no positive: the same data trains
    assert (
        run_rl(_rl_cfg(scoring_tiny_dir, data, tmp_path / "se", reward={"kind": "se"}, max_steps=1))["steps"]
        == 1
    )
    # and a batch whose group has lost its positive is refused when rewarding it
    cfg = _rl_cfg(scoring_tiny_dir, data, tmp_path / "o")
    batch = [i for i, r in enumerate(rows) if r["qid"] == "q2"]
    scores = [[9, 1, 9]] * len(batch)
    with pytest.raises(InputError, match="'q2' has no positive document in its group"):
        _query_rewards(cfg, rows, batch, scores, [0.0] * len(batch))
    ok = [i for i, r in enumerate(rows) if r["qid"] == "q1"]
    rewards, adv = _query_rewards(cfg, rows, ok, [[9, 1, 9]] * len(ok), [0.0] * len(ok))
    assert rewards.shape == adv.shape == torch.Size([3, 3])


def test_rl_drops_a_query_whose_positive_prompt_is_too_long(
    scoring_tiny_dir: Path,
    tmp_path: Path,
    make_toy_data,  # noqa: ANN001
) -> None:
    from erank.training.data import PromptBuilder
    from erank.training.rl import run_rl
    from erank.training.sft import load_causal_lm

    data = make_toy_data(tmp_path / "d")
    rows = [json.loads(line) for line in (data / "train.jsonl").read_text().splitlines()]
    long_doc = "Rust is a systems programming language with a borrow checker. " * 20  # cut to 64 tokens
    for r in rows:
        if (r["qid"], r["is_positive"]) == ("q1", True) or r["docid"] == "q2-d2":
            r["doc"] = long_doc
    (data / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, tok, _ = load_causal_lm(str(scoring_tiny_dir))
    pb = PromptBuilder(tok, "direct", 64)
    lengths = [
        len(pb.engine.tokenizer.encode_prompt(pb.prompt(r["query"], r["doc"], r["instruction"])))
        for r in rows
    ]
    short = max(n for n, r in zip(lengths, rows, strict=True) if r["doc"] != long_doc)
    assert short + 2 < min(n for n, r in zip(lengths, rows, strict=True) if r["doc"] == long_doc)
    summary = run_rl(_rl_cfg(scoring_tiny_dir, data, tmp_path / "o", cutoff=short + 2))
    assert (summary["dropped_prompts"], summary["dropped_queries"], summary["steps"]) == (2, 1, 2)
    metrics = [json.loads(line) for line in (tmp_path / "o/metrics.jsonl").read_text().splitlines()]
    assert sorted(m["docs"] for m in metrics) == [2, 3]  # q2 without its long negative, q3 whole
