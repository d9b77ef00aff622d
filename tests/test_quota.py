"""The quota guard and the terms check, with a real store and the simulator over loopback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest
from conftest import cli, popen_cli

from harvester import Harvester, load_job
from harvester.quota import parse_budgets, resets_at


def test_budget_names_parse() -> None:
    from harvester.config import job_from_dict
    job = job_from_dict({"name": "q", "teacher": {"model": "m"}, "prompts": [{"path": "p"}],
                         "quota": {"requests_per_day": 5, "tokens_total": 9, "usd_per_run": 1.5,
                                   "output_tokens_per_month": 7}})
    got = {(b.name, b.metric, b.window, b.limit) for b in parse_budgets(job)}
    assert got == {("requests_per_day", "requests", "day", 5), ("tokens_total", "tokens", "total", 9),
                   ("usd_per_run", "usd", "run", 1.5), ("output_tokens_per_month", "output_tokens", "month", 7)}
    now = datetime(2026, 12, 31, 15, 0, tzinfo=UTC)
    assert resets_at("day", now) == "2027-01-01T00:00:00+00:00"
    assert resets_at("month", now) == "2027-01-01T00:00:00+00:00"


def test_requests_per_day_stops_with_exit_3_and_resumes_next_day(sim, make_job) -> None:
    job = make_job(sim, n=500, quota={"requests_per_day": 100}, teacher={"provider": "simulator"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 3, r.stderr
    assert "requests_per_day reached" in r.stderr and "Resets: " in r.stderr
    assert sim.stats()["requests"] <= 100
    first = sim.stats()["requests"]
    assert first >= 90  # it used the budget, not a sliver of it

    today = datetime.now(UTC)
    again = Harvester(load_job(job), clock=lambda: today).run_sync(handle_signals=False)
    assert again.reason == "quota" and again.exit_code == 3 and again.sent == 0
    assert sim.stats()["requests"] == first

    tomorrow = today + timedelta(days=1)
    h = Harvester(load_job(job), clock=lambda: tomorrow)
    nxt = h.run_sync(handle_signals=False)
    assert nxt.reason == "quota" and 90 <= nxt.sent <= 100
    assert sim.stats()["requests"] == first + nxt.sent
    budgets = {b["name"]: b for b in h.quota()["budgets"]}
    assert budgets["requests_per_day"]["used"] == nxt.sent and budgets["requests_per_day"]["reserved"] == 0
    h.close()


def test_four_processes_never_exceed_a_shared_token_budget(sim_factory, make_job) -> None:
    sim = sim_factory(latency=0.01)
    budget = 6000
    job = make_job(sim, n=400, quota={"tokens_total": budget}, teacher={"provider": "simulator"})
    dry = cli("run", str(job), "--dry-run")  # the worst case of 400 requests cannot fit: a run stops there
    assert dry.returncode == 3 and "exceeds quota.tokens_total" in dry.stderr, dry.stderr
    procs = [popen_cli("run", str(job), "--quiet") for _ in range(4)]
    codes = [p.wait(timeout=120) for p in procs]
    assert set(codes) <= {0, 3} and 3 in codes
    stats = sim.stats()
    spent = stats["prompt_tokens"] + stats["completion_tokens"]
    assert 0 < spent <= budget
    report = json.loads(cli("quota", str(job), "--json").stdout)
    assert report["total"]["requests"] == stats["requests"]
    assert report["total"]["input_tokens"] + report["total"]["output_tokens"] == spent
    assert report["total"]["requests_reserved"] == 0


def test_forbidden_teacher_without_acknowledgement_sends_nothing(sim, make_job) -> None:
    job = make_job(sim, n=10, teacher={"provider": "openai"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 2
    assert "'forbidden'" in r.stderr and "openai.com/policies" in r.stderr and "acknowledgement" in r.stderr
    assert sim.stats()["requests"] == 0

    acked = make_job(sim, n=10, teacher={"provider": "openai",
                                         "terms": {"acknowledgement": "ACME Corp, enterprise agreement 2026-07"}})
    assert cli("run", str(acked), "--quiet").returncode == 0
    assert sim.stats()["requests"] == 10


def test_unknown_remote_teacher_is_refused(make_job, sim) -> None:
    job = make_job(sim, n=3, teacher={"base_url": "https://llm.example.invalid/v1"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 2 and "'unknown'" in r.stderr


def test_usd_budget_needs_prices(sim, make_job) -> None:
    job = make_job(sim, n=3, quota={"usd_total": 1.0}, teacher={"provider": "simulator"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 2 and "quota.prices" in r.stderr and sim.stats()["requests"] == 0


def test_quota_needs_max_tokens(sim, make_job) -> None:
    job = make_job(sim, n=3, quota={"requests_total": 10}, teacher={"params": {}})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 2 and "max_tokens" in r.stderr and sim.stats()["requests"] == 0


def test_dry_run_bounds_and_predicts_the_spend(sim, make_job) -> None:
    job = make_job(sim, n=300, quota={"prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0},
                                      "requests_per_run": 50},
                   teacher={"params": {"max_tokens": 200}})
    h = Harvester(load_job(job))
    worst = h.estimate()
    assert worst["pending_requests"] == 300 and worst["expected"] is None
    first = h.run_sync(handle_signals=False)  # 50 answers: the budget per run stops it
    assert first.reason == "quota" and first.sent == 50
    s1 = sim.stats()
    assert s1["prompt_tokens"] <= worst["worst"]["input_tokens"]
    assert s1["completion_tokens"] <= worst["worst"]["output_tokens"]

    est = h.estimate()
    assert est["pending_requests"] == 250 and est["expected"]["from_answers"] == 50
    h.job.quota.requests_per_run = None
    rest = h.run_sync(handle_signals=False)
    assert rest.reason == "done"
    s2 = sim.stats()
    spent_in = s2["prompt_tokens"] - s1["prompt_tokens"]
    spent_out = s2["completion_tokens"] - s1["completion_tokens"]
    assert spent_in <= est["worst"]["input_tokens"] and spent_out <= est["worst"]["output_tokens"]
    spent_usd = (spent_in * 1.0 + spent_out * 4.0) / 1e6
    assert est["expected"]["usd"] == pytest.approx(spent_usd, rel=0.10)
    assert est["expected"]["input_tokens"] == pytest.approx(spent_in, rel=0.10)
    assert est["expected"]["output_tokens"] == pytest.approx(spent_out, rel=0.10)
    h.close()
