"""The store on PostgreSQL, and many workers sharing it: one queue, one rate limit, one budget.

Needs a server: HARVESTER_TEST_PG_URL=postgresql+psycopg://user@host:port/db, a user who may
CREATE DATABASE (each test gets a fresh database, dropped after). `.ci/run` starts a throwaway one.
"""

from __future__ import annotations

import json
import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import cli, fresh_pg_database, popen_cli
from workerprocs import sim_process, start_workers  # noqa: F401 (a fixture)

from harvester import Harvester
from harvester.config import job_from_dict
from harvester.prompts import plan
from harvester.store import AnswerRow, AttemptRow, FailureRow, Store

PG_URL = os.environ.get("HARVESTER_TEST_PG_URL")
if not PG_URL and os.environ.get("CI"):
    pytest.fail("CI: HARVESTER_TEST_PG_URL is not set, so the PostgreSQL tests cannot run (.ci/run sets it)",
                pytrace=False)
pytestmark = pytest.mark.skipif(not PG_URL, reason="PostgreSQL tests need HARVESTER_TEST_PG_URL="
                                "postgresql+psycopg://user@host:port/db (a user who may CREATE DATABASE)")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the test server, dropped afterwards."""
    assert PG_URL is not None
    with fresh_pg_database(PG_URL) as url:
        yield url


def specs(tmp_path: Path, n: int) -> Any:
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "q{i}", "metadata": {{"i": {i}}}}}\n'
                                              for i in range(n)))
    job = job_from_dict({"name": "s", "teacher": {"model": "m"}, "prompts": [{"path": "p.jsonl"}]}, base=tmp_path)
    return list(plan(job))


def wait_for(cond: Callable[[], Any], timeout: float = 60.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(every)
    raise AssertionError("timed out")


def status(job: Path) -> dict[str, Any]:
    r = cli("status", str(job), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def exported(job: Path, url: str, n: int) -> None:
    """Every answer streams out of the store once, and the export runs on it (its filters decide the rows)."""
    store = Store(url)
    ids = [r.job_id for r in store.iter_records(batch=50)]
    store.close()
    assert len(ids) == len(set(ids)) == n
    r = cli("export", str(job), "--workers", "1")
    assert r.returncode == 0, r.stderr
    r = cli("export", str(job), "--workers", "2", "--out", str(job.parent / "data" / "t2"))   # slices in 2 processes
    assert r.returncode == 0, r.stderr
    one, two = (job.parent / "data" / d / "train.jsonl" for d in ("t", "t2"))
    assert one.read_text() and one.read_text() == two.read_text()


def finish(procs: list[Any], timeout: float = 90) -> list[int]:
    codes = []
    for p in procs:
        try:
            codes.append(p.wait(timeout=timeout))
        finally:
            if p.poll() is None:
                p.kill()
    for p in procs:
        out, err = p.communicate()
        if p.returncode not in (0, -9, 130):   # what a worker said when it failed: in the test's output
            print(f"worker {p.pid} exited {p.returncode}:\n{out}{err}")
    return codes


# --- the store ---------------------------------------------------------------------------------
def test_store_plans_claims_records_and_streams(pg_url: str, tmp_path: Path) -> None:
    store = Store(pg_url)
    store.bind_job("s")
    jobs = specs(tmp_path, 30)
    assert store.plan(jobs, "p1") == 30
    assert store.plan(jobs, "p1") == 0                        # idempotent: ON CONFLICT counted right
    store.set_meta("k", "v1")
    store.set_meta("k", "v2")                                 # an upsert
    assert store.get_meta("k") == "v2" and store.get_meta("plan_key") == "p1"

    other = Store(pg_url)                                     # another process's engine
    a = store.claim("p1", "a", 12, lease_seconds=0.5)
    b = other.claim("p1", "b", 12, lease_seconds=60)
    assert [len(a), len(b)] == [12, 12] and not {j.id for j in a} & {j.id for j in b}
    assert a[0].request["messages"][0]["content"].startswith("q")       # JSON columns come back as dicts
    time.sleep(0.6)
    again = other.claim("p1", "b", 30, lease_seconds=60)
    assert {j.id for j in a} <= {j.id for j in again}                   # a's leases expired

    store.record([AttemptRow(a[0].id, 1, 0.0, 0.1, 200, None, None, 10, 3, 4),
                  AttemptRow(a[0].id, 1, 0.0, 0.1, 500, "http_500", None, 10),
                  AttemptRow(a[1].id, 1, 0.0, 0.1, 400, "http_400", None, 10)],
                 [AnswerRow(a[0].id, 1, "m", "answer é ✓", "stop", 3, 4, 0.1, {"id": "x", "n": [1, 2]})],
                 [FailureRow(a[1].id, "http_400", "bad", True), FailureRow(a[2].id, "timeout", "slow", False)])
    other.release_owner("b")
    s = store.status("p1")
    assert (s["done"], s["failed"], s["pending"], s["leased"]) == (1, 2, 27, 0)
    assert (s["requests"], s["failed_requests"], s["prompt_tokens"]) == (3, 2, 3)
    assert s["errors_by_kind"] == {"http_500": 1, "http_400": 1}
    assert store.reset_retryable_failures("p1") == 1                     # booleans: permanent stays failed
    with store.read() as conn:
        attempts = conn.execute(sa.text("SELECT attempts FROM job WHERE id = :i"), {"i": a[0].id}).scalar()
    assert attempts == 2

    cursors: list[Any] = []
    sa.event.listen(store.engine, "after_cursor_execute", lambda *args: cursors.append(args[1]))
    [rec] = list(store.iter_records("p1", batch=5))
    assert rec.job_id == a[0].id and rec.answer == "answer é ✓" and rec.messages[0]["content"].startswith("q")
    import psycopg
    assert any(isinstance(c, psycopg.ServerCursor) for c in cursors)     # streamed, not fetched whole
    store.close()
    other.close()


def test_concurrent_processes_open_bind_and_plan_without_deadlocks(pg_url: str, tmp_path: Path) -> None:
    jobs = specs(tmp_path, 3000)
    new: list[int] = []
    errors: list[BaseException] = []

    def planner(seed: int) -> None:
        try:
            store = Store(pg_url)                             # concurrent schema creation
            store.bind_job("s")
            mine = list(jobs)
            random.Random(seed).shuffle(mine)                 # each planner meets the rows in another order
            new.append(store.plan(mine, "p1", batch=250))
            store.close()
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=planner, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert errors == [] and sum(new) == 3000
    store = Store(pg_url)
    assert store.status("p1")["jobs"] == 3000
    with store.read() as conn:
        seqs = [r[0] for r in conn.execute(sa.text("SELECT seq FROM job ORDER BY seq"))]
    assert seqs == [s.seq for s in sorted(jobs, key=lambda s: s.seq)]
    with pytest.raises(Exception, match="belongs to job 's'"):
        store.bind_job("other")
    store.close()


# --- many workers --------------------------------------------------------------------------------
def plan_once(job: Path) -> None:
    """Plan the job before the workers start (a dry run writes nothing, so it cannot do it)."""
    h = Harvester.from_file(job)
    h.plan()
    h.close()


def test_four_workers_share_one_queue_and_one_rate_limit(sim_process, make_job, pg_url: str) -> None:
    n, rpm = 600, 2400                                        # 40 requests/s, enforced per second
    sim = sim_process(rpm=rpm)
    job = make_job(sim, n=n, store=pg_url, teacher={"limits": {"rpm": rpm, "max_concurrency": 16}})
    plan_once(job)  # (planning concurrently is tested above)
    procs = start_workers(job.parent, 4, "run", str(job), "--quiet")
    assert finish(procs) == [0, 0, 0, 0]
    stats = sim.stats()
    assert stats["distinct_prompts_answered"] == n and stats["prompts_answered_more_than_once"] == 0
    assert stats["requests"] == n and stats["rate_limited"] == 0   # together, within the limit
    assert stats["last_request"] - stats["first_request"] >= (n - rpm / 60) / (rpm / 60) * 0.98
    s = status(job)
    assert s["done"] == n and s["leased"] == 0 and s["workers"] == []
    with Store(pg_url).read() as conn:
        sent = [r[0] for r in conn.execute(sa.text("SELECT sent FROM run ORDER BY id"))]
    assert len(sent) == 4 and sum(sent) == n and all(k > 0 for k in sent)   # every worker took part
    exported(job, pg_url, n)


def test_four_workers_never_exceed_a_shared_token_budget(sim_factory, make_job, pg_url: str) -> None:
    sim = sim_factory(latency=0.01)
    budget = 6000
    job = make_job(sim, n=400, store=pg_url, quota={"tokens_total": budget}, teacher={"provider": "simulator"})
    plan_once(job)
    codes = finish([popen_cli("run", str(job), "--quiet") for _ in range(4)])
    assert set(codes) <= {0, 3} and 3 in codes
    stats = sim.stats()
    spent = stats["prompt_tokens"] + stats["completion_tokens"]
    assert 0 < spent <= budget
    report = json.loads(cli("quota", str(job), "--json").stdout)
    assert report["total"]["requests"] == stats["requests"]
    assert report["total"]["input_tokens"] + report["total"]["output_tokens"] == spent
    assert report["total"]["requests_reserved"] == 0


def test_a_worker_killed_mid_run_loses_nothing_and_the_others_finish_its_jobs(sim_process, make_job,
                                                                            pg_url: str) -> None:
    n, rpm = 360, 1800                                        # 30 requests/s: ~12 s of work
    sim = sim_process(rpm=rpm, latency=0.05)
    job = make_job(sim, n=n, store=pg_url, lease_seconds=2,
                   teacher={"limits": {"rpm": rpm, "max_concurrency": 12}})
    plan_once(job)
    procs = start_workers(job.parent, 3, "run", str(job), "--quiet")
    store = Store(pg_url)

    def done() -> int:
        with store.read() as conn:
            return conn.execute(sa.text("SELECT count(*) FROM job WHERE status = 'done'")).scalar()

    def owner_of(pid: int) -> str | None:
        with store.read() as conn:
            return conn.execute(sa.text("SELECT owner FROM run WHERE owner LIKE :p"), {"p": f"%:{pid}:%"}).scalar()

    victim = procs[1]
    wait_for(lambda: done() >= 90 and owner_of(victim.pid))
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=10)
    with store.read() as conn:
        held = conn.execute(sa.text("SELECT count(*) FROM job WHERE status = 'leased' AND lease_owner = :o"),
                            {"o": owner_of(victim.pid)}).scalar()
    assert held > 0                                           # it died holding jobs
    codes = finish([procs[0], procs[2]])
    assert codes == [0, 0]
    stats = sim.stats()
    assert done() == n and stats["distinct_prompts_answered"] == n      # nothing lost
    assert stats["prompts_answered_more_than_once"] <= held             # paid twice: only what it held
    s = status(job)
    assert s["leased"] == 0 and s["pending"] == 0
    exported(job, pg_url, n)
    store.close()


def test_status_lists_live_workers_and_their_shares_are_redivided(sim_process, make_job, pg_url: str) -> None:
    sim = sim_process(rpm=600, latency=0.01)
    job = make_job(sim, n=3000, store=pg_url, teacher={"limits": {"rpm": 600}})
    plan_once(job)
    procs = start_workers(job.parent, 3, "run", str(job), "--quiet")
    try:
        def shares(k: int) -> list[dict[str, Any]] | None:
            w = status(job)["workers"]
            ok = len(w) == k and all(x["share"] == pytest.approx(1 / k) and (x["throughput"] or 0) > 0 for x in w)
            return w if ok else None

        workers = wait_for(lambda: shares(3), timeout=30, every=0.3)
        assert {w["owner"].split(":")[1] for w in workers} == {str(p.pid) for p in procs}
        text = cli("status", str(job)).stdout
        assert "live workers" in text and "share 33%" in text and "answers/min" in text
        procs[0].send_signal(signal.SIGKILL)                  # a dead worker's share goes to the others
        procs[0].wait(timeout=10)
        wait_for(lambda: shares(2), timeout=30, every=0.3)
        procs[1].send_signal(signal.SIGTERM)                  # so does a stopped one's
        assert procs[1].wait(timeout=30) == 130
        wait_for(lambda: shares(1), timeout=30, every=0.3)
        procs[2].send_signal(signal.SIGTERM)
        assert procs[2].wait(timeout=30) == 130
    finally:
        finish(procs)
    assert status(job)["workers"] == []
    assert sim.stats()["rate_limited"] == 0


def test_only_dead_workers_leases_are_taken_back(pg_url: str) -> None:
    from test_takeover import check_take_back
    check_take_back(pg_url)


def test_batch_mode_on_postgres_three_workers_with_kill_9s_answer_each_job_once_under_a_budget(
        sim_factory, make_job, pg_url: str) -> None:
    """Batch mode's promises on PostgreSQL: workers sharing one store submit, read and settle batches
    (one dies by kill -9 midway); every job answered once by the provider's count, the budget held."""
    import signal
    sim = sim_factory(batch_delay=0.3)
    n = 300
    job = make_job(sim, n=n, store=pg_url, teacher={"mode": "batch", "provider": "simulator"},
                   batch={"max_requests": 25, "max_open": 3, "poll_seconds": 0.05},
                   quota={"usd_total": 1.0, "prices": {"input_per_mtok": 1.0, "output_per_mtok": 1.0,
                                                       "batch_factor": 0.5}})
    plan_once(job)
    procs = [popen_cli("run", str(job), "--quiet") for _ in range(3)]
    time.sleep(2.0)
    procs[0].send_signal(signal.SIGKILL)
    codes = finish(procs[1:])
    r = cli("run", str(job), "--quiet", timeout=180)   # picks up what the killed one left
    assert r.returncode == 0, r.stdout + r.stderr
    assert set(codes) <= {0}, codes
    stats = sim.stats()
    assert stats["batch_custom_ids_answered"] == n and stats["batch_custom_ids_answered_more_than_once"] == 0
    engine = sa.create_engine(pg_url)
    with engine.connect() as c:
        assert c.execute(sa.text("select count(*) from response")).scalar() == n
        open_batches = c.execute(sa.text("select count(*) from batch where state <> 'collected'")).scalar()
    engine.dispose()
    assert open_batches == 0
    report = json.loads(cli("quota", str(job), "--json").stdout)
    assert report["total"]["requests_reserved"] == 0 and 0 < report["total"]["usd"] <= 1.0
