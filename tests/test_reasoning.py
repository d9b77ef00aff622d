"""Reasoning teachers: the trace they send beside the answer (DeepSeek's `reasoning_content`,
`reasoning` elsewhere) is kept in the store and exported before the answer in <think> tags, or
dropped; a reasoning model that spends max_tokens thinking is recorded once, not retried."""

from __future__ import annotations

import json
import sqlite3

import datasets
import yaml
from conftest import cli
from openai_rows import validate_openai_row

from harvester.providers.chat import _reasoning


def test_the_trace_is_read_from_either_field_and_blank_ones_are_none() -> None:
    assert _reasoning({"content": "4", "reasoning_content": "2 + 2"}) == "2 + 2"
    assert _reasoning({"content": "4", "reasoning": "two and two"}) == "two and two"
    assert _reasoning({"content": "4", "reasoning_content": "  ", "reasoning": None}) is None
    assert _reasoning({"content": "<think>inline</think>4"}) is None          # stays in the content


def test_traces_are_stored_and_exported_in_think_tags_or_dropped(sim_factory, make_job) -> None:
    n = 6
    sim = sim_factory(reasoning=True)
    job = make_job(sim, n=n)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        stored = c.execute("SELECT content, reasoning, completion_tokens, raw FROM response").fetchall()
    assert len(stored) == n
    for content, reasoning, tokens, raw in stored:
        assert reasoning.startswith("The question is about") and "[think " in reasoning
        assert content.startswith("Here is an answer") and "<think>" not in content
        assert json.loads(raw)["reasoning_tokens"] > 0 and tokens > json.loads(raw)["reasoning_tokens"]

    r = cli("export", str(job))
    assert r.returncode == 0, r.stderr
    assert "with a reasoning trace (in <think> tags)" in r.stdout
    out = job.parent / "data" / "t"
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == n and all(validate_openai_row(row) == [] for row in rows)
    by_answer = {c: rs for c, rs, _, _ in stored}
    for row in rows:
        text = row["messages"][-1]["content"]
        thought, answer = text.removeprefix("<think>\n").split("\n</think>\n\n")
        assert by_answer[answer] == thought                                 # the trace of that very answer
    assert len(datasets.load_from_disk(str(out / "hf"))["train"]) == n
    assert "Reasoning traces: 6 rows" in (out / "README.md").read_text()

    data = yaml.safe_load(job.read_text())
    data["export"] = {"reasoning": "drop", "format": "alpaca"}
    job.write_text(yaml.safe_dump(data))
    assert cli("export", str(job)).returncode == 0
    outputs = [json.loads(line)["output"] for line in (out / "train.jsonl").read_text().splitlines()]
    assert sorted(outputs) == sorted(by_answer)                             # the answers alone
    assert json.loads((out / "stats.json").read_text())["reasoning_rows"] == n


def test_a_model_that_spends_max_tokens_thinking_is_recorded_once_and_filtered(sim_factory, make_job) -> None:
    sim = sim_factory(reasoning=True)
    job = make_job(sim, n=4, teacher={"params": {"max_tokens": 5}})         # less than any trace
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    assert sim.stats()["requests"] == 4                                     # no retry: it would end the same
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        assert c.execute("SELECT count(*) FROM response WHERE content = '' AND finish_reason = 'length' "
                         "AND reasoning IS NOT NULL").fetchone() == (4,)
    assert cli("export", str(job)).returncode == 0
    stats = json.loads((job.parent / "data" / "t" / "stats.json").read_text())
    assert stats["dropped"] == {"truncated": 4} and stats["rows"] == {"train": 0}
