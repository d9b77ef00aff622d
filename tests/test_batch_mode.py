"""Batch mode end to end: the real CLI and store against the simulator's batch APIs (both protocols).

Every answer exactly once, counted against the simulator's own log; kill -9 at random moments, then
reruns: no custom_id answered twice and none lost; expired batches keep what they finished; line
errors follow the retry rules; budgets hold at the batch price.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from conftest import cli, popen_cli, store_count
from workerprocs import sim_process  # noqa: F401 (a fixture)

FAST = {"poll_seconds": 0.05}


def batch_job(make_job, sim, n: int, protocol: str = "openai", **batch) -> Path:
    return make_job(sim, n=n, teacher={"mode": "batch"}, batch={"protocol": protocol, **FAST, **batch})


def answers(job: Path) -> int:
    return store_count(job, "select count(*) from response")


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_batch_run_answers_every_job_once_through_several_batches(sim_factory, make_job, protocol) -> None:
    sim = sim_factory(batch_delay=0.2)
    n = 250
    job = batch_job(make_job, sim, n, protocol, max_requests=60)
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"job: {n}/{n} done" in r.stdout
    stats = sim.stats()
    assert stats["requests"] == 0                             # nothing went through the chat endpoint
    assert stats["batch_custom_ids_answered"] == n and stats["batch_custom_ids_answered_more_than_once"] == 0
    assert stats["batches_created"][protocol] == 5            # 250 lines, 60 per batch
    assert answers(job) == n
    # the answers are the ones a synchronous run gets
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        raw = [json.loads(x) for (x,) in c.execute("select raw from response")]
    assert all(x.get("batch") for x in raw)
    e = cli("export", str(job))
    assert e.returncode == 0, e.stdout + e.stderr
    r = cli("run", str(job))
    assert r.returncode == 0 and sim.stats()["batch_custom_ids_answered"] == n  # a rerun sends nothing


def test_detach_submits_and_exits_5_and_a_later_run_reads_the_answers(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=1.5)
    job = batch_job(make_job, sim, 30, max_requests=10, max_open=10)
    r = cli("run", str(job), "--detach")
    assert r.returncode == 5, r.stdout + r.stderr
    assert "run detached" in r.stdout and "30 in open batches" in r.stdout and "3 batches open" in r.stderr
    s = json.loads(cli("status", str(job), "--json").stdout)
    assert [b["lines"] for b in s["batches"]] == [10, 10, 10] and s["leased"] == 30
    time.sleep(1.6)
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    assert sim.stats()["batches_created"]["openai"] == 3        # read, not submitted again
    assert answers(job) == 30


def test_expired_batches_keep_their_answers_and_the_rest_goes_again(sim_factory, make_job) -> None:
    # the first batches expire halfway: their finished lines are kept, the others go into later batches
    sim = sim_factory(batch_delay=0.4, batch_expire_after=0.2)
    n = 80
    job = batch_job(make_job, sim, n, max_requests=40)
    p = popen_cli("run", str(job), "--quiet")
    deadline = time.monotonic() + 60
    while sim.stats()["batch_lines_expired"] == 0:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.05)
    sim.config.batch_expire_after = None           # the provider catches up: later batches finish
    out, err = p.communicate(timeout=120)
    assert p.returncode == 0, out + err
    s = sim.stats()
    assert s["batch_lines_expired"] > 0 and s["batches_ended"].get("openai:expired", 0) > 0
    assert s["batch_custom_ids_answered"] == n and s["batch_custom_ids_answered_more_than_once"] == 0
    assert answers(job) == n
    with sqlite3.connect(job.parent / "data" / "t.db") as c:   # an expired line is no attempt
        assert c.execute("select count(*) from attempt where error_kind = 'batch_expired'").fetchone()[0] == 0


def test_line_errors_follow_the_retry_rules(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.1, batch_error_rate=0.3, batch_invalid_rate=0.1, seed=3)
    n = 100
    job = batch_job(make_job, sim, n, max_requests=50)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        failed = c.execute("select count(*), min(permanent) from job where status = 'failed'").fetchone()
        done = c.execute("select count(*) from job where status = 'done'").fetchone()[0]
        retried = c.execute("select count(*) from job where status = 'done' and attempts > 1").fetchone()[0]
    assert failed[0] > 0 and failed[1] == 1          # the invalid lines: failed, permanent, once
    assert done + failed[0] == n and retried > 0      # transient errors: answered in a later batch


def test_kill_9_at_random_moments_loses_nothing_and_pays_nothing_twice(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.3)
    n = 600
    job = batch_job(make_job, sim, n, max_requests=50, max_open=3)
    rnd = random.Random(11)
    for _ in range(10):
        p = popen_cli("run", str(job), "--quiet")
        time.sleep(rnd.uniform(0.3, 1.5))
        if p.poll() is None:
            p.send_signal(signal.SIGKILL)
        p.wait(30)
    r = cli("run", str(job), "--quiet", timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sim.stats()
    assert s["batch_custom_ids_answered"] == n
    assert s["batch_custom_ids_answered_more_than_once"] == 0
    assert answers(job) == n


def test_a_usd_budget_holds_at_the_batch_price(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.1)
    n = 200
    # worst case per line: ~ (input bound ~80 + 400 max_tokens) tokens at $1/Mtok, x 0.5: ~$0.00024;
    # the answers cost far less (~70 tokens), so the whole plan (~$0.007) needs more than the budget
    job = batch_job(make_job, sim, n, max_requests=40)
    text = job.read_text().replace("quota: {}", "")
    job.write_text(text + "quota:\n  usd_total: 0.004\n  prices: {input_per_mtok: 1.0, output_per_mtok: 1.0, "
                   "batch_factor: 0.5}\n")
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 3, r.stdout + r.stderr
    q = json.loads(cli("quota", str(job), "--json").stdout)
    assert q["total"]["usd"] <= 0.004 + 1e-9
    assert 0 < answers(job) < n


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_kill_between_creating_a_batch_and_recording_it_creates_it_once(sim_factory, make_job, protocol) -> None:
    """The provider has made the batch; the client dies before it hears so. The rerun finds that batch
    at the provider (OpenAI: its input file or tag; Anthropic: its size and time) instead of paying twice."""
    sim = sim_factory(batch_delay=0.2)
    job = batch_job(make_job, sim, 30, protocol, max_requests=10, max_open=1)
    p = popen_cli("run", str(job), "--quiet")
    killed: list[str] = []

    def kill_once(batch) -> None:
        if not killed:
            killed.append(batch.id)
            os.kill(p.pid, signal.SIGKILL)

    sim.batches.on_created = kill_once
    p.wait(60)
    assert killed and p.returncode == -signal.SIGKILL
    assert store_count(job, "select count(*) from batch where provider_id is null") == 1   # recorded: intent only
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"found batch {killed[0]} at the provider" in r.stdout
    s = sim.stats()
    assert s["batches_created"][protocol] == 3                  # 30 lines, 10 a batch: none made twice
    assert s["batch_custom_ids_answered"] == 30 and s["batch_custom_ids_answered_more_than_once"] == 0
    assert answers(job) == 30


def test_two_processes_sharing_a_store_never_exceed_a_usd_budget_at_the_batch_price(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.2)
    n = 300
    job = batch_job(make_job, sim, n, max_requests=15, max_open=2)
    job.write_text(job.read_text() + "quota:\n  usd_total: 0.004\n  prices: {input_per_mtok: 1.0, "
                   "output_per_mtok: 1.0, batch_factor: 0.5}\n")
    procs = [popen_cli("run", str(job), "--quiet") for _ in range(2)]
    codes = [p.wait(180) for p in procs]
    assert sorted(codes) in ([0, 3], [3, 3]), [p.communicate() for p in procs]
    q = json.loads(cli("quota", str(job), "--json").stdout)
    assert q["total"]["usd"] <= 0.004 + 1e-9 and q["total"]["usd"] > 0.003     # used to the end, not past it
    s = sim.stats()
    assert s["batch_custom_ids_answered_more_than_once"] == 0
    assert 0 < answers(job) == s["batch_custom_ids_answered"] < n


def test_ten_thousand_prompts_through_several_batches_each_answered_once(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.5)
    n = 10_000
    job = batch_job(make_job, sim, n, max_requests=2_500, max_open=4)
    r = cli("run", str(job), "--quiet", timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    s = sim.stats()
    assert s["batches_created"]["openai"] == 4
    assert s["batch_custom_ids_answered"] == n and s["batch_custom_ids_answered_more_than_once"] == 0
    e = cli("export", str(job), timeout=600)
    assert e.returncode == 0, e.stdout + e.stderr
    stats = json.loads((job.parent / "data" / "t" / "stats.json").read_text())
    assert stats["selected"] == n


def test_past_the_deadline_batches_are_cancelled_and_the_rest_answered_synchronously(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=60)                  # slower than the deadline: cancelled, 2 s in
    n = 40
    job = batch_job(make_job, sim, n, max_requests=20, deadline="2s")
    r = cli("run", str(job), timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "passed batch.deadline" in r.stdout
    s = sim.stats()
    assert s["batches_ended"].get("openai:cancelled", 0) == 2
    assert s["requests"] > 0                            # the rest went through the chat endpoint
    assert s["distinct_prompts_answered"] == n and s["prompts_answered_more_than_once"] == 0
    assert answers(job) == n


def test_the_dry_run_prices_both_modes_and_checks_budgets_at_the_mode_s_price(sim_factory, make_job) -> None:
    sim = sim_factory()
    job = batch_job(make_job, sim, 100)
    # worst case ~ 100 x ~480 tokens at $1/Mtok: ~$0.048 synchronously, ~$0.024 in batches
    job.write_text(job.read_text() + "quota:\n  usd_total: 0.035\n  prices: {input_per_mtok: 1.0, "
                   "output_per_mtok: 1.0, batch_factor: 0.5}\n")
    r = cli("run", str(job), "--dry-run")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "batch mode" in r.stdout and "worst case $0.0231, left $0.0350: fits" in r.stdout
    r = cli("run", str(job), "--dry-run", "--mode", "sync")
    assert r.returncode == 3, r.stdout + r.stderr
    assert "does not fit" in r.stdout
    assert sim.stats()["batches_created"] == {} and store_count(job, "select count(*) from batch") == 0


def test_a_batch_cancelled_at_the_provider_is_reported_and_its_answers_kept(sim_factory, make_job) -> None:
    import openai
    sim = sim_factory(batch_delay=8.0)
    job = batch_job(make_job, sim, 20, max_requests=20)
    assert cli("run", str(job), "--detach").returncode == 5
    time.sleep(1.0)                                    # some of its lines are done, not all
    client = openai.OpenAI(base_url=sim.url, api_key="unused")
    (batch,) = client.batches.list().data
    client.batches.cancel(batch.id)                    # the user, at the provider's console
    r = cli("run", str(job))
    assert r.returncode == 130, r.stdout + r.stderr
    assert f"batch {batch.id} was cancelled at the provider" in r.stderr
    kept = answers(job)
    assert 0 < kept < 20 and store_count(job, "select count(*) from job where status = 'pending'") == 20 - kept
    r = cli("run", str(job))                           # rerun: the rest in a new batch
    assert r.returncode == 0, r.stdout + r.stderr
    assert answers(job) == 20 and sim.stats()["batch_custom_ids_answered_more_than_once"] == 0


def test_a_batch_the_provider_refuses_stops_the_run_with_its_words(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.1, batch_max_lines=5)
    job = batch_job(make_job, sim, 12, max_requests=10, max_open=1)
    r = cli("run", str(job))
    assert r.returncode == 1, r.stdout + r.stderr
    assert "failed at the provider" in r.stderr and "too_many_tasks" in r.stderr
    assert store_count(job, "select count(*) from job where status = 'pending'") == 12   # nothing lost


def test_a_batch_run_waiting_longer_than_dead_after_stays_live_for_the_others(sim_factory, make_job) -> None:
    """A run that polls every few seconds heartbeats meanwhile: a second run started later sees it live
    (not crashed), creates nothing of its own, and both end done."""
    sim = sim_factory(batch_delay=20.0)                # a still waits when b looks (even on a loaded machine)
    job = batch_job(make_job, sim, 20, max_requests=20, poll_seconds=3.0)
    a = popen_cli("run", str(job), "--quiet")
    time.sleep(9.0)                                    # past dead_after (7 s with the default lease)
    b = popen_cli("run", str(job), "--quiet")
    deadline = time.monotonic() + 60
    while store_count(job, "select count(*) from run") < 2:     # b has started its run ...
        assert time.monotonic() < deadline and b.poll() is None
        time.sleep(0.1)
    time.sleep(1.5)                                              # ... and looked at the workers and batches
    assert store_count(job, "select count(*) from run where id = 1 and ended_at is null") == 1   # a: live
    assert b.wait(120) == 0, b.communicate()
    assert a.wait(60) == 0, a.communicate()
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        reasons = [r for (r,) in c.execute("select exit_reason from run order by id")]
    assert reasons == ["done", "done"]
    s = sim.stats()
    assert s["batches_created"]["openai"] == 1 and s["batch_custom_ids_answered_more_than_once"] == 0


def test_params_anthropic_batches_cannot_take_are_refused_before_anything_is_sent(sim_factory, make_job) -> None:
    sim = sim_factory()
    job = make_job(sim, n=5, teacher={"mode": "batch", "params": {"max_tokens": 100, "seed": 7}},
                   batch={"protocol": "anthropic"})
    r = cli("run", str(job))
    assert r.returncode == 2, r.stdout + r.stderr
    assert "teacher.params" in r.stderr and "seed" in r.stderr and "Traceback" not in r.stderr
    assert sim.stats()["batches_created"] == {} and not (job.parent / "data" / "t.db").exists()


def test_a_batch_api_never_reached_stops_at_once_with_exit_4(make_job, sim_factory) -> None:
    import socket
    sim = sim_factory()
    with socket.socket() as s:                         # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    job = make_job(sim, n=5, teacher={"mode": "batch", "base_url": f"http://127.0.0.1:{port}/v1"}, batch=FAST)
    t0 = time.monotonic()
    r = cli("run", str(job), timeout=60)
    assert r.returncode == 4, r.stdout + r.stderr
    assert "never reached" in r.stderr and "connection refused" in r.stderr and time.monotonic() - t0 < 30
    assert store_count(job, "select count(*) from job where status = 'pending'") == 5


def test_a_teacher_that_goes_down_mid_batch_stops_the_run_after_outage_after(sim_process, make_job) -> None:
    sim = sim_process(batch_delay=30.0)
    job = make_job(sim, n=10, teacher={"mode": "batch"}, batch=FAST, retry={"outage_after": 2.0})
    p = popen_cli("run", str(job), "--quiet")
    deadline = time.monotonic() + 60
    while store_count(job, "select count(*) from batch where provider_id is not null") == 0:
        assert time.monotonic() < deadline and p.poll() is None
        time.sleep(0.1)
    sim.close()                                        # the provider goes away with the batch open
    out, err = p.communicate(timeout=60)
    assert p.returncode == 4, out + err
    assert "has failed for" in err and "open batches stay open" in err
    assert store_count(job, "select count(*) from job where status = 'leased'") == 10   # still the batch's
