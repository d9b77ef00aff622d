"""Signals: SIGINT and SIGTERM stop a run gracefully. No new request leaves after the signal, the
answers in flight are recorded, the exit code is 130, and a rerun finishes the job with every prompt
answered exactly once. The simulator's own log (with times) is the ground truth.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from conftest import cli, popen_cli, store_count

N = 160
CONCURRENCY = 8
LATENCY = 0.2           # long enough that requests are always in flight when the signal comes


def _wait_for(predicate, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_stops_gracefully_and_the_run_resumes(sig, sim_factory, make_job, tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    sim = sim_factory(latency=LATENCY, log_path=str(log))
    job = make_job(sim, n=N, teacher={"limits": {"max_concurrency": CONCURRENCY, "rpm": 60000},
                                      "params": {"max_tokens": 400}},
                   quota={"requests_total": 1_000_000})
    proc = popen_cli("run", str(job), "--quiet")
    try:
        _wait_for(lambda: store_count(job, "select count(*) from job where status = 'done'") >= 2 * CONCURRENCY)
        t_signal = time.time()
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    t_exit = time.time()
    assert proc.returncode == 130, err
    assert "rerun" in err
    assert t_exit - t_signal < 10                       # it waited for what was in flight, no longer

    events = [json.loads(line) for line in log.read_text().splitlines()]
    received_after = [e for e in events if e["event"] == "received" and e["t"] > t_signal + 1.0]
    answered_after = [e for e in events if e["event"] == "answered" and e["t"] > t_signal]
    assert received_after == []                         # no new requests once the signal was handled
    assert answered_after                               # there were answers in flight ...
    stats = sim.stats()
    done = store_count(job, "select count(*) from job where status = 'done'")
    assert done == stats["answered"] < N                # ... and every answer was recorded
    assert store_count(job, "select count(*) from attempt") == stats["requests"]
    assert store_count(job, "select count(*) from job where status = 'leased'") == 0     # leases handed back
    assert store_count(job, "select count(*) from run where exit_reason = 'interrupted' and ended_at is not null") == 1
    quota = json.loads(cli("quota", str(job), "--json").stdout)["total"]
    assert quota["requests_reserved"] == 0 and quota["requests"] == stats["requests"]

    r = cli("run", str(job), "--quiet", timeout=120)    # resumable
    assert r.returncode == 0, r.stderr
    stats = sim.stats()
    assert stats["answered"] == N and stats["distinct_prompts_answered"] == N
    assert stats["prompts_answered_more_than_once"] == 0
    assert store_count(job, "select count(*) from job where status = 'done'") == N


def _running(pid: int) -> bool:
    try:
        return "zombie" not in Path(f"/proc/{pid}/status").read_text().lower()
    except FileNotFoundError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []


@pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads child processes from /proc")
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGINT", "SIGTERM", "a worker SIGKILLed"])
def test_a_signal_during_a_parallel_export_keeps_the_last_export_and_leaves_nothing(sig, tmp_path: Path) -> None:
    import yaml
    from test_export import fill_store

    words = [f"w{i}" for i in range(4000)]
    rows = [(f"Question {i}?", " ".join(words[(i * 7 + k * 13) % 4000] for k in range(3000)), None)
            for i in range(1500)]                                 # long answers: a first pass of seconds
    fill_store(tmp_path, rows).store.close()
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "ex", "teacher": {"model": "m", "api_key_env": None},
                                   "prompts": [{"path": "prompts.jsonl"}]}))
    out = tmp_path / "data" / "ex"
    out.mkdir(parents=True)
    (out / "train.jsonl").write_text("the last export\n")
    (out / ".harvester-export.json").write_text(json.dumps({"job": "ex", "files": ["train.jsonl"]}))
    proc = popen_cli("export", str(job), "--workers", "2")
    try:
        _wait_for(lambda: len(_children(proc.pid)) >= 2 or proc.poll() is not None)   # first pass running
        assert proc.poll() is None, proc.communicate()[1]
        workers = _children(proc.pid)
        if sig == signal.SIGKILL:                                # e.g. the OOM killer
            os.kill(workers[0], sig)
        else:
            proc.send_signal(sig)
        if sig == signal.SIGINT:                                 # Ctrl-C reaches the whole process group
            for pid in workers:
                os.kill(pid, signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    if sig == signal.SIGKILL:
        assert proc.returncode == 1 and "worker process" in err and "--workers 1" in err, err
        assert "Traceback" not in err
    else:
        assert proc.returncode == 130, err
    assert (out / "train.jsonl").read_text() == "the last export\n"
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".ex-")]   # no half-written folder
    _wait_for(lambda: not any(map(_running, workers)), timeout=10)                    # no worker left behind


def test_an_export_killed_outright_leaves_a_staging_folder_that_the_next_export_removes(tmp_path: Path) -> None:
    import yaml
    from test_export import fill_store

    from harvester.export.staging import new_staging

    words = [f"w{i}" for i in range(4000)]
    rows = [(f"Question {i}?", " ".join(words[(i * 7 + k * 13) % 4000] for k in range(2000)), None)
            for i in range(1500)]
    fill_store(tmp_path, rows).store.close()
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "ex", "teacher": {"model": "m", "api_key_env": None},
                                   "prompts": [{"path": "prompts.jsonl"}]}))
    data = tmp_path / "data"
    staged = lambda: [p.name for p in data.glob(".ex-staging-*")]  # noqa: E731
    proc = popen_cli("export", str(job), "--workers", "1")
    try:
        _wait_for(lambda: bool(staged()) or proc.poll() is not None)   # writing its second pass
    finally:
        proc.kill()                                                      # kill -9: no clean-up of its own
        proc.wait(timeout=10)
    left = staged()
    assert len(left) == 1 and f"-staging-{proc.pid}@" in left[0]
    live = new_staging(data / "ex")                                      # an export of this (live) process

    r = cli("export", str(job), timeout=300)
    assert r.returncode == 0, r.stderr
    assert staged() == [live.name]                                       # the dead one's gone, the live one's kept
    assert len((data / "ex" / "train.jsonl").read_text().splitlines()) + \
        len((data / "ex" / "rejected.jsonl").read_text().splitlines()) == 1500
