"""Supervised fine-tuning (spec 3.1): TRL's ``SFTTrainer`` with a PEFT LoRA adapter.

The dataset is pre-tokenised here so that the prompt is exactly the token sequence the ERank
method scores at inference (same template, truncation, chat template, ``DIRECT_SUFFIX`` in
direct style) and the loss falls only on the target: ``labels`` are -100 over the prompt.
TRL leaves a dataset that already has ``input_ids`` and ``labels`` as it is.

Outputs in ``output_dir``: ``checkpoint-*`` (resumed automatically after a kill), ``adapter/``
(the LoRA adapter), ``merged/`` (a plain model folder: ``Reranker(model="<output_dir>/merged")``),
``metrics.jsonl`` (loss and validation nDCG@10 as they are logged) and ``summary.json``.

>>> from erank.training.config import SFTConfig                            # doctest: +SKIP
>>> from erank.training.sft import run_sft                                  # doctest: +SKIP
>>> run_sft(SFTConfig(model="smollm2-135m", data="runs/data", output_dir="runs/sft", max_steps=10))  # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from erank.errors import InputError, require
from erank.training.artifacts import data_params, eval_rows_path, latest_checkpoint, load_pairs
from erank.training.config import EvalConfig, SFTConfig

__all__ = [
    "run_sft",
    "load_pairs",
    "tokenize_pairs",
    "latest_checkpoint",
    "load_causal_lm",
    "make_progress_callback",
]

logger = logging.getLogger(__name__)


def load_causal_lm(model: str | None, *, bf16: bool | None = None) -> tuple[Any, Any, Path]:
    """Load a model for training: a folder, a GGUF file (converted once) or a hub id."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from erank.errors import ModelLoadError
    from erank.models import base_folder, merge_lora, resolve_model

    spec = resolve_model(model)
    location = base_folder(spec)
    use_bf16 = torch.cuda.is_available() if bf16 is None else bf16
    try:
        tok = AutoTokenizer.from_pretrained(location)
        lm = AutoModelForCausalLM.from_pretrained(
            location, dtype=torch.bfloat16 if use_bf16 else torch.float32
        )
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the model {location!r} for training: {exc}") from exc
    if spec.kind in ("embedded", "adapter"):
        merge_lora(lm, spec.location)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return lm, tok, Path(location)


def tokenize_pairs(
    rows: list[dict[str, Any]], tokenizer: Any, cutoff: int, truncate_length: int | None, style: str
) -> list[dict[str, Any]]:
    """``input_ids`` / ``labels`` per pair, the prompt rebuilt with this model's chat template."""
    from erank.training.data import PromptBuilder

    builder = PromptBuilder(tokenizer, style, truncate_length)
    out = []
    dropped = 0
    for r in rows:
        p, c = builder.encode(builder.prompt(r["query"], r["doc"], r["instruction"]), r["completion"])
        if len(p) + len(c) > cutoff:
            dropped += 1
            continue
        out.append({"input_ids": p + c, "labels": [-100] * len(p) + c, "qid": r["qid"]})
    if dropped:
        logger.warning("dropped %d pairs longer than the cutoff of %d tokens", dropped, cutoff)
    if not out:
        raise InputError(f"every pair is longer than the cutoff ({cutoff} tokens); raise cutoff")
    return out


def validation_ndcg(
    model: Any, tokenizer: Any, device: Any, eval_path: Path, ecfg: EvalConfig, mode: str = "direct"
) -> dict[str, float]:
    """nDCG@10 of a model in training on the held-out split (``val_ndcg@10``,
    ``val_first_stage_ndcg@10``), through a transformers engine on the model in memory."""
    from erank.engines import create_engine
    from erank.training.evaluate import evaluate_engine

    engine = create_engine("transformers", model_obj=model, tokenizer_obj=tokenizer, device=str(device))
    m = evaluate_engine(
        engine,
        eval_path,
        max_queries=ecfg.max_queries,
        candidates=ecfg.candidates,
        truncate_length=ecfg.truncate_length,
        mode=mode,
    )
    return {"val_ndcg@10": m["ndcg@10"], "val_first_stage_ndcg@10": m["first_stage_ndcg@10"]}


def make_val_callback(
    trainer_ref: dict[str, Any], eval_path: Path, ecfg: EvalConfig, every: int | None, log_file: Path
) -> Any:
    """A TrainerCallback that logs the validation nDCG@10 every ``every`` steps and at the end."""
    from transformers import TrainerCallback

    class ValidationNDCG(TrainerCallback):  # type: ignore[misc]
        def _run(self, state: Any) -> None:
            trainer = trainer_ref["trainer"]
            v = validation_ndcg(trainer.model, trainer.processing_class, trainer.args.device, eval_path, ecfg)
            trainer.model.train()
            rec = {"step": state.global_step, **v}
            state.log_history.append(rec)
            logger.info(
                "step %d: validation nDCG@10 %.4f (first stage %.4f)",
                state.global_step,
                v["val_ndcg@10"],
                v["val_first_stage_ndcg@10"],
            )
            with log_file.open("a", encoding="utf-8") as fh:
                fh.write(json.dumps(rec) + "\n")

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if every and state.global_step % every == 0:
                self._run(state)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if not every or state.global_step % every != 0:
                self._run(state)

    return ValidationNDCG()


def make_log_callback(log_file: Path) -> Any:
    from transformers import TrainerCallback

    class JsonLog(TrainerCallback):  # type: ignore[misc]
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs:
                with log_file.open("a", encoding="utf-8") as fh:
                    fh.write(json.dumps({"step": state.global_step, **logs}) + "\n")

    return JsonLog()


