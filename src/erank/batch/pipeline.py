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
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from erank.batch.rows import (
    format_trec_line,
    group_rows,
    order_key,
    parse_json_line,
    parse_record,
    qid_sort_key,
    shard_of,
    strictly_decreasing,
)
from erank.errors import ERankError, InputError, require

__all__ = ["BatchConfig", "BatchProgress", "BatchSummary", "run_batch", "plan_inputs"]

logger = logging.getLogger(__name__)

JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json", ".jsonl.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
MANIFEST = "manifest.json"
#: Settings that change the scores: a rerun must use the same ones.
_SCORING_KEYS = (
    "model",
    "engine",
    "method",
    "mode",
    "instruction",
    "truncate_length",
    "num_shards",
    "method_kwargs",
)
_RAW_LIMIT = 1000
#: CPUs Ray accounts to the light read/parse tasks, so they still fit beside whole-CPU scorer actors.
_LIGHT_CPUS = 0.25
_WAIT_FOR_WORKERS_S = 900


@dataclass
class BatchConfig:
    """Everything a batch job needs. Only ``inputs`` and ``output`` are required."""

    inputs: Sequence[str | os.PathLike[str]]
    output: str | os.PathLike[str]
    model: str | None = None
    engine: str = "transformers"
    method: str = "erank"
    mode: str | None = None
    instruction: str | None = None
    truncate_length: int | None = 2048
    batch_tokens: int | None = None
    method_kwargs: dict[str, Any] = field(default_factory=dict)
    workers: int = 1
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 1.0
    num_shards: int | None = None
    ray_address: str | None = None
    run_tag: str = "erank"
    show_progress_bars: bool = False


@dataclass
class BatchProgress:
    """Reported after every finished shard."""

    shards_done: int
    shards_total: int
    pairs: int
    errors: int
    seconds: float
    shard: int
    node: str

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BatchSummary:
    """What a finished job produced (also written to ``summary.json``)."""

    output: str
    pairs: int
    queries: int
    errors: int
    shards: int
    shards_skipped: int
    shards_run: int
    pairs_this_run: int
    seconds: float
    nodes: list[str]
    run_file: str
    errors_file: str

    @property
    def pairs_per_second(self) -> float:
        return self.pairs_this_run / self.seconds if self.seconds > 0 else 0.0


# --------------------------------------------------------------------------- files


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
    settings = {
        "model": cfg.model,
        "engine": cfg.engine,
        "method": cfg.method,
        "mode": cfg.mode,
        "instruction": cfg.instruction,
        "truncate_length": cfg.truncate_length,
        "method_kwargs": cfg.method_kwargs,
    }
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


# --------------------------------------------------------------------------- Ray parts


_NORMAL_COLUMNS = ("shard", "qid", "query", "docid", "text", "first_stage_score", "error", "source", "raw")


def _normal_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("shard", pa.int64()),
            ("qid", pa.string()),
            ("query", pa.string()),
            ("docid", pa.string()),
            ("text", pa.string()),
            ("first_stage_score", pa.float64()),
            ("error", pa.string()),
            ("source", pa.string()),
            ("raw", pa.string()),
        ]
    )


def _raw_repr(obj: Any, raw: bytes | None) -> str:
    if raw is not None:
        return raw[:_RAW_LIMIT].decode("utf-8", "backslashreplace")
    try:
        s = json.dumps(obj, ensure_ascii=False, default=repr)
        s.encode("utf-8")
    except (TypeError, ValueError, UnicodeEncodeError):
        s = repr(obj)
    return s[:_RAW_LIMIT]


