"""``erank train data|sft|rl CONFIG.yaml``: the training stages from YAML configs."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from erank.commands import options
from erank.errors import InputError

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from erank.training.config import DataConfig, RLConfig, SFTConfig, load_config

    if getattr(args, "no_progress", False):
        os.environ["ERANK_NO_PROGRESS"] = "1"  # the trainers' step bars (erank.progress)
    result: Any
    if args.stage == "data":
        from erank.training.data import build_dataset

        result = build_dataset(load_config(args.config, DataConfig))
    elif args.stage == "sft":
        scfg = load_config(args.config, SFTConfig)
        if scfg.trainer == "pointwise":
            from erank.training.pointwise import run_pointwise_sft

            result = run_pointwise_sft(scfg, resume=not args.no_resume)
        else:
            from erank.training.sft import run_sft

            result = run_sft(scfg, resume=not args.no_resume)
    else:
        rcfg = load_config(args.config, RLConfig)
        if rcfg.trainer == "pointwise":
            from erank.training.pointwise import run_pointwise_rl

            result = run_pointwise_rl(rcfg, resume=not args.no_resume)
        else:
            from erank.training.rl import run_rl

            result = run_rl(rcfg, resume=not args.no_resume)
    sys.stdout.write(json.dumps(result, indent=2, default=str) + "\n")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from erank.training.data import read_jsonl
    from erank.training.evaluate import evaluate_model

    rows: Any = args.eval_file
    if args.queries is not None:  # the first N judged queries by id, as --queries means everywhere
        from erank.evaluation.experiment import first_queries

        all_rows = read_jsonl(args.eval_file)
        judged = [r for r in all_rows if any(g > 0 for g in r.get("qrels", {}).values())]
        keep = set(first_queries([str(r["qid"]) for r in judged], args.queries))
        rows = [r for r in judged if str(r["qid"]) in keep]
    m = evaluate_model(
        args.model,
        rows,
        candidates=args.top_k,
        truncate_length=args.truncate_length,
        engine=args.engine,
        device=args.device,
        alpha=args.alpha,
        progress=options.progress_from(args),
    )
    sys.stdout.write(json.dumps(m) + "\n")
    return 0


def _check_eval(args: argparse.Namespace) -> None:
    """``erank train eval``'s own checks, before the shared ones: the old positional model, the file."""
    from pathlib import Path

    if args.old_model is not None:
        if args.model is not None:
            raise InputError("give the model once: --model MODEL (the positional MODEL is the old spelling)")
        args.model = None if args.old_model in ("default", "none") else args.old_model
    if not Path(args.eval_file).is_file():
        raise InputError(f"eval file {args.eval_file} does not exist (erank train data writes eval.jsonl)")


def _export(args: argparse.Namespace) -> int:
    from erank.training.export import export_adapter

    sys.stdout.write(json.dumps(export_adapter(args.adapter, args.dest, rule=args.rule)) + "\n")
    return 0


class _DeprecatedPositional(options.DeprecatedAlias):
    """An optional positional argument that is the old spelling of an option (warns when given)."""

    def __call__(
        self, parser: Any, namespace: argparse.Namespace, values: Any, option_string: Any = None
    ) -> None:
        if values is None:  # argparse calls an absent optional positional with its default
            setattr(namespace, self.dest, None)
            return
        super().__call__(
            parser, namespace, values, f"the positional {self.dest.removeprefix('old_').upper()}"
        )


def register(subparsers: Any) -> None:
    """Add ``erank train`` to the erank command line."""
    p = options.add_command(subparsers, "train", "train an ERank model: data construction, SFT, RL (GRPO)")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    helps = {
        "data": "build the training set (1 positive + N-1 negatives per query, labelled 0..10)",
        "sft": "supervised fine-tuning with TRL SFTTrainer + LoRA (resumes after a kill)",
        "rl": "GRPO with the listwise-derived reward (resumes after a kill)",
    }
    for stage, text in helps.items():
        sp = options.add_command(sub, stage, text)
        sp.add_argument("config", help="the YAML configuration (see configs/train/)")
        if stage != "data":
            sp.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
        options.add_progress(sp)
        sp.set_defaults(func=_run)
    ev = options.add_command(
        sub,
        "eval",
        "nDCG@10 of a model on the held-out split (eval.jsonl)",
        "Rerank the held-out queries' first-stage candidates with ERank in direct mode and "
        "print nDCG@10 (reranked, first stage, hybrid) as JSON.",
    )
    # the old spelling `erank train eval MODEL eval.jsonl` (MODEL is --model now, as everywhere)
    ev.add_argument("old_model", nargs="?", action=_DeprecatedPositional, use="--model MODEL")
    ev.add_argument("eval_file", help="eval.jsonl written by `erank train data`")
    options.add_model_options(ev, method=False)
    options.add_top_k(ev)
    options.add_alias(ev, "--candidates", new="--top-k")
    options.add_queries(ev)
    options.add_alias(ev, "--max-queries", new="--queries")
    options.add_truncate_length(ev)
    ev.add_argument(
        "--alpha",
        type=options.unit_float,
        default=0.2,
        help="weight 0..1 of the first stage in hybrid_ndcg@10 (default 0.2)",
    )
    options.add_runtime_options(ev)
    options.add_progress(ev)
    options.add_check(ev, _check_eval)
    ev.set_defaults(func=_eval)
    ex = options.add_command(
        sub, "export", "ship a LoRA adapter as an embedded model (fp16 weights + SHA256SUMS)"
    )
    ex.add_argument("adapter", help="the adapter folder (e.g. runs/smol/rl/adapter)")
    ex.add_argument("dest", help="where to write it (src/erank/weights/erank-smol for the default)")
    ex.add_argument(
        "--rule", choices=["label_prob", "expected"], default=None, help="the ranking rule it ships with"
    )
    ex.set_defaults(func=_export)
