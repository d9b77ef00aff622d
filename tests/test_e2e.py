"""The real CLI against the real simulator over loopback HTTP, with a real SQLite file."""

from __future__ import annotations

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import cli, popen_cli
from openai_rows import validate_openai_row


def db_path(job: Path) -> Path:
    return job.parent / "data" / "t.db"


def count_done(job: Path) -> int:
    try:
        with sqlite3.connect(db_path(job), timeout=5) as conn:
            return conn.execute("select count(*) from job where status = 'done'").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(predicate, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("timed out waiting")


def test_full_harvest_status_export_and_rerun(sim, make_job) -> None:
    job = make_job(sim, n=30)
    r = cli("run", str(job))
    assert r.returncode == 0, r.stderr
    assert "run done: sent 30 requests, 30 answered" in r.stdout
    assert sim.stats()["answered"] == 30

    again = cli("run", str(job))
    assert again.returncode == 0, again.stderr
    assert sim.stats()["requests"] == 30  # a rerun sends nothing new

    status = json.loads(cli("status", str(job), "--json").stdout)
    assert (status["jobs"], status["done"], status["pending"], status["failed"]) == (30, 30, 0, 0)
    assert status["completion_tokens"] == sim.stats()["completion_tokens"]

    exp = cli("export", str(job))
    assert exp.returncode == 0, exp.stderr
    out = job.parent / "data" / "t"
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 30
    assert all(validate_openai_row(row) == [] for row in rows)
    assert rows[0]["messages"][0]["content"].startswith("Question number 0:")  # plan order
    import datasets
    assert len(datasets.load_from_disk(str(out / "hf"))["train"]) == 30


def test_sigint_stops_gracefully_and_a_rerun_completes(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.05)
    job = make_job(sim, n=200, teacher={"limits": {"max_concurrency": 4}})
    proc = popen_cli("run", str(job), "--quiet")
    wait_for(lambda: count_done(job) >= 20)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    stopped_at = sim.stats()["answered"]
    assert 20 <= stopped_at < 200
    assert count_done(job) == stopped_at  # every answer received before the stop was recorded
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    stats = sim.stats()
    assert stats["answered"] == 200 and stats["prompts_answered_more_than_once"] == 0
    assert count_done(job) == 200


def test_sigkill_loses_at_most_what_was_in_flight(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.05)
    concurrency = 4
    job = make_job(sim, n=200, teacher={"limits": {"max_concurrency": concurrency}}, lease_seconds=1)
    proc = popen_cli("run", str(job), "--quiet")
    wait_for(lambda: count_done(job) >= 20)
    proc.kill()
    proc.wait(timeout=10)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    stats = sim.stats()
    assert count_done(job) == 200
    assert stats["distinct_prompts_answered"] == 200
    # Answers the simulator sent but the store never saw: at most one writer batch of in-flight requests.
    assert stats["prompts_answered_more_than_once"] <= 2 * concurrency
    export = cli("export", str(job))
    rows = (job.parent / "data" / "t" / "train.jsonl").read_text().splitlines()
    assert export.returncode == 0 and len(rows) == 200


def test_bad_key_stops_the_run_with_a_clear_message(sim_factory, make_job, monkeypatch) -> None:
    sim = sim_factory(api_key="right-key-123")
    job = make_job(sim, n=50, teacher={"api_key_env": "HARVESTER_TEST_KEY"})
    r = cli("run", str(job), "--quiet", env={"HARVESTER_TEST_KEY": "wrong-key-456"})
    assert r.returncode == 1
    assert "HTTP 401" in r.stderr and "api_key_env" in r.stderr
    assert "wrong-key-456" not in r.stderr + r.stdout
    assert sim.stats()["requests"] <= 8  # only what was already in flight
    assert count_done(job) == 0


def test_malformed_prompt_file_names_file_and_line(sim, make_job) -> None:
    job = make_job(sim, n=5)
    bad = job.parent / "prompts.jsonl"
    bad.write_text('{"prompt": "fine"}\n{"prompt": "fine too"}\n{"prompt": oops}\n')
    r = cli("run", str(job))
    assert r.returncode == 2
    assert f"{bad}:3: invalid JSON" in r.stderr
    assert sim.stats()["requests"] == 0


def test_bad_job_field_exits_2(sim, make_job) -> None:
    job = make_job(sim, n=5, retry={"max_attempts": 0})
    r = cli("run", str(job))
    assert r.returncode == 2
    assert "retry.max_attempts" in r.stderr


def test_permanent_errors_are_recorded_not_retried(sim_factory, make_job) -> None:
    sim = sim_factory(max_context=1000)
    job = make_job(sim, n=3)
    with (job.parent / "prompts.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "long " * 1000}) + "\n")
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sim.stats()["by_status"] == {"200": 3, "400": 1}  # sent once, never retried
    status = json.loads(cli("status", str(job), "--json").stdout)
    assert status["failed_by_kind"] == {"http_400": 1} and status["done"] == 3
    again = cli("run", str(job), "--quiet")
    assert again.returncode == 0 and sim.stats()["requests"] == 4  # permanent: not retried on rerun


@pytest.mark.parametrize("fmt", ["openai", "alpaca", "sharegpt", "trl"])
def test_export_formats_load_with_datasets(sim, make_job, fmt) -> None:
    job = make_job(sim, n=5)
    assert cli("run", str(job), "--quiet").returncode == 0
    out = job.parent / f"out-{fmt}"
    r = cli("export", str(job), "--out", str(out), "--format", fmt)
    assert r.returncode == 0, r.stderr
    import datasets
    ds = datasets.load_dataset("json", data_files=str(out / "train.jsonl"), split="train")
    assert len(ds) == 5


def test_a_prompt_repeated_in_the_file_is_one_job(sim, make_job) -> None:
    job = make_job(sim, n=3)
    with (job.parent / "prompts.jsonl").open("a") as f:
        f.write('{"prompt": "Question number 0: explain topic 0 briefly."}\n')  # the same as line 1
    r = cli("run", str(job))
    assert r.returncode == 0, r.stderr
    assert "job: 3/3 done" in r.stdout and sim.stats()["requests"] == 3
