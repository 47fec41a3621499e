"""``erank batch`` on real Ray clusters started here, with pairs from TREC DL20 (BM25 candidates)
scored by the tiny random Qwen3 through the real transformers engine.

* a local Ray started by the test (``ray.init(num_cpus=2)``), ``run_batch`` in-process: the
  reference output;
* ``erank batch`` as a subprocess (it starts its own local Ray), ``kill -9`` part-way, rerun:
  the same rows as the reference, nothing lost, nothing duplicated;
* a two-node cluster on loopback (``ray start --head`` + ``ray start --address``) and the job with
  ``--ray-address``: shards scored on both nodes.

Every Ray process started here is stopped by id (process group), never with ``ray stop``, which
would also stop other people's clusters on this machine.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")
pa_parquet = pytest.importorskip("pyarrow.parquet")

from erank.batch import BatchConfig, run_batch  # noqa: E402
from erank.errors import InputError  # noqa: E402

N_QUERIES = 40
PER_QUERY = 12
N_VALID = N_QUERIES * PER_QUERY
#: reason fragment -> how many rows of the input have it
BAD_ROWS = {
    "empty text": 1,
    "not valid UTF-8": 1,
    "missing field 'docid'": 1,
    "invalid JSON": 1,
    "duplicate (qid, docid)": 1,
    "invalid unicode": 1,
}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAY_DEDUP_LOGS": "0"}
#: ``ray start --head`` (Ray >= 2.5x) turns token authentication on and writes the token to
#: ~/.ray/auth_token; drivers and joining nodes must say they use it.
CLUSTER_ENV = {**ENV, "RAY_AUTH_MODE": "token"}


@pytest.fixture(scope="module")
def pairs_file(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """480 DL20 BM25 pairs (40 queries x top 12, passages cut to 300 chars) plus 6 bad rows."""
    data = json.loads(
        (shared_data / "trec-dl20-passage/BM25/retrieve_results_dl20_top100.json").read_text("utf-8")
    )
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    lines: list[bytes] = []
    for entry in data[:N_QUERIES]:
        for h in entry["hits"][:PER_QUERY]:
            row = {
                "qid": h["qid"],
                "query": entry["query"],
                "docid": h["docid"],
                "text": h["content"][:300],
                "first_stage_score": h["score"],
            }
            lines.append(json.dumps(row).encode())
    first = json.loads(lines[0])
    lines.insert(5, json.dumps({**first, "docid": "empty-1", "text": "  \n "}).encode())
    lines.insert(9, b'{"qid": 1, "query": "x", "docid": "latin1", "text": "caf\xe9"}')
    lines.insert(30, json.dumps({"qid": first["qid"], "query": first["query"], "text": "no id"}).encode())
    lines.insert(31, b"this is not json")
    lines.insert(40, lines[0])  # a duplicate (qid, docid)
    lines.insert(50, b'{"qid": 7, "query": "q", "docid": "sur", "text": "bad \\ud800 half"}')
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def reference(
    local_ray: None, pairs_file: Path, tiny_qwen3_dir: Path, tmp_path_factory: pytest.TempPathFactory
):
    out = tmp_path_factory.mktemp("ref") / "out"
    cfg = BatchConfig(
        inputs=[pairs_file],
        output=out,
        model=str(tiny_qwen3_dir),
        mode="direct",
        workers=2,
        cpus_per_worker=0.5,
        num_shards=8,
        truncate_length=128,
    )
    progress: list = []
    summary = run_batch(cfg, progress=progress.append)
    return out, summary, progress


def _run_rows(out: Path) -> list[tuple[str, str, int, str]]:
    rows = []
    for line in (out / "run.trec").read_text().splitlines():
        qid, q0, docid, rank, score, tag = line.split()
        assert q0 == "Q0" and tag == "erank"
        rows.append((qid, docid, int(rank), score))
    return rows


def _shard_rows(out: Path) -> list[dict]:
    rows = []
    for p in sorted((out / "scores").glob("part-*.parquet")):
        rows.extend(pa_parquet.read_table(p).to_pylist())
    return rows


def test_local_ray_scores_every_pair_and_reports_bad_rows(
    reference, pairs_file: Path, tiny_qwen3_dir: Path
) -> None:
    out, summary, progress = reference
    assert (summary.pairs, summary.queries, summary.errors) == (N_VALID, N_QUERIES, sum(BAD_ROWS.values()))
    assert progress and progress[-1].pairs == N_VALID  # progress reported per shard

    rows = _run_rows(out)
    assert len(rows) == N_VALID
    by_qid: dict[str, list] = {}
    for qid, docid, rank, score in rows:
        by_qid.setdefault(qid, []).append((rank, float(score), docid))
    assert len(by_qid) == N_QUERIES
    for qid, rs in by_qid.items():
        assert [r[0] for r in rs] == list(range(1, PER_QUERY + 1)), qid
        scores = [r[1] for r in rs]
        assert all(a > b for a, b in zip(scores, scores[1:], strict=False)), (
            f"scores of {qid} not strictly decreasing"
        )
        assert len({r[2] for r in rs}) == PER_QUERY  # no duplicate docid in a query

    errors = [json.loads(line) for line in (out / "errors.jsonl").read_text("utf-8").splitlines()]
    for fragment, n in BAD_ROWS.items():
        assert sum(fragment in e["reason"] for e in errors) == n, (fragment, errors)
    assert all(e["source"].startswith(str(pairs_file) + ":") for e in errors)
    assert {e["source"].rsplit(":", 1)[1] for e in errors if "empty text" in e["reason"]} == {"6"}

    # The Parquet shards hold the same rows as the run file, with the model's details.
    shard_rows = _shard_rows(out)
    assert sorted((r["qid"], r["docid"], r["rank"]) for r in shard_rows) == sorted(
        (q, d, k) for q, d, k, _ in rows
    )
    assert all(r["parsed"] and 0.0 <= r["probability"] <= 1.0 for r in shard_rows)

    # The scores are the reranker's own: score one query in this process and compare.
    from erank import Reranker

    qid = rows[0][0]
    src = [
        json.loads(line)
        for line in pairs_file.read_bytes().splitlines()
        if line.startswith(b'{"qid": ' + qid.encode())
    ]
    src = [r for r in src if str(r.get("qid")) == qid and "docid" in r and r["text"].strip()]
    uniq = {r["docid"]: r for r in src}
    direct = Reranker(str(tiny_qwen3_dir), mode="direct").score(
        src[0]["query"], [{"content": r["text"], "id": d} for d, r in uniq.items()], truncate_length=128
    )
    want = {d.id: s.score for d, s in zip(direct.documents, direct.scores, strict=True)}
    got = {r["docid"]: r["score"] for r in shard_rows if r["qid"] == qid}
    assert got.keys() == want.keys()
    for d in got:
        assert got[d] == pytest.approx(want[d], rel=1e-4, abs=1e-9)


def test_parquet_input(local_ray: None, tiny_qwen3_dir: Path, tmp_path: Path) -> None:
    """Parquet pairs (integer qids, no first_stage_score column, a null text) score like JSON lines."""
    import pyarrow as pa

    table = pa.table(
        {
            "qid": [1, 1, 1, 2, 2],
            "query": ["tea", "tea", "tea", "rust language", "rust language"],
            "docid": ["a", "b", "c", "d", "e"],
            "text": ["Green tea is a drink.", "Rust is a language.", None, "Rust is a language.", "Tea."],
        }
    )
    src = tmp_path / "pairs.parquet"
    pa_parquet.write_table(table, src)
    out = tmp_path / "out"
    s = run_batch(
        BatchConfig(
            inputs=[src], output=out, model=str(tiny_qwen3_dir), mode="direct", workers=1, cpus_per_worker=0.5
        )
    )
    assert (s.pairs, s.queries, s.errors) == (4, 2, 1)
    assert sorted((q, d) for q, d, _, _ in _run_rows(out)) == [("1", "a"), ("1", "b"), ("2", "d"), ("2", "e")]
    err = json.loads((out / "errors.jsonl").read_text("utf-8"))
    assert err["docid"] == "c" and "missing field 'text'" in err["reason"]


def test_rerun_of_a_finished_job_does_nothing_and_changed_settings_are_refused(
    reference, pairs_file: Path, tiny_qwen3_dir: Path
) -> None:
    out, summary, _ = reference
    before = (out / "run.trec").read_bytes()
    recorded = (out / "summary.json").read_text()
    assert json.loads(recorded)["shards_run"] == 8
    again = run_batch(
        BatchConfig(
            inputs=[pairs_file],
            output=out,
            model=str(tiny_qwen3_dir),
            mode="direct",
            workers=2,
            truncate_length=128,
        )
    )
    assert again.pairs_this_run == 0 and again.pairs == N_VALID
    assert (out / "run.trec").read_bytes() == before
    # The recorded summary is the run that did the work, not this rerun's "shards_run: 0".
    assert (out / "summary.json").read_text() == recorded
    with pytest.raises(InputError, match="other settings"):
        run_batch(BatchConfig(inputs=[pairs_file], output=out, model=str(tiny_qwen3_dir), mode="reasoning"))
    with pytest.raises(InputError, match="8 shards"):
        run_batch(
            BatchConfig(
                inputs=[pairs_file], output=out, model=str(tiny_qwen3_dir), mode="direct", num_shards=3
            )
        )


def test_bad_arguments_fail_before_any_work(tmp_path: Path, pairs_file: Path) -> None:
    cli = [sys.executable, "-m", "erank.cli", "batch"]
    r = subprocess.run(
        cli + ["--input", str(tmp_path / "nope.jsonl"), "-o", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run(
        cli + ["--input", str(pairs_file), "-o", str(tmp_path / "o"), "--engine", "nope"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 2 and "invalid choice: 'nope'" in r.stderr
    r = subprocess.run(
        cli + ["--input", str(pairs_file), "-o", str(tmp_path / "o"), "--workers", "0"],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert r.returncode == 2 and "argument --workers: expected a positive integer, got 0" in r.stderr
    with pytest.raises(InputError, match="unknown format"):
        run_batch(BatchConfig(inputs=[Path(__file__)], output=tmp_path / "o2"))


def _kill_group(proc: subprocess.Popen) -> None:
    """Stop what a subprocess started (its own process group): our processes only, by id."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=30)


