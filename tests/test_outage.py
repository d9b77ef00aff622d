"""A teacher that goes down: the run stops with exit 4 and its jobs pending, instead of failing them all.

The pure watch (harvester.outage) with made-up times; then the real CLI and API against simulators:
one killed in the middle of a run (connections refused from then on), one failing every request.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import REPO, cli
from workerprocs import sim_process  # noqa: F401 (a fixture)

from harvester import Harvester
from harvester.config import load_job
from harvester.outage import OutageWatch


# --- the watch --------------------------------------------------------------------------------
def fail(watch: OutageWatch, now: float, jobs: str, kind: str = "connection") -> None:
    status = int(kind[5:]) if kind.startswith("http_") else None   # an HTTP error: the server answered
    for job in jobs:
        watch.failed(now, job, kind, status=status)


def test_many_different_jobs_failing_make_the_teacher_suspect_then_down_after_the_delay() -> None:
    w = OutageWatch(60.0)
    fail(w, 100.0, "abcdefg")
    assert not w.suspect()                                  # 7 failures: not yet a streak
    fail(w, 101.0, "h", "http_503")
    assert w.suspect() and not w.down(159.9)                # 8 failures of 8 jobs
    assert w.down(160.0)                                    # 60 s since the first of them
    text = w.describe(160.0)
    assert "answered nothing for 60 s" in text and "8 attempts failed" in text
    assert "connection x7" in text and "http_503 x1" in text


def test_one_prompt_failing_again_and_again_is_that_prompts_problem() -> None:
    w = OutageWatch(1.0)
    fail(w, 0.0, "aaaaaaaaaaaaaaaaaaaa")
    fail(w, 5.0, "bbbbbbbbbb")
    fail(w, 9.0, "cccccccccc")
    assert w.failures == 40 and not w.suspect() and not w.down(100.0)   # three jobs: not the teacher
    fail(w, 10.0, "d")
    assert w.suspect() and w.down(10.0)


def test_an_answer_ends_the_streak_and_none_means_never() -> None:
    w = OutageWatch(1.0)
    fail(w, 0.0, "abcdefgh")
    w.answered()
    assert not w.suspect() and w.failures == 0
    fail(w, 50.0, "abcdefgh")
    assert w.suspect() and not w.down(50.5) and w.down(51.0)            # timed from the new streak
    never = OutageWatch(None)
    fail(never, 0.0, "abcdefghijklmnop" * 4)
    assert not never.suspect() and not never.down(1e9)


# --- end to end -------------------------------------------------------------------------------
# A fast teacher setting and quick retries; the teacher counts as down after 1 s without an answer.
TEACHER = {"timeout": 5, "params": {"max_tokens": 100}, "limits": {"max_concurrency": 4, "rpm": 600}}
RETRY = {"max_attempts": 6, "initial_wait": 0.01, "max_wait": 0.1, "outage_after": 1.0}


def _counts(job: Path) -> dict[str, int]:
    with sqlite3.connect(job.parent / "data" / "t.db", timeout=30) as c:
        return dict(c.execute("SELECT status, count(*) FROM job GROUP BY status").fetchall())


def test_a_teacher_that_dies_mid_run_stops_it_with_exit_4_and_a_rerun_finishes(sim_process, make_job) -> None:
    n = 60
    sim = sim_process(rpm=600, latency=0.02)                # 10 answers/s: the run takes ~6 s
    job = make_job(sim, n=n, teacher=TEACHER, retry=RETRY)
    run = subprocess.Popen([sys.executable, "-m", "harvester.cli", "run", str(job), "--quiet"], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while sim.stats()["answered"] < 20 and time.monotonic() < deadline:
        time.sleep(0.05)
    sim.proc.kill()                                          # the teacher dies: connections refused from now on
    sim.proc.wait(10)
    t0 = time.monotonic()
    out, errors = run.communicate(timeout=60)
    assert run.returncode == 4, out + errors
    assert time.monotonic() - t0 < 20                        # ~outage_after, not a trip through the whole queue
    assert "looks down" in errors and "rerun later" in errors and "connection" in errors
    counts = _counts(job)
    done = counts["done"]
    assert 15 <= done < n and counts.get("failed", 0) == 0 and counts.get("leased", 0) == 0
    assert counts["pending"] == n - done                    # nothing given up on, nothing left leased

    again = sim_process(rpm=600)                             # back up (at another address)
    data = yaml.safe_load(job.read_text())
    data["teacher"]["base_url"] = again.url
    job.write_text(yaml.safe_dump(data))
    r = cli("run", str(job), "--quiet", timeout=120)
    assert r.returncode == 0, r.stderr
    assert _counts(job) == {"done": n}
    stats = again.stats()
    assert stats["distinct_prompts_answered"] == n - done and stats["prompts_answered_more_than_once"] == 0


def test_a_teacher_failing_every_request_from_the_start(sim_factory, make_job) -> None:
    sim = sim_factory(error_rate=1.0, seed=3)
    job = make_job(sim, n=12, teacher=TEACHER, retry=RETRY)
    h = Harvester(load_job(job))
    t0 = time.monotonic()
    result = h.run_sync(handle_signals=False)
    assert (result.reason, result.exit_code, result.answered, result.failed) == ("unavailable", 4, 0, 0)
    assert time.monotonic() - t0 < 15 and "http_50" in result.message
    assert result.status["pending"] == 12 and result.status["failed"] == 0

    never = yaml.safe_load(job.read_text())                 # outage_after: null, the old way: every job fails
    never["retry"].update(outage_after=None, max_attempts=2)
    job.write_text(yaml.safe_dump(never))
    result = Harvester(load_job(job)).run_sync(handle_signals=False)
    assert (result.reason, result.exit_code, result.failed) == ("done", 0, 12)
