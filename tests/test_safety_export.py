"""An export in careless hands: what `--out` may replace, empty plans, join columns, permissions, splits,
what the card says. The real CLI against the real simulator, with a real SQLite store."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import datasets
import pyarrow.parquet as pq
import yaml
from conftest import REPO, cli
from openai_rows import validate_openai_row

from harvester.config import load_job
from harvester.export.pipeline import split_of
from harvester.prompts import plan


def cli_in(cwd: Path, *args: str, umask: int | None = None) -> subprocess.CompletedProcess[str]:
    """The real `harvester` command, run from `cwd` (and with `umask`, if given)."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "harvester.cli", *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, preexec_fn=(lambda: os.umask(umask)) if umask is not None else None)


def answers_in(db: Path) -> int:
    with sqlite3.connect(db) as conn:
        return conn.execute("select count(*) from response").fetchone()[0]


def harvested(sim, make_job, n: int = 6, **overrides) -> Path:
    job = make_job(sim, n=n, **overrides)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    return job


def refused(r: subprocess.CompletedProcess[str], *words: str) -> None:
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    for w in words:
        assert w in r.stderr, (w, r.stderr)


# ----------------------------------------------------------------------- 1. what --out may replace
def test_out_holding_the_store_is_refused_and_every_answer_kept(sim, make_job) -> None:
    job = harvested(sim, make_job)
    data = job.parent / "data"
    r = cli("export", str(job), "--out", str(data))
    refused(r, "the store", str(data / "t.db"))
    assert answers_in(data / "t.db") == 6
    assert sorted(p.name for p in data.iterdir() if not p.name.startswith("t.db")) == []   # nothing written


def test_out_holding_the_job_file_is_refused(sim, make_job) -> None:
    job = harvested(sim, make_job)
    jobs = job.parent / "jobs"
    jobs.mkdir()
    spec = yaml.safe_load(job.read_text())
    spec["prompts"] = [{"path": "../prompts.jsonl"}]
    spec["store"] = "sqlite:///../data/t.db"
    moved = jobs / "t.yaml"
    moved.write_text(yaml.safe_dump(spec))
    refused(cli("export", str(moved), "--out", str(jobs)), "the job file", str(moved))
    assert yaml.safe_load(moved.read_text()) == spec


def test_out_holding_a_users_files_is_refused(sim, make_job) -> None:
    job = harvested(sim, make_job)
    mine = job.parent / "mystuff"
    mine.mkdir()
    (mine / "notes.txt").write_text("my notes")
    refused(cli("export", str(job), "--out", str(mine)), "notes.txt", "not an export")
    assert (mine / "notes.txt").read_text() == "my notes" and len(list(mine.iterdir())) == 1


def test_out_dot_is_refused_with_a_message_not_a_traceback(sim, make_job) -> None:
    job = harvested(sim, make_job)
    here = job.parent / "work"
    here.mkdir()
    (here / "keep.txt").write_text("x")
    refused(cli_in(here, "export", str(job), "--out", "."), "current folder")
    assert (here / "keep.txt").read_text() == "x"
    empty = job.parent / "empty"          # even an empty current folder: the shell would sit in a removed one
    empty.mkdir()
    refused(cli_in(empty, "export", str(job), "--out", "."), "current folder")


def test_out_naming_a_file_is_refused(sim, make_job) -> None:
    job = harvested(sim, make_job)
    target = job.parent / "dataset.jsonl"
    target.write_text("mine\n")
    refused(cli("export", str(job), "--out", str(target)), "is a file")
    assert target.read_text() == "mine\n"


