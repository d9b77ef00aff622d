"""A changed parameter or prompt is a new plan, never a surprise: `run` and `--dry-run` say how many
answers earlier versions of the job hold and what changed. The real CLI against the simulator."""

from __future__ import annotations

import yaml
from conftest import cli


def set_param(job, **params) -> None:
    spec = yaml.safe_load(job.read_text())
    spec["teacher"]["params"].update(params)
    job.write_text(yaml.safe_dump(spec))


def test_a_changed_max_tokens_is_announced_before_anything_is_paid(sim, make_job) -> None:
    job = make_job(sim, n=10, teacher={"params": {"max_tokens": 256}})
    first = cli("run", str(job), "--quiet")
    assert first.returncode == 0 and "earlier plan" not in first.stdout

    set_param(job, max_tokens=300)
    notice = ("1 earlier plan of this job holds 10 answers; the last one differs: max_tokens 256 → 300; "
              "these answers are not reused (a changed request is a new job)")
    dry = cli("run", str(job), "--dry-run")
    assert dry.returncode == 0 and notice in dry.stdout, dry.stdout
    assert "dry run: 10 of 10 jobs pending" in dry.stdout
    assert sim.stats()["requests"] == 10

    run = cli("run", str(job), "--quiet")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert notice in lines and lines.index(notice) < next(
        i for i, line in enumerate(lines) if line.startswith("run done"))
    assert sim.stats()["requests"] == 20

    # two earlier versions now; the last one is the most recently run
    set_param(job, max_tokens=350, temperature=0.5)
    dry = cli("run", str(job), "--dry-run")
    assert ("2 earlier plans of this job hold 20 answers; the last one differs: max_tokens 300 → 350; "
            "temperature unset → 0.5;") in dry.stdout, dry.stdout

    # back to the second version: its answers are its own, nothing to announce of them
    set_param(job, max_tokens=300)
    spec = yaml.safe_load(job.read_text())
    del spec["teacher"]["params"]["temperature"]
    job.write_text(yaml.safe_dump(spec))
    again = cli("run", str(job), "--quiet")
    assert again.returncode == 0 and sim.stats()["requests"] == 20
    assert "1 earlier plan of this job holds 10 answers; the last one differs: max_tokens 256 → 300" in again.stdout


def test_an_edited_prompt_file_is_named(sim, make_job) -> None:
    job = make_job(sim, n=6)
    assert cli("run", str(job), "--quiet").returncode == 0
    prompts = job.parent / "prompts.jsonl"
    lines = prompts.read_text().splitlines()
    prompts.write_text("\n".join([lines[0].replace("briefly", "in detail")] + lines[1:]) + "\n")
    dry = cli("run", str(job), "--dry-run")
    assert ("1 earlier plan of this job holds 6 answers; the last one differs: prompts.jsonl edited (6 prompts); "
            "5 of them are requests of this plan too and reused; the other 1 is not") in dry.stdout, dry.stdout
    assert "dry run: 1 of 6 jobs pending" in dry.stdout

    with prompts.open("a") as f:
        f.write('{"prompt": "One more question."}\n')
    dry = cli("run", str(job), "--dry-run")
    assert "prompts.jsonl 6 → 7 prompts" in dry.stdout, dry.stdout
    run = cli("run", str(job), "--quiet")
    assert run.returncode == 0 and sim.stats()["requests"] == 8   # 2 new: the edited row and the added one
    assert "1 earlier plan of this job holds 1 answer; the last one differs: prompts.jsonl 6 → 7 prompts; " \
           "these answers are not reused" in run.stdout, run.stdout
