"""`run --dry-run` checks what `run` would refuse, estimates, and writes nothing: the real CLI, the simulator."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3

import yaml
from conftest import cli


def db(job):
    return job.parent / "data" / "t.db"


def dump(path):
    """The store's meta and jobs, as another command would read them."""
    with sqlite3.connect(path) as conn:
        return (conn.execute("select key, value from meta order by key").fetchall(),
                conn.execute("select id, plan_key, seq, status from job order by id").fetchall())


def test_dry_run_of_a_job_never_run_creates_no_store(sim, make_job) -> None:
    job = make_job(sim, n=12)
    r = cli("run", str(job), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: 12 of 12 jobs pending" in r.stdout
    assert not db(job).exists() and not db(job).parent.exists()
    assert sim.stats()["requests"] == 0
    # and the estimate is the one a store would give: run, then a dry run has nothing left
    assert cli("run", str(job), "--quiet").returncode == 0
    again = cli("run", str(job), "--dry-run")
    assert again.returncode == 0 and "dry run: 0 of 12 jobs pending" in again.stdout, again.stdout


def test_dry_run_of_an_edited_copy_changes_nothing_the_original_sees(sim, make_job) -> None:
    job = make_job(sim, n=10)
    assert cli("run", str(job), "--quiet").returncode == 0
    before = cli("status", str(job), "--json").stdout
    export_before = cli("export", str(job))
    assert export_before.returncode == 0
    rows_before = (job.parent / "data" / "t" / "train.jsonl").read_text()
    tables_before = dump(db(job))

    copy = job.parent / "copy.yaml"                 # the same job and store, another max_tokens
    spec = yaml.safe_load(job.read_text())
    spec["teacher"]["params"]["max_tokens"] = 300
    copy.write_text(yaml.safe_dump(spec))
    dry = cli("run", str(copy), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: 10 of 10 jobs pending" in dry.stdout

    assert json.loads(cli("status", str(job), "--json").stdout) == json.loads(before)
    assert dump(db(job)) == tables_before
    assert cli("export", str(job)).returncode == 0
    assert (job.parent / "data" / "t" / "train.jsonl").read_text() == rows_before
    # the copy was never planned either
    assert json.loads(cli("status", str(copy), "--json").stdout)["planned"] is False
    assert sim.stats()["requests"] == 10


def test_dry_run_refuses_a_forbidden_teacher_as_run_does(sim, make_job) -> None:
    job = make_job(sim, n=5, teacher={"provider": "openai"})
    dry = cli("run", str(job), "--dry-run")
    run = cli("run", str(job), "--quiet")
    assert dry.returncode == run.returncode == 2
    assert "'forbidden'" in dry.stderr and "acknowledgement" in dry.stderr
    assert "Traceback" not in dry.stderr
    assert sim.stats()["requests"] == 0


def test_dry_run_with_a_too_small_usd_budget_exits_3_as_the_run_would(sim, make_job) -> None:
    job = make_job(sim, n=50, teacher={"provider": "simulator", "params": {"max_tokens": 400}},
                   quota={"usd_per_run": 0.01, "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}})
    dry = cli("run", str(job), "--dry-run")
    assert dry.returncode == 3, dry.stderr
    # 50 × (bound + 400 × $4/M) ≈ $0.083 worst case, $0.01 left
    m = re.search(r"worst case of the 50 pending requests \(\$(0\.0\d+)\) exceeds quota\.usd_per_run by "
                  r"\$(0\.0\d+) \(\$0\.0100 left", dry.stderr)
    assert m, dry.stderr
    assert abs(float(m.group(1)) - float(m.group(2)) - 0.01) < 0.0002
    assert "a run would stop there" in dry.stderr and "budget usd_per_run: worst case" in dry.stdout
    assert not db(job).exists() and sim.stats()["requests"] == 0
    run = cli("run", str(job), "--quiet")
    assert run.returncode == 3 and "usd_per_run reached" in run.stderr


def test_a_budget_that_fits_passes(sim, make_job) -> None:
    job = make_job(sim, n=5, teacher={"provider": "simulator"}, quota={"requests_per_day": 5})
    dry = cli("run", str(job), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "budget requests_per_day: worst case 5, left 5: fits" in dry.stdout


def test_dry_run_estimates_the_duration_from_the_limits(sim, make_job) -> None:
    paced = make_job(sim, n=100, teacher={"limits": {"rpm": 600}})
    r = cli("run", str(paced), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "duration: at least 10s (paced by rpm 600, configured)" in r.stdout, r.stdout

    unpaced = make_job(sim, n=100)
    r = cli("run", str(unpaced), "--dry-run")
    assert "duration: unknown" in r.stdout, r.stdout


def test_dry_run_uses_the_limits_the_last_run_learned(sim_factory, make_job) -> None:
    sim = sim_factory(rpm=6000)   # sends x-ratelimit-* headers: the limiter learns rpm 6,000
    job = make_job(sim, n=300)
    assert cli("run", str(job), "--quiet").returncode == 0
    shutil.copy(job.parent / "prompts.jsonl", job.parent / "more.jsonl")
    more = job.parent / "more.jsonl"
    more.write_text(more.read_text().replace("Question number", "Another question"))
    spec = yaml.safe_load(job.read_text())
    spec["prompts"].append({"path": "more.jsonl"})
    job.write_text(yaml.safe_dump(spec))
    r = cli("run", str(job), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "dry run: 300 of 600 jobs pending" in r.stdout
    assert re.search(r"duration: at least \d+s \(paced by rpm 6,000, last run \(headers?\)\)", r.stdout), r.stdout