def test_a_previous_export_is_replaced_but_not_a_file_added_to_it(sim, make_job) -> None:
    job = harvested(sim, make_job)
    out = job.parent / "data" / "t"
    assert cli("export", str(job)).returncode == 0
    marker = json.loads((out / ".harvester-export.json").read_text())
    assert marker["job"] == "t" and marker["format"] == "openai"
    assert {"train.jsonl", "stats.json", "README.md", "rejected.jsonl", "dataset_info.json"} <= set(marker["files"])
    assert any(f.startswith("hf/") for f in marker["files"])
    again = cli("export", str(job), "--format", "alpaca")        # over the previous export: fine
    assert again.returncode == 0, again.stderr
    assert "instruction" in json.loads((out / "train.jsonl").read_text().splitlines()[0])
    (out / "my-eval-results.txt").write_text("precious")
    refused(cli("export", str(job)), "my-eval-results.txt")
    assert (out / "my-eval-results.txt").read_text() == "precious"


def test_an_export_from_before_the_marker_is_replaced_but_not_another_jobs(sim, make_job) -> None:
    job = harvested(sim, make_job)
    out = job.parent / "data" / "t"
    assert cli("export", str(job)).returncode == 0
    (out / ".harvester-export.json").unlink()                    # as an older harvester left it
    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    assert json.loads((out / ".harvester-export.json").read_text())["job"] == "t"
    spec = yaml.safe_load(job.read_text())
    other = job.parent / "other.yaml"
    other.write_text(yaml.safe_dump({**spec, "name": "other"}))
    refused(cli("export", str(other), "--out", str(out)), "another job ('t')")


# ----------------------------------------------------------------------- 3. nothing to export
def test_an_export_of_no_answers_leaves_the_previous_export_alone(sim, make_job) -> None:
    job = harvested(sim, make_job)
    out = job.parent / "data" / "t"
    assert cli("export", str(job)).returncode == 0
    before = (out / "train.jsonl").read_text()
    edited = job.parent / "edited.yaml"                    # a copy of the job file: same name, other params
    spec = yaml.safe_load(job.read_text())
    spec["teacher"]["params"] = {"max_tokens": 300, "temperature": 0.3}
    edited.write_text(yaml.safe_dump(spec))
    assert cli("run", "--dry-run", str(edited)).returncode == 0      # plans it: no answers yet
    refused(cli("export", str(edited)), "0 selected", "previous export", "harvester run")
    assert (out / "train.jsonl").read_text() == before and len(before.splitlines()) == 6
    again = cli("export", str(job))
    assert again.returncode == 0, again.stderr
    assert (out / "train.jsonl").read_text() == before