def _normal_rows(
    items: Iterator[tuple[Any, bytes | None, str]], num_shards: int, done: frozenset[int]
) -> Any:
    """(obj or None, raw bytes or None, source) -> the normalised table (rows of done shards dropped)."""
    import pyarrow as pa

    cols: dict[str, list[Any]] = {c: [] for c in _NORMAL_COLUMNS}
    for obj, raw, source in items:
        if raw is not None:
            parsed, err, obj = parse_json_line(raw)
        else:
            parsed, err = parse_record(obj)
        row: tuple[Any, ...]
        if parsed is not None:
            qid, query, docid, text, fss = parsed
            shard = shard_of(qid, num_shards)
            row = (shard, qid, query, docid, text, fss, None, source, "")
        else:
            # Keep an invalid row with its query when the qid is readable, so the error lands in
            # that query's shard; otherwise a shard from its bytes (stable too).
            bad_qid: str | None = None
            if (
                isinstance(obj, dict)
                and isinstance(obj.get("qid"), (str, int))
                and not isinstance(obj["qid"], bool)
            ):
                bad_qid = str(obj["qid"]).strip() or None
            rep = _raw_repr(obj, raw)
            key = bad_qid if bad_qid is not None else f"\0{source}\0{rep}"
            shard = shard_of(key, num_shards)
            bad_docid = obj.get("docid") if isinstance(obj, dict) else None
            row = (
                shard,
                bad_qid,
                None,
                None if bad_docid is None else str(bad_docid)[:200],
                None,
                None,
                err,
                source,
                rep,
            )
        if row[0] in done:
            continue
        for c, v in zip(_NORMAL_COLUMNS, row, strict=True):
            cols[c].append(v)
    return pa.Table.from_pydict(cols, schema=_normal_schema())


def _normalise_jsonl(batch: Any, num_shards: int, done: frozenset[int]) -> Any:
    paths = batch.column("path").to_pylist()
    lines = batch.column("line").to_pylist()
    raws = batch.column("raw").to_pylist()
    items = ((None, raw, f"{path}:{line}") for path, line, raw in zip(paths, lines, raws, strict=True))
    return _normal_rows(items, num_shards, done)


def _normalise_parquet(batch: Any, num_shards: int, done: frozenset[int]) -> Any:
    rows = batch.to_pylist()
    items = ((r, None, str(r.pop("path", "parquet"))) for r in rows)
    return _normal_rows(items, num_shards, done)


def _jsonl_datasource(paths: list[str]) -> Any:
    from ray.data.datasource import FileBasedDatasource

    class JsonLinesBytes(FileBasedDatasource):  # type: ignore[misc]
        """JSON lines as raw bytes with their line numbers: decoding happens per row, later."""

        _FILE_EXTENSIONS = ["jsonl", "ndjson", "json", "gz"]

        def _read_stream(self, f: Any, path: str) -> Iterator[Any]:
            import pyarrow as pa

            data = f.readall()
            if path.endswith(".gz"):
                import gzip

                data = gzip.decompress(data)
            chunk = 20_000
            numbers: list[int] = []
            raws: list[bytes] = []
            for n, line in enumerate(data.split(b"\n"), start=1):
                if not line.strip():
                    continue
                numbers.append(n)
                raws.append(line.rstrip(b"\r"))
                if len(raws) >= chunk:
                    yield pa.table(
                        {"path": [path] * len(raws), "line": numbers, "raw": pa.array(raws, pa.binary())}
                    )
                    numbers, raws = [], []
            if raws:
                yield pa.table(
                    {"path": [path] * len(raws), "line": numbers, "raw": pa.array(raws, pa.binary())}
                )

    return JsonLinesBytes(paths)


