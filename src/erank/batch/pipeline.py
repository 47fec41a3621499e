"""Resumable batch reranking on Ray Data.

The job (``run_batch``):

1. **read** the pairs (JSONL read as raw bytes line by line, so a bad line is one error and not a
   failed file; or Parquet) with Ray Data;
2. **validate and partition**: every row gets ``shard = crc32(qid) % num_shards``; invalid rows
   keep their reason; rows of shards already finished are dropped here;
3. **group by shard** and **score** each shard in a pool of reranker actors
   (``map_groups`` with a callable class: each actor loads the model once);
4. each actor **writes** its shard: ``scores/part-NNNNN.parquet``, ``errors/part-NNNNN.jsonl``,
   then the marker ``_done/NNNNN.json`` (each file written to a temporary name and renamed, so a
   kill at any moment leaves either a whole file or none);
5. the driver assembles ``run.trec`` (strictly decreasing scores per query), ``errors.jsonl`` and
   ``summary.json`` from the shards.

A rerun (after a crash, ``kill -9``, Ctrl-C) skips shards with a marker and redoes the others
whole, so nothing is lost and nothing is duplicated. The number of shards and the scoring settings
are fixed in ``manifest.json`` at the first run; a rerun with other settings is refused.

>>> from erank.batch import BatchConfig, run_batch                           # doctest: +SKIP
>>> summary = run_batch(BatchConfig(inputs=["pairs.jsonl"], output="out/",
...                                 model="tiny-model/", workers=2))        # doctest: +SKIP
>>> summary.pairs, summary.errors                                          # doctest: +SKIP
(300, 2)
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from erank.batch.config import _LIGHT_CPUS, _WAIT_FOR_WORKERS_S, BatchConfig, BatchProgress, BatchSummary
from erank.batch.output import (
    _assemble,
    _atomic_write_text,
    _done_shards,
    _prepare_output,
    _validate,
    plan_inputs,
)
from erank.batch.shards import (
    ShardScorer,
    _erank_cause,
    _jsonl_datasource,
    _normalise_jsonl,
    _normalise_parquet,
)
from erank.errors import ERankError, InputError, require

__all__ = ["BatchConfig", "BatchProgress", "BatchSummary", "ShardScorer", "run_batch", "plan_inputs"]

logger = logging.getLogger(__name__)


def run_batch(cfg: BatchConfig, progress: Callable[[BatchProgress], None] | None = None) -> BatchSummary:
    """Run (or resume) a batch reranking job; see the module docstring for what is written where.

    Uses the Ray already initialised in this process if there is one; otherwise connects to
    ``cfg.ray_address`` or, without it, starts a local Ray for the job (and stops it afterwards).

    >>> from erank.batch import BatchConfig, run_batch                       # doctest: +SKIP
    >>> s = run_batch(BatchConfig(["pairs.jsonl"], "out/", workers=2))       # doctest: +SKIP
    >>> open("out/run.trec").readline()                                      # doctest: +SKIP
    '1030303 Q0 8726436 1 0.93 erank\\n'
    """
    _validate(cfg)
    if cfg.model is not None and Path(cfg.model).expanduser().exists():
        # Workers may run elsewhere (another cwd, another node): send an absolute path.
        cfg = replace(cfg, model=str(Path(cfg.model).expanduser().resolve()))
    fmt, files = plan_inputs(cfg.inputs)
    out, manifest = _prepare_output(cfg, fmt, files)
    num_shards = int(manifest["num_shards"])
    done = _done_shards(out)
    skipped = len(done)
    start = time.perf_counter()
    pairs_run = 0
    shards_run = 0
    nodes: set[str] = set()
    complete = (out / "_SUCCESS").exists()
    if not complete:
        ray = require("ray", "ray", "batch reranking")
        started_ray = False
        if not ray.is_initialized():  # type: ignore[attr-defined]
            if cfg.ray_address:
                logger.info("connecting to the Ray cluster at %s", cfg.ray_address)
                try:
                    ray.init(address=cfg.ray_address, log_to_driver=False)  # type: ignore[attr-defined]
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise InputError(
                        f"could not connect to the Ray cluster at {cfg.ray_address}: {exc}; "
                        "check the address (ray status shows it), set RAY_AUTH_MODE=token if the cluster "
                        "uses token authentication, or leave out --ray-address for a local Ray"
                    ) from None
            else:
                need = cfg.workers * max(cfg.cpus_per_worker, 0) + 1
                # address="local": a new Ray for this job, never a cluster that `ray start` left
                # running on this machine (ray.init() alone would attach to it).
                ray.init(  # type: ignore[attr-defined]
                    address="local",
                    num_cpus=max(os.cpu_count() or 1, math.ceil(need)),
                    include_dashboard=False,
                    log_to_driver=False,
                )
            started_ray = True
        try:
            for info in _run_pipeline(cfg, fmt, files, out, num_shards, frozenset(done)):
                pairs_run += int(info["pairs"])
                shards_run += 1
                nodes.add(str(info["node"]))
                if progress is not None:
                    progress(
                        BatchProgress(
                            shards_done=len(done) + shards_run,
                            shards_total=num_shards,
                            pairs=pairs_run,
                            errors=int(info["errors"]),
                            seconds=time.perf_counter() - start,
                            shard=int(info["shard"]),
                            node=str(info["node"]),
                        )
                    )
        except ERankError:
            raise
        except Exception as exc:
            cause = _erank_cause(exc)
            if cause is not None:
                raise cause from None
            raise
        finally:
            if started_ray:
                ray.shutdown()  # type: ignore[attr-defined]
    pairs, queries, n_err = _assemble(out, cfg.run_tag)
    seconds = time.perf_counter() - start
    summary = BatchSummary(
        output=str(out),
        pairs=pairs,
        queries=queries,
        errors=n_err,
        shards=num_shards,
        shards_skipped=skipped,
        shards_run=shards_run,
        pairs_this_run=pairs_run,
        seconds=seconds,
        nodes=sorted(nodes),
        run_file=str(out / "run.trec"),
        errors_file=str(out / "errors.jsonl"),
    )
    if complete and (out / "summary.json").exists():
        # A rerun of a finished job did nothing: the recorded summary of the run that did the
        # work stays as it is (the returned one says what this run did: nothing).
        return summary
    _atomic_write_text(out / "summary.json", json.dumps(asdict(summary), indent=2) + "\n")
    _atomic_write_text(out / "_SUCCESS", "")
    return summary


def _run_pipeline(
    cfg: BatchConfig, fmt: str, files: list[Path], out: Path, num_shards: int, done: frozenset[int]
) -> Iterator[dict[str, Any]]:
    import ray
    import ray.data

    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = cfg.show_progress_bars
    # Start scoring once every worker has loaded its model, so the first shards spread over the
    # whole pool (and a cluster that cannot place N workers fails with Ray's message, not a hang).
    ctx.wait_for_min_actors_s = _WAIT_FOR_WORKERS_S
    paths = [str(f) for f in files]
    if fmt == "jsonl":
        ds = ray.data.read_datasource(_jsonl_datasource(paths), num_cpus=_LIGHT_CPUS)
        norm = _normalise_jsonl
    else:
        ds = ray.data.read_parquet(paths, include_paths=True, num_cpus=_LIGHT_CPUS)
        norm = _normalise_parquet
    ds = ds.map_batches(
        norm,
        batch_format="pyarrow",
        fn_kwargs={"num_shards": num_shards, "done": done},
        zero_copy_batch=False,
        num_cpus=_LIGHT_CPUS,
    )
    settings = {**cfg.scoring_settings(), "batch_tokens": cfg.batch_tokens}
    remote: dict[str, Any] = {"num_cpus": cfg.cpus_per_worker}
    if cfg.gpus_per_worker:
        remote["num_gpus"] = cfg.gpus_per_worker
    # Few shuffle partitions: each holds whole shards, a few per worker keeps the pool busy, and
    # Ray's default (200) costs minutes of overhead on a small machine.
    partitions = max(1, min(num_shards, 4 * cfg.workers))
    results = ds.groupby("shard", num_partitions=partitions).map_groups(
        ShardScorer,
        batch_format="pyarrow",
        fn_constructor_args=(settings, str(out), cfg.cpus_per_worker),
        compute=ray.data.ActorPoolStrategy(size=cfg.workers),
        **remote,
    )
    yield from results.iter_rows()
