"""``erank train data|sft|rl CONFIG.yaml``: the training stages from YAML configs."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

__all__ = ["register"]


def _run(args: argparse.Namespace) -> int:
    from erank.training.config import DataConfig, RLConfig, SFTConfig, load_config

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
    from erank.training.evaluate import evaluate_model

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    m = evaluate_model(
        None if args.model in ("default", "none") else args.model,
        args.eval_file,
        max_queries=args.max_queries,
        candidates=args.candidates,
        truncate_length=args.truncate_length,
        alpha=args.alpha,
    )
    sys.stdout.write(json.dumps(m) + "\n")
    return 0


def _export(args: argparse.Namespace) -> int:
    from erank.training.export import export_adapter

    sys.stdout.write(json.dumps(export_adapter(args.adapter, args.dest, rule=args.rule)) + "\n")
    return 0


def register(subparsers: Any) -> None:
    """Add ``erank train`` to the erank command line."""
    p = subparsers.add_parser("train", help="train an ERank model: data construction, SFT, RL (GRPO)")
    sub = p.add_subparsers(dest="stage", metavar="STAGE", required=True)
    helps = {
        "data": "build the training set (1 positive + N-1 negatives per query, labelled 0..10)",
        "sft": "supervised fine-tuning with TRL SFTTrainer + LoRA (resumes after a kill)",
        "rl": "GRPO with the listwise-derived reward (resumes after a kill)",
    }
    for stage, text in helps.items():
        sp = sub.add_parser(stage, help=text, description=text)
        sp.add_argument("config", help="the YAML configuration (see configs/train/)")
        if stage != "data":
            sp.add_argument("--no-resume", action="store_true", help="start over even if checkpoints exist")
        sp.set_defaults(func=_run)
    ev = sub.add_parser("eval", help="nDCG@10 of a model on the held-out split (eval.jsonl)")
    ev.add_argument("model", help="a model folder, a .gguf file, or 'default'")
    ev.add_argument("eval_file", help="eval.jsonl written by `erank train data`")
    ev.add_argument("--max-queries", type=int, default=None)
    ev.add_argument("--candidates", type=int, default=10)
    ev.add_argument("--truncate-length", type=int, default=2048)
    ev.add_argument("--alpha", type=float, default=0.2, help="first-stage weight of hybrid_ndcg@10")
    ev.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    ev.set_defaults(func=_eval)
    ex = sub.add_parser("export", help="ship a LoRA adapter as an embedded model (fp16 weights + SHA256SUMS)")
    ex.add_argument("adapter", help="the adapter folder (e.g. runs/smol/rl/adapter)")
    ex.add_argument("dest", help="where to write it (src/erank/weights/erank-smol for the default)")
    ex.add_argument(
        "--rule", choices=["label_prob", "expected"], default=None, help="the ranking rule it ships with"
    )
    ex.set_defaults(func=_export)