class ShardScorer:
    """A Ray actor (through ``map_groups``): loads the reranker once, scores and writes whole shards."""

    def __init__(self, settings: dict[str, Any], output: str, cpus: float) -> None:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            import torch

            torch.set_num_threads(max(1, int(cpus)))
        except ImportError:  # pragma: no cover
            pass
        from erank.reranker import Reranker

        self.settings = settings
        self.out = Path(output)
        kwargs = dict(settings.get("method_kwargs") or {})
        if settings.get("batch_tokens"):
            kwargs["batch_tokens"] = settings["batch_tokens"]
        self.reranker = Reranker(
            settings["model"],
            engine=settings["engine"],
            method=settings["method"],
            mode=settings["mode"],
            **kwargs,
        )
        try:
            import ray

            self.node = ray.get_runtime_context().get_node_id()[:12]
        except Exception:  # pragma: no cover - outside Ray
            self.node = socket.gethostname()

    def __call__(self, table: Any) -> Any:
        import pyarrow as pa

        start = time.perf_counter()
        rows = table.to_pylist()
        shard = int(rows[0]["shard"])
        errors = [r for r in rows if r["error"] is not None]
        valid = [r for r in rows if r["error"] is None]
        scored: dict[str, list[Any]] = {c: [] for c in _SCORE_SCHEMA_NAMES}
        queries = 0
        for qid, rs in group_rows(valid).items():
            # One query text per qid: the most frequent (ties: the smallest); other rows are errors.
            counts: dict[str, int] = {}
            for r in rs:
                counts[r["query"]] = counts.get(r["query"], 0) + 1
            query = min(counts, key=lambda q: (-counts[q], q))
            keep, seen = [], set()
            for r in rs:
                if r["query"] != query:
                    errors.append(
                        {**r, "error": f"qid {qid} has another query text in other rows ({query[:60]!r})"}
                    )
                elif r["docid"] in seen:
                    errors.append(
                        {**r, "error": f"duplicate (qid, docid) = ({qid}, {r['docid']}); kept the first"}
                    )
                else:
                    seen.add(r["docid"])
                    keep.append(r)
            docs = [{"content": r["text"], "id": r["docid"]} for r in keep]
            try:
                result = self.reranker.score(
                    query, docs, self.settings["instruction"], self.settings["truncate_length"]
                )
            except ERankError as exc:
                errors.extend({**r, "error": f"could not score this query: {exc}"} for r in keep)
                continue
            queries += 1
            order = sorted(
                range(len(keep)),
                key=lambda i: order_key(
                    result.scores[i].score, keep[i]["first_stage_score"], keep[i]["docid"]
                ),
            )
            trec = strictly_decreasing([result.scores[i].score for i in order])
            for rank, (i, ts) in enumerate(zip(order, trec, strict=True), start=1):
                s = result.scores[i]
                r = keep[i]
                for c, v in (
                    ("qid", qid),
                    ("docid", r["docid"]),
                    ("rank", rank),
                    ("score", float(s.score)),
                    ("trec_score", ts),
                    ("label", s.label),
                    ("probability", s.probability),
                    ("expected_score", s.expected_score),
                    ("first_stage_score", r["first_stage_score"]),
                    ("parsed", bool(s.parsed)),
                    ("truncated", bool(s.truncated)),
                    ("shard", shard),
                ):
                    scored[c].append(v)
        name = f"part-{shard:05d}"
        buf = pa.BufferOutputStream()
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pydict(scored, schema=_score_schema()), buf)
        _atomic_write_bytes(self.out / "scores" / f"{name}.parquet", buf.getvalue().to_pybytes())
        errors.sort(key=lambda r: (r["source"], r["qid"] or "", r["docid"] or ""))
        lines = "".join(
            json.dumps(
                {
                    "source": r["source"],
                    "qid": r["qid"],
                    "docid": r["docid"],
                    "reason": r["error"],
                    "row": r["raw"]
                    or json.dumps(
                        {"qid": r["qid"], "query": r["query"], "docid": r["docid"], "text": r["text"]}
                    )[:_RAW_LIMIT],
                },
                ensure_ascii=False,
            )
            + "\n"
            for r in errors
        )
        _atomic_write_text(self.out / "errors" / f"{name}.jsonl", lines)
        seconds = time.perf_counter() - start
        info = {
            "shard": shard,
            "pairs": len(scored["qid"]),
            "errors": len(errors),
            "queries": queries,
            "seconds": round(seconds, 3),
            "node": self.node,
        }
        _atomic_write_text(self.out / "_done" / f"{shard:05d}.json", json.dumps(info) + "\n")
        return pa.table({k: [v] for k, v in info.items()})


_SCORE_SCHEMA_NAMES = (
    "qid",
    "docid",
    "rank",
    "score",
    "trec_score",
    "label",
    "probability",
    "expected_score",
    "first_stage_score",
    "parsed",
    "truncated",
    "shard",
)


def _score_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("qid", pa.string()),
            ("docid", pa.string()),
            ("rank", pa.int32()),
            ("score", pa.float64()),
            ("trec_score", pa.float64()),
            ("label", pa.int32()),
            ("probability", pa.float64()),
            ("expected_score", pa.float64()),
            ("first_stage_score", pa.float64()),
            ("parsed", pa.bool_()),
            ("truncated", pa.bool_()),
            ("shard", pa.int64()),
        ]
    )


def _erank_cause(exc: BaseException) -> ERankError | None:
    seen = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if isinstance(cur, ERankError):
            return cur
        inner = getattr(cur, "cause", None)
        cur = inner if isinstance(inner, BaseException) else (cur.__cause__ or cur.__context__)
    return None


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
    settings = {
        "model": cfg.model,
        "engine": cfg.engine,
        "method": cfg.method,
        "mode": cfg.mode,
        "instruction": cfg.instruction,
        "truncate_length": cfg.truncate_length,
        "batch_tokens": cfg.batch_tokens,
        "method_kwargs": cfg.method_kwargs,
    }
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
