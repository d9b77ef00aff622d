"""Faults: the real CLI against a simulator that answers 5% of requests with a 5xx, drops 2% of
connections, sends 2% unparseable 200 bodies and answers 1% slower than the request timeout.

Every prompt ends done, or failed with its reason recorded; a rerun gives the failed ones a fresh
`max_attempts`; nothing crashes and nothing hangs (every wait here has a timeout, and so does every
request the harvester sends). The quota ledger counts each attempt once.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from conftest import cli

# What these faults may be recorded as (harvester.teacher classifies them).
KNOWN_KINDS = {"timeout", "connection", "bad_body", "http_500", "http_502", "http_503"}
N = 400
TIMEOUT = 1.0


def _db(job: Path) -> sqlite3.Connection:
    return sqlite3.connect(job.parent / "data" / "t.db", timeout=30)


def _status(job: Path) -> dict:
    r = cli("status", str(job), "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _set_max_attempts(job: Path, n: int) -> None:
    data = yaml.safe_load(job.read_text())
    data["retry"]["max_attempts"] = n
    job.write_text(yaml.safe_dump(data))


def test_faults_end_done_or_failed_with_a_reason_and_reruns_retry(sim_factory, make_job) -> None:
    sim = sim_factory(error_rate=0.05, drop_rate=0.02, garbage_rate=0.02, slow_rate=0.01,
                      slow_seconds=3 * TIMEOUT, latency=0.005, seed=11)
    job = make_job(sim, n=N, teacher={"timeout": TIMEOUT, "params": {"max_tokens": 400},
                                      "limits": {"max_concurrency": 16, "rpm": 60000}},
                   retry={"max_attempts": 1, "initial_wait": 0.01, "max_wait": 0.05},
                   quota={"requests_total": 1_000_000})

    # Run 1: one attempt per job, so about one job in ten fails, each with its reason.
    t0 = time.monotonic()
    r = cli("run", str(job), "--quiet", timeout=120)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 90
    s = _status(job)
    assert (s["jobs"], s["pending"], s["leased"]) == (N, 0, 0), s
    assert s["done"] + s["failed"] == N
    assert 10 <= s["failed"] <= 100, s          # ~10% of 400 expected
    assert s["failed_by_kind"] and set(s["failed_by_kind"]) <= KNOWN_KINDS, s
    assert sum(s["failed_by_kind"].values()) == s["failed"]
    assert set(s["errors_by_kind"]) <= KNOWN_KINDS, s     # each kind alone: test_each_fault_alone_...
    with _db(job) as c:
        rows = c.execute("select error_kind, last_error, permanent, attempts from job "
                         "where status = 'failed'").fetchall()
        assert all(kind in KNOWN_KINDS and msg and not perm and n == 1 for kind, msg, perm, n in rows), rows
        assert c.execute("select count(*) from job j left join response r on r.job_id = j.id "
                         "where j.status = 'done' and r.job_id is null").fetchone()[0] == 0
        attempts_1 = c.execute("select count(*) from attempt").fetchone()[0]
    stats = sim.stats()
    assert attempts_1 == s["requests"] == N                 # one attempt each, every one recorded
    assert stats["requests"] == N
    # The ledger: every attempt counted once, nothing left reserved.
    q = cli("quota", str(job), "--json", timeout=60)
    assert q.returncode == 0, q.stderr
    total = json.loads(q.stdout)["total"]
    assert total["requests"] == stats["requests"] and total["requests_reserved"] == 0, total

    # Run 2: the failed ones get a fresh max_attempts (3); no job is sent more often than that,
    # answered ones are not sent again, and a job still failed has used all 3.
    failed_1 = s["failed"]
    _set_max_attempts(job, 3)
    r = cli("run", str(job), "--quiet", timeout=120)
    assert r.returncode == 0, r.stderr
    s2 = _status(job)
    with _db(job) as c:
        run2 = c.execute("select max(run_id) from attempt").fetchone()[0]
        per_job = dict(c.execute("select job_id, count(*) from attempt where run_id = ? group by job_id",
                                 (run2,)).fetchall())
        failed_before = {r[0] for r in c.execute("select distinct job_id from attempt where run_id < ? "
                                                 "and job_id not in (select job_id from response where run_id < ?)",
                                                 (run2, run2))}
        still_failed = {r[0] for r in c.execute("select id from job where status = 'failed'")}
    assert set(per_job) == failed_before and len(per_job) == failed_1
    assert max(per_job.values()) <= 3
    assert all(per_job[j] == 3 for j in still_failed)
    assert s2["failed"] < failed_1 and s2["done"] + s2["failed"] == N

    # Reruns until everything is answered (a job fails three times in a row once in a thousand).
    for _ in range(3):
        if _status(job)["done"] == N:
            break
        assert cli("run", str(job), "--quiet", timeout=120).returncode == 0
    final = _status(job)
    assert final["done"] == N and final["failed"] == 0, final
    stats = sim.stats()
    assert stats["distinct_prompts_answered"] == N
    # The simulator answers a slow request after the client gave up: that answer is paid and lost.
    assert stats["prompts_answered_more_than_once"] <= final["errors_by_kind"].get("timeout", 0)
    total = json.loads(cli("quota", str(job), "--json", timeout=60).stdout)["total"]
    assert total["requests"] == stats["requests"] == final["requests"] and total["requests_reserved"] == 0
    export = cli("export", str(job), timeout=120)
    assert export.returncode == 0, export.stderr
    rows = (job.parent / "data" / "t" / "train.jsonl").read_text().splitlines()
    assert len(rows) == N


@pytest.mark.parametrize("fault,kinds", [
    ({"error_rate": 1.0}, {"http_500", "http_502", "http_503"}),
    ({"drop_rate": 1.0}, {"connection"}),
    ({"garbage_rate": 1.0}, {"bad_body"}),
    ({"slow_rate": 1.0, "slow_seconds": 3 * TIMEOUT}, {"timeout"}),
], ids=["5xx", "dropped", "garbage", "slow"])
def test_each_fault_alone_is_retried_then_recorded(fault, kinds, sim_factory, make_job) -> None:
    """Every request faulty in one way: each job is tried max_attempts times, then failed with that kind."""
    sim = sim_factory(**fault, seed=1)
    job = make_job(sim, n=3, teacher={"timeout": TIMEOUT, "limits": {"max_concurrency": 4, "rpm": 60000}},
                   retry={"max_attempts": 2, "initial_wait": 0.01, "max_wait": 0.05})
    t0 = time.monotonic()
    r = cli("run", str(job), "--quiet", timeout=60)
    assert r.returncode == 0, r.stderr
    assert time.monotonic() - t0 < 30
    assert "run done: sent 6 requests, 0 answered, 3 failed" in r.stdout
    assert sim.stats()["requests"] == 6
    with _db(job) as c:
        jobs = c.execute("select status, error_kind, last_error, attempts, permanent from job").fetchall()
        attempt_kinds = {k for (k,) in c.execute("select error_kind from attempt")}
    assert all(st == "failed" and kind in kinds and msg and n == 2 and not perm
               for st, kind, msg, n, perm in jobs), jobs
    assert attempt_kinds <= kinds