def _done(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "_done").glob("*.json"))]


def test_kill_9_then_resume_gives_the_uninterrupted_rows(
    reference, pairs_file: Path, tiny_qwen3_dir: Path, tmp_path: Path
) -> None:
    ref_out, _, _ = reference
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "erank.cli", "batch", "--input", str(pairs_file), "-o", str(out),
        "--model", str(tiny_qwen3_dir), "--mode", "direct", "--workers", "1", "--cpus-per-worker", "1",
        "--shards", "32", "--truncate-length", "128",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if any(d["pairs"] > 0 for d in _done(out)):
                break
            time.sleep(0.02)
        assert proc.poll() is None, (
            "the job ended before it could be killed: " + proc.stderr.read().decode()[-2000:]
        )
        os.kill(proc.pid, signal.SIGKILL)  # kill -9 of the driver only
        proc.wait(timeout=30)
    finally:
        _kill_group(proc)  # then whatever of its local Ray is left
    # Actors already busy may still finish their shard after the driver died (then Ray's own
    # processes exit); wait until the finished set stops changing.
    done_at_kill, stable_since = _done(out), time.monotonic()
    while time.monotonic() - stable_since < 3:
        time.sleep(0.5)
        now = _done(out)
        if len(now) != len(done_at_kill):
            done_at_kill, stable_since = now, time.monotonic()
    assert 0 < len(done_at_kill) < 32
    assert not (out / "run.trec").exists()

    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300, start_new_session=True)
    assert r.returncode == 0, r.stderr[-3000:]
    assert f"({len(done_at_kill)} shards were already done)" in r.stderr
    # and nothing else on stderr: no Ray token-auth warning, no core_worker.cc "E" line (-v shows them)
    assert [line for line in r.stderr.splitlines() if not line.startswith("erank batch: ")] == [], r.stderr
    summary = json.loads((out / "summary.json").read_text())
    assert summary["shards_skipped"] == len(done_at_kill)
    assert summary["pairs_this_run"] < N_VALID  # the finished shards were not redone

    # Identical rows (same ids, ranks and scores, bit for bit) as the uninterrupted run.
    assert sorted(_run_rows(out)) == sorted(_run_rows(ref_out))
    shard_rows = _shard_rows(out)
    assert len(shard_rows) == len({(r["qid"], r["docid"]) for r in shard_rows}) == N_VALID
    errs = (out / "errors.jsonl").read_text("utf-8").splitlines()
    assert sorted(errs) == sorted((ref_out / "errors.jsonl").read_text("utf-8").splitlines())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def two_node_cluster(tmp_path: Path) -> Iterator[str]:
    """``ray start --head`` plus ``ray start --address`` on loopback, each 3 logical CPUs.

    Both run with ``--block`` in their own process group, so teardown stops exactly them.
    """
    ray_bin = str(Path(sys.executable).with_name("ray"))
    port = _free_port()
    address = f"127.0.0.1:{port}"
    procs = []
    common = ["--num-cpus", "3", "--block", "--disable-usage-stats"]
    try:
        procs.append(
            subprocess.Popen(
                [ray_bin, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                 "--include-dashboard", "false", *common],
                env=CLUSTER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        )  # fmt: skip
        _wait_nodes(address, 1)
        procs.append(
            subprocess.Popen(
                [ray_bin, "start", "--address", address, "--node-ip-address", "127.0.0.1", *common],
                env=CLUSTER_ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
            )
        )  # fmt: skip
        _wait_nodes(address, 2)
        yield address
    finally:
        for p in reversed(procs):
            try:
                os.killpg(p.pid, signal.SIGTERM)
                p.wait(timeout=10)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _wait_nodes(address: str, n: int) -> None:
    code = f"import ray; ray.init(address={address!r}, log_to_driver=False); print(sum(x['Alive'] for x in ray.nodes()))"
    deadline = time.monotonic() + 120
    last = ""
    while time.monotonic() < deadline:
        r = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, env=CLUSTER_ENV, timeout=120
        )
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-500:]
        if last.isdigit() and int(last) >= n:
            return
        time.sleep(1)
    pytest.fail(f"the loopback Ray cluster did not reach {n} nodes: {last}")


def test_two_node_loopback_cluster(
    two_node_cluster: str, pairs_file: Path, tiny_qwen3_dir: Path, tmp_path: Path, reference
) -> None:
    ref_out, _, _ = reference
    out = tmp_path / "out"
    cmd = [
        sys.executable, "-m", "erank.cli", "batch", "--input", str(pairs_file), "-o", str(out),
        "--model", str(tiny_qwen3_dir), "--mode", "direct", "--ray-address", two_node_cluster,
        "--workers", "2", "--cpus-per-worker", "2", "--shards", "16", "--truncate-length", "128",
    ]  # fmt: skip
    r = subprocess.run(cmd, env=CLUSTER_ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # 2 CPUs per actor on 3-CPU nodes: one actor per node (and a CPU left for Ray Data's read and
    # shuffle tasks), so both nodes scored shards.
    assert len(summary["nodes"]) == 2, summary
    assert sorted(_run_rows(out)) == sorted(_run_rows(ref_out))
