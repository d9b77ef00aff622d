"""Budgets that can never admit a request, and `quota` with none set: the real CLI, the simulator."""

from __future__ import annotations

import json

from conftest import cli


def test_a_budget_smaller_than_any_request_is_a_config_error(sim, make_job) -> None:
    job = make_job(sim, n=10, teacher={"provider": "simulator", "params": {"max_tokens": 400}},
                   quota={"tokens_per_run": 300})
    for args in (("run", str(job), "--quiet"), ("run", str(job), "--dry-run")):
        r = cli(*args)
        assert r.returncode == 2, r.stderr
        assert ("quota.tokens_per_run is 300, smaller than the shortest request's worst case (416 tokens: an "
                "input bound of 16 + max_tokens 400)") in r.stderr, r.stderr
        assert "raise it or lower teacher.params.max_tokens" in r.stderr
        assert "Rerun" not in r.stderr and "Traceback" not in r.stderr
    assert sim.stats()["requests"] == 0
    assert not (job.parent / "data" / "t.db").exists()  # refused before anything was written


def test_a_request_too_big_for_its_budget_stops_the_run_saying_so(sim, make_job) -> None:
    job = make_job(sim, n=5, teacher={"provider": "simulator", "params": {"max_tokens": 400},
                                      "limits": {"max_concurrency": 1}},
                   quota={"tokens_per_day": 700})
    # 480 bytes each: a bound of 496 + 400 > 700, though the shortest possible request (416) would fit
    (job.parent / "prompts.jsonl").write_text("".join(json.dumps({"prompt": f"long question {i} " * 30}) + "\n"
                                                      for i in range(5)))
    dry = cli("run", str(job), "--dry-run")
    assert dry.returncode == 2, dry.stderr
    assert "5 pending requests" in dry.stderr  # and the budget's room, as ever
    assert "quota.tokens_per_day is 700, smaller than one request's worst case (896 tokens: an input bound of " \
           "496 + max_tokens 400)" in dry.stderr, dry.stderr
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 2, r.stderr
    assert "quota.tokens_per_day is 700, smaller than one request's worst case (896 tokens" in r.stderr
    assert "no request can ever fit in it; raise it or lower teacher.params.max_tokens" in r.stderr
    assert "Rerun then" not in r.stderr
    assert sim.stats()["requests"] == 0


def test_quota_without_budgets_says_so(sim, make_job) -> None:
    job = make_job(sim, n=3)
    r = cli("quota", str(job))
    assert r.returncode == 0, r.stderr
    assert "no budgets set (quota.* in the job file)" in r.stdout
    assert "0 requests" not in r.stdout and "$0" not in r.stdout
    data = json.loads(cli("quota", str(job), "--json").stdout)
    assert data["budgets"] == []
    assert not (job.parent / "data" / "t.db").exists()  # a look at the budgets creates no store

    assert cli("run", str(job), "--quiet").returncode == 0
    after = cli("quota", str(job))
    assert "no budgets set (quota.* in the job file)" in after.stdout
    assert "0 requests" not in after.stdout  # without budgets the ledger counts nothing: no totals of 0
