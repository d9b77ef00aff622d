"""A wrong job file (base_url without /v1, an unknown model) is not a plan of bad prompts: a run whose
first answers are all one 4xx on many different prompts stops as misconfigured (exit 1, naming the
base_url, the status and the server's words) with every job still pending, and a fixed job file
then harvests them all. After a first answer, a 4xx is that prompt's: recorded as failed, and sent
again only on purpose (`run --retry-failed`).

The pure watch (harvester.outage.RejectionWatch); then the real CLI against the real simulator.
"""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import cli

from harvester.outage import RejectionWatch


# --- the watch --------------------------------------------------------------------------------
def test_the_same_4xx_on_several_prompts_before_any_answer_trips() -> None:
    w = RejectionWatch(100, 100)
    for i in range(4):
        assert w.rejected(f"j{i}", f"p{i}", 404, "HTTP 404: Not Found")    # held back, not failed
        assert not w.tripped
    assert w.rejected("j4", "p4", 404, "HTTP 404: Not Found") and w.tripped
    assert w.answered() == []                                            # the verdict stands


def test_an_answer_releases_the_held_errors_as_the_prompts_and_disarms() -> None:
    w = RejectionWatch(100, 100)
    w.rejected("a", "pa", 400, "e1")
    w.rejected("b", "pb", 400, "e2")
    assert w.answered() == [("a", "e1"), ("b", "e2")]
    assert not w.rejected("c", "pc", 400, "e3")                          # from now on: failed at once
    assert not w.tripped


def test_one_prompt_mixed_statuses_and_tiny_plans() -> None:
    w = RejectionWatch(100, 100)
    for i in range(6):                                                   # samples of one prompt
        w.rejected(f"s{i}", "same", 400, "e")
    assert not w.tripped
    w2 = RejectionWatch(100, 100)
    for i, status in enumerate([404, 404, 404, 400, 404, 404, 404, 404]):
        w2.rejected(f"j{i}", f"p{i}", status, "e")
    assert not w2.tripped                                                # the 400 broke the streak
    w2.rejected("j9", "p9", 404, "e")
    assert w2.tripped
    tiny = RejectionWatch(2, 2)                                          # fewer jobs than the streak: all
    tiny.rejected("a", "pa", 422, "e")
    assert not tiny.tripped
    tiny.rejected("b", "pb", 422, "e")
    assert tiny.tripped
    assert not RejectionWatch(0, 0).rejected("a", "pa", 404, "e")


# --- end to end -------------------------------------------------------------------------------
def _status(job: Path) -> dict:
    r = cli("status", str(job), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def _set_teacher(job: Path, **fields) -> None:
    data = yaml.safe_load(job.read_text())
    data["teacher"].update(fields)
    job.write_text(yaml.safe_dump(data))


def test_a_base_url_without_v1_stops_the_run_with_its_jobs_pending(sim, make_job) -> None:
    n = 30
    wrong = sim.url.removesuffix("/v1")                  # vLLM's classic: every request is a 404
    job = make_job(sim, n=n, teacher={"base_url": wrong})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "run misconfigured" in r.stdout
    assert wrong in r.stderr and "HTTP 404" in r.stderr and "Not Found" in r.stderr   # the server's words
    assert "/v1" in r.stderr and "teacher.base_url" in r.stderr and "Traceback" not in r.stderr
    s = _status(job)
    assert (s["pending"], s["failed"], s["done"], s["leased"]) == (n, 0, 0, 0), s
    assert s["last_run"]["exit_reason"] == "misconfigured"

    _set_teacher(job, base_url=sim.url)                  # fixed: everything is harvested
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"job: {n}/{n} done, 0 failed, 0 pending" in r.stdout
    assert sim.stats()["distinct_prompts_answered"] == n


def test_an_unknown_model_stops_the_run_naming_the_model(sim_factory, make_job) -> None:
    sim = sim_factory(check_model=True)
    job = make_job(sim, n=12, teacher={"model": "gpt-4o-mini"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 1, r.stdout + r.stderr
    assert "gpt-4o-mini` does not exist" in r.stderr and "teacher.model" in r.stderr and sim.url in r.stderr
    assert sim.stats()["requests"] <= 8                  # what was in flight (max_concurrency), no more
    s = _status(job)
    assert (s["pending"], s["failed"]) == (12, 0), s
    _set_teacher(job, model="sim-teacher")
    assert cli("run", str(job), "--quiet").returncode == 0
    assert _status(job)["done"] == 12


def test_one_oversized_prompt_among_good_ones_fails_alone_and_retry_failed_resends_it(sim_factory, make_job) -> None:
    sim = sim_factory(max_context=1000)
    job = make_job(sim, n=20, teacher={"limits": {"max_concurrency": 2}})
    prompts = job.parent / "prompts.jsonl"
    good = prompts.read_text()
    prompts.write_text(json.dumps({"prompt": "long " * 1000}) + "\n" + good)   # first in the plan
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    s = _status(job)
    assert (s["done"], s["failed"], s["pending"]) == (20, 1, 0) and s["failed_by_kind"] == {"http_400": 1}, s
    assert cli("run", str(job), "--quiet").returncode == 0
    assert sim.stats()["by_status"] == {"200": 20, "400": 1}             # a plain rerun does not resend it

    r = cli("run", str(job), "--quiet", "--retry-failed")                # on purpose: sent again
    assert r.returncode == 0, r.stdout + r.stderr
    assert sim.stats()["by_status"] == {"200": 20, "400": 2}
    assert _status(job)["failed"] == 1                                   # still too long: failed again


def test_retry_failed_resends_a_permanent_failure_once_its_cause_is_fixed(sim_factory, make_job) -> None:
    sim = sim_factory(max_context=1000)
    job = make_job(sim, n=5)
    with (job.parent / "prompts.jsonl").open("a") as f:
        f.write(json.dumps({"prompt": "long " * 700}) + "\n")            # 700 + max_tokens 400 > 1000
    assert cli("run", str(job), "--quiet").returncode == 0
    assert _status(job)["failed"] == 1
    sim.config.max_context = 5000                                        # the server's limit raised
    r = cli("run", str(job), "--quiet", "--retry-failed")
    assert r.returncode == 0, r.stdout + r.stderr
    s = _status(job)
    assert (s["done"], s["failed"]) == (6, 0), s


def test_a_plan_that_starts_with_many_oversized_prompts_is_not_misconfigured(sim_factory, make_job) -> None:
    """'maximum context length' names the prompt: never taken for a wrong job file, however many come first."""
    sim = sim_factory(max_context=1000)
    job = make_job(sim, n=10)
    prompts = job.parent / "prompts.jsonl"
    good = prompts.read_text()
    prompts.write_text("".join(json.dumps({"prompt": f"long {i} " + "word " * 1000}) + "\n" for i in range(8)) + good)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    s = _status(job)
    assert (s["done"], s["failed"], s["pending"]) == (10, 8, 0), s