# ----------------------------------------------------------------------- 8. joining rows back to prompts
def test_prompt_ids_and_metadata_reach_parquet_and_hf(sim, make_job) -> None:
    folder = make_job(sim).parent
    with (folder / "set.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "prompt", "topic", "level"])
        for i in range(4):
            w.writerow([f"csv-{i}", f"Describe the {i}th planet of the solar system in detail.", f"planet{i}", i])
    with (folder / "set.jsonl").open("w") as f:
        f.write(json.dumps({"id": 17, "instruction": "Name three prime numbers above fifty.",
                            "output": "53, 59, 61", "metadata": {"origin": "alpaca", "tags": ["math"]}}) + "\n")
        f.write(json.dumps({"prompt": "Write a haiku about autumn rain on a tin roof."}) + "\n")
    job = make_job(sim, prompts=[{"path": "set.csv"}, {"path": "set.jsonl"}])
    assert cli("run", str(job), "--quiet").returncode == 0
    out = folder / "data" / "t"
    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    table = pq.read_table(sorted((out / "parquet").glob("train-*.parquet"))).to_pylist()
    got = {row["id"]: json.loads(row["metadata"]) for row in table}
    assert got == {**{f"csv-{i}": {"topic": f"planet{i}", "level": str(i)} for i in range(4)},
                   "17": {"origin": "alpaca", "tags": ["math"], "reference": "53, 59, 61"}, None: {}}
    hf = datasets.load_from_disk(str(out / "hf"))["train"]
    assert {row["id"]: json.loads(row["metadata"]) for row in hf} == got
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert all(set(row) == {"messages"} and validate_openai_row(row) == [] for row in rows)   # OpenAI's keys only

    assert cli("export", str(job), "--format", "sharegpt").returncode == 0      # JSONL takes them there
    rows = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert {row["id"] for row in rows} == set(got) and all("conversations" in row for row in rows)

    job = make_job(sim, prompts=[{"path": "set.csv"}, {"path": "set.jsonl"}], export={"keep": False})
    assert cli("export", str(job)).returncode == 0
    assert pq.read_table(sorted((out / "parquet").glob("train-*.parquet"))).column_names == ["messages"]


# ----------------------------------------------------------------------- 12. permissions
def test_export_files_follow_the_umask(sim, make_job) -> None:
    job = harvested(sim, make_job)
    for mask, folder_mode, file_mode in ((0o022, 0o755, 0o644), (0o027, 0o750, 0o640)):
        out = job.parent / f"out-{mask:o}"
        r = cli_in(job.parent, "export", str(job), "--out", str(out), umask=mask)
        assert r.returncode == 0, r.stderr
        paths = [out, *out.rglob("*")]
        modes = {p.relative_to(job.parent).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in paths}
        want = {k: folder_mode if (job.parent / k).is_dir() else file_mode for k in modes}
        assert modes == want


# ----------------------------------------------------------------------- 15. duplicates, --test-size, splits
def test_rejected_names_the_row_an_exact_duplicate_repeats(sim_factory, make_job) -> None:
    # Every answer the same refusal (its filter off), and each prompt twice in two spellings that
    # fold to one text: the second spelling of each is an exact duplicate of the first.
    sim = sim_factory(refusal_rate=1.0)
    job = make_job(sim, n=1, export={"filters": {"refusal": False}, "dedup": {"near": False}})
    (job.parent / "prompts.jsonl").write_text("".join(
        json.dumps({"prompt": text}) + "\n" for w in ("tides", "comets", "glaciers", "volcanoes")
        for text in (f"Explain {w}?", f"EXPLAIN {w.upper()}!")))
    assert cli("run", str(job), "--quiet").returncode == 0
    assert cli("export", str(job)).returncode == 0
    out = job.parent / "data" / "t"
    specs = list(plan(load_job(job)))
    rejected = [json.loads(x) for x in (out / "rejected.jsonl").read_text().splitlines()]
    assert len(rejected) == 4 and all(r["reason"] == "exact_duplicate" for r in rejected)
    assert {r["job_id"]: r["duplicate_of"] for r in rejected} == \
        {specs[i + 1].id: specs[i].id for i in range(0, 8, 2)}


def test_test_size_option_and_the_api_return_every_split(sim, make_job) -> None:
    from harvester import Harvester

    job = harvested(sim, make_job, n=20)
    out = job.parent / "data" / "t"
    r = cli("export", str(job), "--test-size", "0.5")
    assert r.returncode == 0, r.stderr
    stats = json.loads((out / "stats.json").read_text())
    assert stats["rows"]["test"] >= 1 and stats["rows"]["train"] + stats["rows"]["test"] == 20
    assert len((out / "test.jsonl").read_text().splitlines()) == stats["rows"]["test"]
    refused(cli("export", str(job), "--test-size", "1.5"), "--test-size")
    h = Harvester.from_file(job)
    splits = h.export(test_size=0.5)
    assert {k: len(v) for k, v in splits.items()} == stats["rows"]
    h.close()


# ----------------------------------------------------------------------- 16. what the card says
def test_card_and_stats_carry_no_local_path(sim_factory, make_job) -> None:
    model = "/home/u/models/Qwen2.5-7B"
    sim = sim_factory(model=model)
    job = harvested(sim, make_job, teacher={"model": model})
    assert cli("export", str(job)).returncode == 0
    out = job.parent / "data" / "t"
    card = (out / "README.md").read_text()
    assert "`Qwen2.5-7B`" in card
    for name in ("README.md", "stats.json", "dataset_info.json", ".harvester-export.json"):
        text = (out / name).read_text()
        for leak in ("/home/u", str(job.parent), "127.0.0.1"):
            assert leak not in text, (name, leak)
    assert json.loads((out / "stats.json").read_text())["out"] == "t"


def test_an_export_whose_filters_drop_most_rows_says_why_and_the_fix_last(sim, make_job) -> None:
    job = harvested(sim, make_job, n=8, teacher={"params": {"max_tokens": 2}})
    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("8 of 8 rows dropped, 8 as truncated") and "teacher.params.max_tokens" in last
    assert "export.filters.truncated: false" in last
    fine = cli("export", str(harvested(sim, make_job, n=8)))
    assert "rows dropped" not in fine.stdout


# ----------------------------------------------------------------------- 17. small test splits, multi-turn
def test_a_small_export_still_gets_a_test_split(sim, make_job) -> None:
    test_size = 0.01
    job = make_job(sim, n=5, export={"test_size": test_size})
    assert not any(split_of(s.id, test_size) == "test" for s in plan(load_job(job)))   # the hash gives none
    assert cli("run", str(job), "--quiet").returncode == 0
    out = job.parent / "data" / "t"
    assert cli("export", str(job)).returncode == 0
    test = (out / "test.jsonl").read_text()
    assert len(test.splitlines()) == 1 and len((out / "train.jsonl").read_text().splitlines()) == 4
    assert len(datasets.load_from_disk(str(out / "hf"))["test"]) == 1
    assert set(json.loads((out / "dataset_info.json").read_text())) == {"t", "t_test"}
    assert cli("export", str(job)).returncode == 0
    assert (out / "test.jsonl").read_text() == test                  # the same row each time


def test_one_row_says_why_there_is_no_test_split(sim, make_job) -> None:
    job = harvested(sim, make_job, n=1, export={"test_size": 0.2})
    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    assert "no test split: 1 row left" in r.stdout
    stats = json.loads((job.parent / "data" / "t" / "stats.json").read_text())
    assert any(n.startswith("no test split") for n in stats["notes"]) and "test" not in stats["rows"]


def test_multi_turn_prompts_train_on_the_teachers_answer_only(sim, make_job) -> None:
    folder = make_job(sim).parent
    turns = [{"role": "user", "content": "What is the capital of France?"},
             {"role": "assistant", "content": "Paris."},
             {"role": "user", "content": "And how many people live there?"}]
    (folder / "chat.jsonl").write_text(json.dumps({"messages": turns}) + "\n")
    job = make_job(sim, prompts=[{"path": "chat.jsonl"}])
    assert cli("run", str(job), "--quiet").returncode == 0
    out = folder / "data" / "t"
    assert cli("export", str(job)).returncode == 0
    (row,) = [json.loads(x) for x in (out / "train.jsonl").read_text().splitlines()]
    assert row["messages"][1] == {"role": "assistant", "content": "Paris.", "weight": 0}
    assert "weight" not in row["messages"][-1] and row["messages"][-1]["role"] == "assistant"
    assert validate_openai_row(row) == []
    (table,) = pq.read_table(sorted((out / "parquet").glob("train-*.parquet"))).to_pylist()
    assert all(set(m) == {"role", "content"} for m in table["messages"])
    card = (out / "README.md").read_text()
    assert ("`weight: 0`" in card and "mask_history: true" in card
            and "assistant turns written in the prompt file, before the teacher's answer: 1." in card)
    assert cli("export", str(job), "--format", "alpaca").returncode == 0
    assert "mask_history: true" in (out / "README.md").read_text()


def test_the_openai_validator_knows_weights_and_keys() -> None:
    ok = {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b", "weight": 0},
                       {"role": "user", "content": "c"}, {"role": "assistant", "content": "d", "weight": 1}]}
    assert validate_openai_row(ok) == []
    assert validate_openai_row({**ok, "id": "x"}) == ["unknown key(s) ['id']"]
    bad = {"messages": [{"role": "user", "content": "a", "weight": 0}, {"role": "assistant", "content": "b"}]}
    assert validate_openai_row(bad) and "weight" in validate_openai_row(bad)[0]
