"""Prompt sets in the shapes real datasets come in, through the real CLI, the simulator and the store:
Dolly rows (`instruction`, `context`, `response`, `category`) and rows with keys of their own, which
become metadata as a table's extra columns do."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import yaml
from conftest import cli

DOLLY = [
    {"instruction": "Summarize the passage.", "context": "Virgin Australia began in 2000 with two aircraft.",
     "response": "An airline that started in 2000.", "category": "summarization"},
    {"instruction": "Name a primary colour.", "context": "", "response": "Red.", "category": "open_qa"},
]


def _job(folder: Path, sim, *paths: str) -> Path:
    job = folder / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "t", "prompts": [{"path": p} for p in paths],
                                   "teacher": {"base_url": sim.url, "model": "sim-teacher", "api_key_env": None,
                                               "params": {"max_tokens": 400}}}))
    return job


def _stored(job: Path) -> list[tuple[list[dict[str, str]], dict]]:
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        rows = c.execute("select request, metadata from job order by seq").fetchall()
    return [(json.loads(r)["messages"], json.loads(m)) for r, m in rows]


def test_dolly_rows_and_extra_keys_run_and_export(sim, tmp_path: Path) -> None:
    (tmp_path / "dolly.jsonl").write_text("".join(json.dumps(r) + "\n" for r in DOLLY))
    (tmp_path / "own.json").write_text(json.dumps([{"prompt": "What is 2 + 2?", "source": "quiz", "difficulty": 1},
                                                   {"messages": [{"role": "user", "content": "Hi there?"}],
                                                    "lang": "en", "metadata": {"lang": "en-GB"}}], indent=1))
    job = _job(tmp_path, sim, "dolly.jsonl", "own.json")
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sim.stats()["answered"] == 4
    assert _stored(job) == [
        ([{"role": "user", "content": "Summarize the passage.\n\nVirgin Australia began in 2000 with two aircraft."}],
         {"category": "summarization", "reference": "An airline that started in 2000."}),   # context sent
        ([{"role": "user", "content": "Name a primary colour."}], {"category": "open_qa", "reference": "Red."}),
        ([{"role": "user", "content": "What is 2 + 2?"}], {"source": "quiz", "difficulty": 1}),
        ([{"role": "user", "content": "Hi there?"}], {"lang": "en-GB"}),    # the row's own metadata wins
    ]
    assert cli("export", str(job)).returncode == 0
    rows = [json.loads(line) for line in (tmp_path / "data" / "t" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 4 and rows[0]["messages"][0]["content"].endswith("with two aircraft.")
    assert all("An airline that started" not in m["content"] for row in rows for m in row["messages"])


def test_a_row_without_a_prompt_key_is_still_an_error_naming_file_and_line(sim, tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text(json.dumps(DOLLY[0]) + "\n"
                                      + json.dumps({"context": "c", "response": "r"}) + "\n")
    r = cli("run", str(_job(tmp_path, sim, "p.jsonl")), "--quiet")
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert f"{tmp_path / 'p.jsonl'}:2: give exactly one of 'prompt', 'messages', 'instruction'" in r.stderr
    assert "['context', 'response']" in r.stderr
    (tmp_path / "q.json").write_text('[\n {"prompt": "fine"},\n {"promt": "a typo"}\n]\n')
    r = cli("run", str(_job(tmp_path, sim, "q.json")), "--quiet")
    assert r.returncode == 2 and f"{tmp_path / 'q.json'}:3: unknown key 'promt'; did you mean 'prompt'?" in r.stderr
    assert sim.stats()["requests"] == 0