def make_progress_callback(what: str = "sft") -> Any:
    """A TrainerCallback for the one progress style: a step bar with an ETA on a terminal
    (:mod:`erank.progress`), and at every logged step a line with the loss and the ETA (the
    ``erank.training`` logger, which ``erank train`` shows). It replaces the trainer's own
    printer, which prints every log dictionary to standard output."""
    from transformers import TrainerCallback

    from erank.progress import ProgressBar, progress_bar

    class StepProgress(TrainerCallback):  # type: ignore[misc]
        def __init__(self) -> None:
            self.bar: ProgressBar | None = None

        def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.close()
            self.bar = progress_bar(
                int(state.max_steps), what, unit="steps", completed=int(state.global_step)
            )
            self.bar.__enter__()

        def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            if self.bar is not None:
                self.bar.update(completed=int(state.global_step))

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if self.bar is None or not logs or "loss" not in logs:
                return
            loss = float(logs["loss"])
            self.bar.describe(f"{what}  loss {loss:.4g}")
            logger.info("%s step %s  loss %.4g", what, self.bar.status_text(), loss)

        def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.close()

        def close(self) -> None:
            if self.bar is not None:
                self.bar.close()
                self.bar = None

    return StepProgress()


def run_sft(cfg: SFTConfig, *, resume: bool = True) -> dict[str, Any]:
    """Run SFT as configured; resume from the latest checkpoint in ``output_dir`` if there is one.

    Returns a summary (steps, final loss, seconds, output folders).
    """
    require("trl", "training", "SFT")
    datasets: Any = require("datasets", "training", "SFT")
    import torch
    from transformers import PrinterCallback
    from trl import SFTConfig as TrlSFTConfig
    from trl import SFTTrainer

    t0 = time.time()
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    rows = load_pairs(cfg.data)
    dparams = data_params(cfg.data)
    style = str(rows[0].get("style") or dparams.get("target_style") or "direct")
    trunc = dparams.get("truncate_length", 2048)
    model, tok, location = load_causal_lm(cfg.model, bf16=cfg.bf16)
    tokenized = tokenize_pairs(rows, tok, cfg.cutoff, trunc, style)
    ds = datasets.Dataset.from_list([{"input_ids": r["input_ids"], "labels": r["labels"]} for r in tokenized])
    on_cuda = torch.cuda.is_available()
    bf16 = on_cuda if cfg.bf16 is None else cfg.bf16
    targs = TrlSFTConfig(
        output_dir=str(out),
        learning_rate=cfg.learning_rate,
        lr_scheduler_type=cfg.lr_scheduler_type,
        warmup_steps=cfg.warmup_ratio,
        num_train_epochs=cfg.epochs,
        max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.per_device_batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps,
        max_length=cfg.cutoff,
        completion_only_loss=True,
        bf16=bf16,
        logging_steps=cfg.logging_steps,
        save_steps=cfg.save_steps,
        save_total_limit=cfg.save_total_limit,
        seed=cfg.seed,
        report_to=cfg.report_to or "none",
        use_cpu=not on_cuda,
        dataloader_num_workers=0,
        gradient_checkpointing=cfg.gradient_checkpointing,
        disable_tqdm=True,
    )
    peft_config = None
    if cfg.lora is not None:
        from peft import LoraConfig

        peft_config = LoraConfig(
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    log_file = out / "metrics.jsonl"
    progress = make_progress_callback("sft")
    callbacks = [make_log_callback(log_file), progress]
    trainer_ref: dict[str, Any] = {}
    eval_path = eval_rows_path(cfg.data)
    if cfg.eval is not None and eval_path is not None:
        callbacks.append(make_val_callback(trainer_ref, eval_path, cfg.eval, cfg.eval_steps, log_file))
    elif cfg.eval is not None:
        logger.warning("no eval.jsonl beside the training data: validation nDCG@10 is skipped")
    trainer = SFTTrainer(
        model=model,
        args=targs,
        train_dataset=ds,
        processing_class=tok,
        peft_config=peft_config,
        callbacks=callbacks,
    )
    trainer.remove_callback(PrinterCallback)  # it prints every log dict on stdout: progress does it
    trainer_ref["trainer"] = trainer
    ckpt = latest_checkpoint(out) if resume else None
    if ckpt is not None:
        logger.info("resuming from %s", ckpt)
    try:
        result = trainer.train(resume_from_checkpoint=str(ckpt) if ckpt else None)
    finally:
        progress.close()  # also after an error: the bar must not outlive the training
    final: Any = trainer.model
    summary: dict[str, Any] = {
        "steps": int(trainer.state.global_step),
        "train_loss": float(result.training_loss),
        "pairs": len(tokenized),
        "seconds": round(time.time() - t0, 1),
        "resumed_from": str(ckpt) if ckpt else None,
        "base_model": str(location),
        "style": style,
    }
    if cfg.lora is not None:
        final.save_pretrained(out / "adapter")
        tok.save_pretrained(out / "adapter")
        summary["adapter"] = str(out / "adapter")
    if cfg.merge:
        merged = final.merge_and_unload() if cfg.lora is not None else final
        merged.save_pretrained(out / "merged")
        tok.save_pretrained(out / "merged")
        summary["merged"] = str(out / "merged")
    summary["val"] = [r for r in trainer.state.log_history if "val_ndcg@10" in r]
    summary["loss"] = [
        {"step": r["step"], "loss": r["loss"]} for r in trainer.state.log_history if "loss" in r
    ]
    (out / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary
