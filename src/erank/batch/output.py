"""A batch job's files: its inputs, its output folder (manifest, shard markers) and the run file
assembled from the finished shards. Every file is written to a temporary name and renamed."""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from erank.batch.config import (
    JSONL_SUFFIXES,
    MANIFEST,
    PARQUET_SUFFIXES,
    BatchConfig,
)
from erank.batch.rows import (
    format_trec_line,
    qid_sort_key,
)
from erank.errors import InputError

__all__ = ["plan_inputs"]

logger = logging.getLogger(__name__)


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{time.monotonic_ns()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _atomic_write_text(path: Path, text: str) -> None:
    _atomic_write_bytes(path, text.encode("utf-8"))


def plan_inputs(inputs: Sequence[str | os.PathLike[str]]) -> tuple[str, list[Path]]:
    """Resolve the input paths (files or folders) to ``(format, files)``; one format per job."""
    if isinstance(inputs, (str, os.PathLike)):
        inputs = [inputs]
    if not inputs:
        raise InputError("no input given; pass --input PAIRS (JSONL or Parquet)")
    files: list[Path] = []
    for item in inputs:
        p = Path(item).expanduser()
        if p.is_dir():
            found = sorted(
                q
                for q in p.iterdir()
                if q.is_file() and q.name.lower().endswith(JSONL_SUFFIXES + PARQUET_SUFFIXES)
            )
            if not found:
                raise InputError(f"input folder {p} has no .jsonl or .parquet files")
            files.extend(found)
        elif p.is_file():
            files.append(p)
        else:
            raise InputError(f"input {p} does not exist")
    kinds = set()
    for f in files:
        name = f.name.lower()
        if name.endswith(PARQUET_SUFFIXES):
            kinds.add("parquet")
        elif name.endswith(JSONL_SUFFIXES):
            kinds.add("jsonl")
        else:
            raise InputError(f"input {f}: unknown format; name it .jsonl (JSON lines) or .parquet")
    if len(kinds) > 1:
        raise InputError("inputs mix JSONL and Parquet files; run one job per format")
    return kinds.pop(), [f.resolve() for f in files]


def _default_shards(files: Sequence[Path], workers: int) -> int:
    size = sum(f.stat().st_size for f in files)
    # About 2 MiB of input (some thousands of pairs) per shard: small enough that a crash loses
    # little, large enough that per-shard overhead is noise. At least 4 shards per worker.
    return int(max(4 * workers, min(4096, math.ceil(size / (2 << 20)))))


def _input_fingerprint(files: Sequence[Path]) -> list[dict[str, Any]]:
    return [{"path": str(f), "size": f.stat().st_size, "mtime_ns": f.stat().st_mtime_ns} for f in files]


def _validate(cfg: BatchConfig) -> None:
    from erank.engines import ENGINES

    if cfg.engine not in ENGINES:
        raise InputError(f"unknown engine {cfg.engine!r}; available: {', '.join(sorted(ENGINES))}")
    for name in ("workers",):
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise InputError(f"--{name} must be a positive integer, got {v!r}")
    if cfg.gpus_per_worker < 0:
        raise InputError(f"--gpus-per-worker must be >= 0, got {cfg.gpus_per_worker}")
    if cfg.cpus_per_worker < 0:
        raise InputError(f"--cpus-per-worker must be >= 0, got {cfg.cpus_per_worker}")
    if cfg.num_shards is not None and (cfg.num_shards < 1 or cfg.num_shards > 100_000):
        raise InputError(f"--shards must be between 1 and 100000, got {cfg.num_shards}")
    if cfg.mode is not None and cfg.mode not in ("direct", "reasoning"):
        raise InputError(f"--mode must be 'direct' or 'reasoning', got {cfg.mode!r}")
    if cfg.truncate_length is not None and cfg.truncate_length <= 0:
        raise InputError(f"--truncate-length must be a positive number of tokens, got {cfg.truncate_length}")
    looks_local = cfg.model is not None and (
        cfg.model.startswith(("/", "./", "../", "~")) or cfg.model.lower().endswith(".gguf")
    )
    if looks_local and not Path(str(cfg.model)).expanduser().exists():
        raise InputError(f"model {cfg.model} does not exist; pass a model folder, a .gguf file or a hub id")
    if any(c.isspace() for c in cfg.run_tag) or not cfg.run_tag:
        raise InputError(f"--run-tag must be one word, got {cfg.run_tag!r}")


def _prepare_output(cfg: BatchConfig, fmt: str, files: list[Path]) -> tuple[Path, dict[str, Any]]:
    out = Path(cfg.output).expanduser().resolve()
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out} is a file; pass a folder")
    for sub in ("scores", "errors", "_done"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    manifest_path = out / MANIFEST
    settings = cfg.scoring_settings()
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(f"{manifest_path} is unreadable ({exc}); use a new --output folder") from None
        if cfg.num_shards is not None and cfg.num_shards != manifest["num_shards"]:
            raise InputError(
                f"{out} was started with {manifest['num_shards']} shards; rerun without --shards "
                f"(or with --shards {manifest['num_shards']}), or use a new --output folder"
            )
        diffs = [k for k in settings if manifest.get(k) != settings[k]]
        if diffs:
            detail = ", ".join(f"{k}: {manifest.get(k)!r} then, {settings[k]!r} now" for k in diffs)
            raise InputError(f"{out} holds a job with other settings ({detail}); use a new --output folder")
        if manifest["format"] != fmt or manifest["inputs"] != _input_fingerprint(files):
            raise InputError(
                f"the input files differ from those {out} was started with (path, size or time); "
                "resume with the same files or use a new --output folder"
            )
        logger.info("resuming the job in %s", out)
    else:
        manifest = {
            **settings,
            "format": fmt,
            "inputs": _input_fingerprint(files),
            "num_shards": cfg.num_shards or _default_shards(files, cfg.workers),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        _atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")
    # Temporary files of a killed run: never read, safe to delete (no writer is alive for this job).
    for sub in ("scores", "errors", "_done", "."):
        for tmp in (out / sub).glob(".*.tmp"):
            tmp.unlink(missing_ok=True)
    return out, manifest


def _done_shards(out: Path) -> set[int]:
    done = set()
    for p in (out / "_done").glob("*.json"):
        try:
            done.add(int(p.stem))
        except ValueError:
            continue
    return done


def _assemble(out: Path, tag: str) -> tuple[int, int, int]:
    """Write ``run.trec`` and ``errors.jsonl`` from the finished shards; returns (pairs, queries, errors)."""
    import pyarrow.parquet as pq

    parts = sorted((out / "scores").glob("part-*.parquet"))
    rows: list[tuple[str, str, int, float]] = []
    for p in parts:
        if not (out / "_done" / f"{p.stem[5:]}.json").exists():
            continue  # an unfinished shard of an earlier run; it will be redone
        t = pq.read_table(p, columns=["qid", "docid", "rank", "trec_score"])
        rows.extend(
            zip(
                t.column("qid").to_pylist(),
                t.column("docid").to_pylist(),
                t.column("rank").to_pylist(),
                t.column("trec_score").to_pylist(),
                strict=True,
            )
        )
    rows.sort(key=lambda r: (qid_sort_key(r[0]), r[2]))
    tmp = out / f".run.trec.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for qid, docid, rank, score in rows:
            f.write(format_trec_line(qid, docid, rank, score, tag))
    os.replace(tmp, out / "run.trec")
    n_err = 0
    tmp = out / f".errors.jsonl.{os.getpid()}.tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for p in sorted((out / "errors").glob("part-*.jsonl")):
            if not (out / "_done" / f"{p.stem[5:]}.json").exists():
                continue
            text = p.read_text("utf-8")
            n_err += text.count("\n")
            f.write(text)
    os.replace(tmp, out / "errors.jsonl")
    return len(rows), len({r[0] for r in rows}), n_err
