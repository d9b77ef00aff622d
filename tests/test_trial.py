"""A trial on the first N prompts (`run --limit N`), duplicate rows counted, truncated answers counted
during the run: the real CLI against the simulator, a real SQLite file."""

from __future__ import annotations

import json
import re
import sqlite3

from conftest import cli

from harvester import Harvester, load_job


def answered_prompts(job) -> list[str]:
    with sqlite3.connect(job.parent / "data" / "t.db") as conn:
        rows = conn.execute("select request from job where status = 'done' order by seq").fetchall()
    return [json.loads(r[0])["messages"][-1]["content"] for r in rows]


def test_limit_sends_only_the_first_jobs_of_the_plan(sim, make_job) -> None:
    job = make_job(sim, n=20)
    r = cli("run", str(job), "--limit", "5")
    assert r.returncode == 0, r.stderr
    assert sim.stats()["requests"] == 5
    assert "trial: sending only the first 5 of the plan's 20 jobs (--limit)" in r.stdout
    assert "run done (trial --limit 5: the first 5 of 20 jobs): sent 5 requests, 5 answered" in r.stdout
    assert "job: 5/20 done, 0 failed, 15 pending" in r.stdout
    assert [p.split(":")[0] for p in answered_prompts(job)] == [f"Question number {i}" for i in range(5)]
    status = json.loads(cli("status", str(job), "--json").stdout)
    assert (status["jobs"], status["done"], status["pending"]) == (20, 5, 15)   # the plan stays whole

    assert cli("run", str(job), "--quiet", "--limit", "5").returncode == 0
    assert sim.stats()["requests"] == 5                                        # those are answered already
    assert cli("run", str(job), "--quiet", "--limit", "8").returncode == 0
    assert sim.stats()["requests"] == 8
    assert cli("run", str(job), "--quiet").returncode == 0
    assert sim.stats()["requests"] == 20 and len(answered_prompts(job)) == 20

    bad = cli("run", str(job), "--limit", "0")
    assert bad.returncode == 2 and "--limit" in bad.stderr


def test_limit_in_the_api(sim, make_job) -> None:
    h = Harvester(load_job(make_job(sim, n=10)))
    seen = []
    result = h.run_sync(handle_signals=False, limit=3, on_plan=seen.append)
    assert (result.sent, result.answered) == (3, 3) and result.status["pending"] == 7
    assert seen[0].limit == 3 and seen[0].jobs == 10
    h.close()


def test_duplicate_rows_are_counted_and_shown(sim, make_job) -> None:
    job = make_job(sim, n=4)
    with (job.parent / "prompts.jsonl").open("a") as f:
        f.write('{"prompt": "Question number 0: explain topic 0 briefly."}\n')   # line 1 again
        f.write('{"prompt": "Question number 2: explain topic 838 briefly."}\n')   # line 3 again
    shown = "plan: 4 jobs from 6 rows; 2 duplicate rows merged (the same request is one job)"
    dry = cli("run", str(job), "--dry-run")
    assert dry.returncode == 0 and shown in dry.stdout and "dry run: 4 of 4 jobs pending" in dry.stdout, dry.stdout
    run = cli("run", str(job), "--quiet")
    assert run.returncode == 0 and run.stdout.splitlines()[0] == shown, run.stdout
    assert sim.stats()["requests"] == 4
    assert json.loads(cli("status", str(job), "--json").stdout)["merged"] == 2
    assert re.search(r"duplicate prompt rows merged into one job\s*│ 2 ", cli("status", str(job)).stdout)


def test_truncated_answers_are_counted_during_the_run(sim, make_job) -> None:
    job = make_job(sim, n=12, teacher={"params": {"max_tokens": 5}})  # the simulator's answers are longer
    r = cli("run", str(job))                                           # plain progress on stderr
    assert r.returncode == 0, r.stderr
    assert "truncated 12" in r.stderr.strip().splitlines()[-1]
    assert "12 truncated (max_tokens)" in r.stdout
    status = json.loads(cli("status", str(job), "--json").stdout)
    assert status["truncated"] == 12
    assert re.search(r"truncated answers \(max_tokens ran out\)\s*│ 12 ", cli("status", str(job)).stdout)
