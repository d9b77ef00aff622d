"""After `kill -9`, a rerun takes back the dead run's jobs at once (not after lease_seconds) and
finishes them; `status` shows the killed run as crashed; a run says "done" (exit 0) only when every
job of the plan is answered or failed with its reason; a live worker's leases are never taken.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import sqlalchemy as sa
from conftest import cli, popen_cli, store_count

from harvester.store import Store
from harvester.store.rows import JobSpec
from harvester.workers import origin, process_gone

N = 400
CONCURRENCY = 8


def _status(job: Path) -> dict:
    r = cli("status", str(job), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_a_rerun_after_kill_9_takes_back_the_dead_runs_jobs_and_finishes(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.2)                       # slow: many jobs leased and in flight at the kill
    # The default lease (600 s): the rerun must not wait for it.
    job = make_job(sim, n=N, teacher={"limits": {"max_concurrency": CONCURRENCY, "rpm": 60000}})
    proc = popen_cli("run", str(job), "--quiet")
    deadline = time.monotonic() + 60
    while store_count(job, "select count(*) from job where status = 'done'") < 40:
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=10)
    leased = store_count(job, "select count(*) from job where status = 'leased'")
    assert leased > 0                                    # claimed ahead (prefetch) and in flight
    answered_at_kill = sim.stats()["answered"]

    s = _status(job)                                     # the killed run is crashed, not "running"
    assert s["last_run"]["exit_reason"] == "crashed" and s["workers"] == [], s
    assert s["leased"] == leased

    t0 = time.monotonic()
    r = cli("run", str(job), "--quiet", timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"job: {N}/{N} done, 0 failed, 0 pending" in r.stdout
    assert time.monotonic() - t0 < 120                   # nowhere near lease_seconds (600 s) per lease
    s = _status(job)
    assert (s["done"], s["pending"], s["leased"], s["failed"]) == (N, 0, 0, 0), s
    stats = sim.stats()
    assert stats["distinct_prompts_answered"] == N
    # Paid twice: only answers in flight at the kill (sent, answered after the process died).
    assert stats["prompts_answered_more_than_once"] <= CONCURRENCY
    assert stats["answered"] - answered_at_kill <= N - 40 + CONCURRENCY
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        reasons = [r for (r,) in c.execute("select exit_reason from run order by id")]
    assert reasons == ["crashed", "done"]                # the rerun recorded the dead run as crashed


def test_only_dead_workers_leases_are_taken_back(tmp_path: Path) -> None:
    """The store's side, with real runs: a live worker (fresh heartbeat, its pid alive), a worker whose
    pid is gone on this machine, and one silent for longer than dead_after on another machine."""
    check_take_back(f"sqlite:///{tmp_path / 's.db'}")


def check_take_back(url: str) -> None:
    """(test_postgres.py runs this on PostgreSQL.)"""
    store = Store(url)
    specs = [JobSpec(id=f"j{i}", prompt_key=f"p{i}", seq=i, sample_index=0,
                     request={"model": "m", "messages": [{"role": "user", "content": str(i)}]},
                     source="x", metadata={}) for i in range(9)]
    store.plan(specs, "plan")
    gone_pid = os.fork()
    if gone_pid == 0:
        os._exit(0)
    os.waitpid(gone_pid, 0)
    owners = {"live": f"h:{os.getpid()}:aaa", "gone": f"h:{gone_pid}:bbb", "silent": "other:123:ccc"}
    for name, owner in owners.items():
        store.start_run(job_name="t", owner=owner, origin="elsewhere" if name == "silent" else origin(),
                        version="0", config_hash="x", plan_key="plan")
        store.claim("plan", owner, 3, 600)
    with store.write() as conn:                          # the silent one last beat 60 s ago
        conn.execute(sa.text("update run set heartbeat_at = heartbeat_at - 60 where owner = :o"),
                     {"o": owners["silent"]})
    released = store.take_back_dead("plan", dead_after=7.0, gone=process_gone)
    assert released == {owners["gone"]: 3, owners["silent"]: 3}
    assert store.leases_held("plan") == {owners["live"]: 3}
    assert store.count_states("plan") == {"pending": 6, "leased": 3, "done": 0, "failed": 0}
    with store.read() as conn:
        rows = dict(conn.execute(sa.text("select owner, exit_reason from run")).all())
    assert rows == {owners["live"]: None, owners["gone"]: "crashed", owners["silent"]: "crashed"}
    assert store.take_back_dead("plan", dead_after=7.0, gone=process_gone) == {}   # idempotent
    store.close()


def test_a_run_that_cannot_finish_every_job_is_not_done(sim, make_job) -> None:
    """Jobs leased by a worker the store knows nothing of (no run: neither live nor known dead) are
    waited for by nobody: the run ends "incomplete", exit 1, saying how many are left."""
    job = make_job(sim, n=10)
    assert cli("run", str(job), "--quiet").returncode == 0
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        c.execute("update job set status = 'leased', lease_owner = 'ghost:1:x', lease_expires = ? "
                  "where rowid in (select rowid from job order by seq limit 3)", (time.time() + 600,))
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "run incomplete" in r.stdout and "3 leased by other workers" in r.stdout
    assert "3 of 10 jobs have no answer yet (0 pending, 3 leased by another worker)" in r.stderr
    assert "Traceback" not in r.stderr


def _stop_between_writes(proc, db: Path) -> None:
    """SIGSTOP a run at a moment it holds no write lock. A process stopped inside a write
    transaction blocks every writer until it wakes (SQLite has no way round that): that case is
    not this test's, so stop again until the store is writable."""
    import signal
    for _ in range(200):
        proc.send_signal(signal.SIGSTOP)
        c = sqlite3.connect(db, timeout=0, isolation_level=None)
        try:
            c.execute("BEGIN IMMEDIATE")
            c.execute("ROLLBACK")
            return
        except sqlite3.OperationalError:
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.01)
        finally:
            c.close()
    raise AssertionError("the run held the store's write lock at every try")


def test_a_stopped_worker_is_waited_for_then_taken_back_and_stops_when_it_wakes(sim_factory, make_job) -> None:
    """SIGSTOP: the process lives on, silent. Another run waits while it counts as live (its
    heartbeat is fresh), takes its jobs back once it is silent for dead_after, and finishes them;
    woken up, the stopped worker finds itself taken for dead and stops (exit 1) instead of going on."""
    import signal
    n = 120
    sim = sim_factory(latency=0.2)
    job = make_job(sim, n=n, teacher={"limits": {"max_concurrency": 4, "rpm": 60000}})
    a = popen_cli("run", str(job), "--quiet")
    deadline = time.monotonic() + 60
    while store_count(job, "select count(*) from job where status = 'done'") < 10:
        assert time.monotonic() < deadline and a.poll() is None
        time.sleep(0.05)
    _stop_between_writes(a, job.parent / "data" / "t.db")
    try:
        held = store_count(job, "select count(*) from job where status = 'leased'")
        assert held > 0
        b = cli("run", str(job), "--quiet", timeout=180)
        assert b.returncode == 0, b.stdout + b.stderr
        assert f"job: {n}/{n} done" in b.stdout
    finally:
        a.send_signal(signal.SIGCONT)
    out, err = a.communicate(timeout=60)
    assert a.returncode == 1, out + err
    assert "took back its jobs" in err and "Traceback" not in err
    stats = sim.stats()
    assert stats["distinct_prompts_answered"] == n
    # Paid twice: at most the jobs it held (in flight, or claimed ahead and sent in the moment between
    # waking up and its next heartbeat).
    assert stats["prompts_answered_more_than_once"] <= held
