"""Every command acts on the plan of the job file it is given, never on whichever plan the store
saw last; a job never run is reported as such and nothing is created for it."""

from __future__ import annotations

import json
from pathlib import Path

import yaml
from conftest import cli

from harvester import Harvester


def _edited_copy(job: Path, **teacher: object) -> Path:
    """The same job (same name, same store) with other sampling parameters: another plan."""
    data = yaml.safe_load(job.read_text())
    data["teacher"]["params"] = {**data["teacher"]["params"], **teacher}
    copy = job.with_name("job-edited.yaml")
    copy.write_text(yaml.safe_dump(data))
    return copy


def test_status_and_export_read_the_plan_of_the_job_file_given(sim, make_job) -> None:
    job = make_job(sim, n=12)
    assert cli("run", str(job), "--quiet").returncode == 0
    copy = _edited_copy(job, max_tokens=300)
    with Harvester.from_file(copy) as h:
        h.plan()                                          # the store's last plan is now the copy's
        assert h.status()["done"] == 0 and h.status()["pending"] == 12
    status = json.loads(cli("status", str(job), "--json").stdout)
    assert (status["jobs"], status["done"], status["pending"]) == (12, 12, 0)
    assert status["other_plans"] == 12                    # the copy's jobs
    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    rows = (job.parent / "data" / "t" / "train.jsonl").read_text().splitlines()
    assert len(rows) == 12
    assert sim.stats()["requests"] == 12                  # nothing was sent for the copy


def test_status_of_a_job_never_run_says_so_and_creates_no_store(sim, make_job) -> None:
    job = make_job(sim, n=3)
    r = cli("status", str(job))
    assert r.returncode == 0, r.stderr
    assert "not planned yet" in r.stdout
    as_json = json.loads(cli("status", str(job), "--json").stdout)
    assert as_json["planned"] is False
    assert not (job.parent / "data").exists()             # no store file, no folder
    assert sim.stats()["requests"] == 0


def test_the_plan_key_of_an_unchanged_job_file_is_remembered_and_an_edit_is_seen(sim, make_job) -> None:
    job = make_job(sim, n=5)
    assert cli("run", str(job), "--quiet").returncode == 0
    with Harvester.from_file(job) as h:
        key = h.plan_key()
    prompts = job.parent / "prompts.jsonl"
    prompts.write_text(prompts.read_text() + '{"prompt": "One more question."}\n')
    with Harvester.from_file(job) as h:
        assert h.plan_key() != key                        # the file changed: its plan is read again
        assert h.status()["planned"] is False and h.status()["jobs"] == 0
