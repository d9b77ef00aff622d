"""Answers with a shape, end to end through the real CLI against the simulator over loopback: response
schemas enforced (invalid answers asked again within retry.invalid_answers, then failed with the error;
every exported row validates), json_object-only providers get the schema in the prompt, and the teacher's
logprobs round-trip exactly from what the simulator sent into the export, row by row."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import datasets
import jsonschema
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import cli

from harvester.config import job_from_dict
from harvester.errors import ConfigError
from harvester.hashing import content_hash
from harvester.logprobs import pack, unpack
from harvester.prompts import plan
from harvester.providers.chat import read_logprobs
from harvester.shape import Invalid, Shape, check_answer, shaped_request
from harvester.sim import prompt_key
from harvester.sim_shapes import logprobs_for

LABEL = {"title": "Label", "type": "object", "required": ["label", "score"], "additionalProperties": False,
         "properties": {"label": {"type": "string", "enum": ["pos", "neg"]}, "score": {"type": "number"},
                        "tags": {"type": "array", "items": {"type": "string"}}}}


def db(job: Path) -> sqlite3.Connection:
    return sqlite3.connect(job.parent / "data" / "t.db")


def shaped_job(make_job, sim, n: int = 40, teacher: dict[str, Any] | None = None, **over: Any) -> Path:
    job = make_job(sim, n=n, **over)
    (job.parent / "label.json").write_text(json.dumps(LABEL))
    data = yaml.safe_load(job.read_text())
    data["teacher"].update({"response_schema": "label.json", **(teacher or {})})
    data["quota"] = {"requests_total": 10_000}            # the ledger: every attempt is one of its requests
    job.write_text(yaml.safe_dump(data))
    return job


# --- the pure core -----------------------------------------------------------------------------

def test_an_answer_is_parsed_or_told_what_is_wrong() -> None:
    shape = Shape("Label", LABEL, "label.json")
    assert check_answer(shape, '{"label": "pos", "score": 0.5}', "stop") == {"label": "pos", "score": 0.5}
    cases = {"Sure: {}": "invalid_json", "  ": "invalid_json", '{"label": "pos"}': "invalid_schema",
             '{"label": "maybe", "score": 1}': "invalid_schema"}
    for text, kind in cases.items():
        got = check_answer(shape, text, "stop")
        assert isinstance(got, Invalid) and got.kind == kind, (text, got)
    missing = check_answer(shape, '{"label": "pos"}', "stop")
    assert isinstance(missing, Invalid) and "'score' is a required property" in missing.message
    cut = check_answer(shape, '{"label": "pos", "score": 0.5}', "length")   # valid text, but cut off
    assert isinstance(cut, Invalid) and cut.kind == "truncated_json" and "max_tokens" in cut.message


def test_each_provider_is_asked_the_way_it_takes_a_schema() -> None:
    shape = Shape("Label", LABEL, "label.json")
    user = [{"role": "user", "content": "Rate: great film"}]
    messages, params = shaped_request(user, {"temperature": 0}, shape, "json_schema")
    assert messages == user and params["response_format"] == {"type": "json_schema",
                                                              "json_schema": {"name": "Label", "schema": LABEL}}
    messages, params = shaped_request(user, {}, shape, "json_object")
    assert params["response_format"] == {"type": "json_object"}
    assert messages[0]["role"] == "system"
    assert "JSON" in messages[0]["content"] and '"required"' in messages[0]["content"]
    system = [{"role": "system", "content": "You rate films."}, *user]
    messages, params = shaped_request(system, {"response_format": {"type": "json_object"}}, shape, "prompt")
    assert "response_format" not in params and len(messages) == 2
    assert messages[0]["content"].startswith("You rate films.\n\nAnswer with one JSON object")


def test_the_schema_is_part_of_the_jobs_identity(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "a.json").write_text(json.dumps(LABEL))
    (tmp_path / "b.json").write_text(json.dumps({**LABEL, "required": ["label"]}))

    def ids(**teacher: Any) -> list[str]:
        job = job_from_dict({"name": "t", "teacher": {"model": "m", "api_key_env": None, **teacher},
                             "prompts": [{"path": "p.jsonl"}]}, base=tmp_path)
        return [s.id for s in plan(job)]
    plain, a, b = ids(), ids(response_schema="a.json"), ids(response_schema="b.json")
    assert len({plain[0], a[0], b[0]}) == 3
    assert ids(response_schema="a.json") == a                                   # stable
    # a job file that sent its own response_format before it was enforced keeps its job ids
    rf = {"type": "json_schema", "json_schema": {"name": "Label", "schema": LABEL}}
    before = content_hash({"model": "m", "messages": [{"role": "user", "content": "a"}],
                           "params": {"response_format": rf}, "sample": 0})
    assert ids(params={"response_format": rf}) == [before]


def test_bad_schemas_are_named_with_their_field_and_fix(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n')
    (tmp_path / "broken.json").write_text('{"type": 5}')

    def problem(teacher: dict[str, Any], prompts: dict[str, Any] | None = None) -> str:
        with pytest.raises(ConfigError) as e:
            job = job_from_dict({"name": "t", "teacher": {"model": "m", "api_key_env": None, **teacher},
                                 "prompts": [{"path": "p.jsonl", **(prompts or {})}]}, base=tmp_path)
            list(plan(job))
        return str(e.value)
    assert "teacher.response_schema: no such file" in problem({"response_schema": "nope.json"})
    assert "prompts[0].response_schema" in problem({}, {"response_schema": "broken.json"})
    assert "not a valid JSON Schema" in problem({"response_schema": "broken.json"})
    assert "cannot import no_such_module" in problem({"response_schema": "no_such_module:Label"})
    assert "both give a response schema" in problem({"response_schema": "broken.json", "params": {
        "response_format": {"type": "json_object"}}})
    assert "teacher.params.top_logprobs: needs logprobs: true" in problem({"params": {"top_logprobs": 3}})
    assert "groq returns no logprobs" in problem({"provider": "groq", "params": {"logprobs": True}})
    assert "at most 20" in problem({"provider": "openai", "params": {"logprobs": True, "top_logprobs": 30},
                                    "terms": {"acknowledgement": "test"}})


def test_logprobs_pack_exactly_in_float32_or_float64() -> None:
    f32 = logprobs_for('{"label": "pos", "score": 0.5} é 数据', 20, "seed")
    tokens = read_logprobs({"logprobs": {"content": f32}})
    assert tokens is not None and unpack(pack(tokens)) == tokens
    wide = [("a", -0.1, [("a", -0.1), ("b", -2.000000000000001)]), ("\ud83d", -1e-300, [])]   # not float32 values
    assert unpack(pack(wide)) == wide
    assert len(pack(wide)) > 0 and pack(tokens)[3] == 4 and pack(wide)[3] == 8


# --- end to end --------------------------------------------------------------------------------

def test_invalid_answers_are_asked_again_within_the_bound_and_every_exported_row_validates(
        sim_factory, make_job) -> None:
    sim = sim_factory(invalid_json_rate=0.15, missing_field_rate=0.15, truncated_json_rate=0.15)
    job = shaped_job(make_job, sim, n=60)
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    with db(job) as c:
        attempts = dict(c.execute("select job_id, count(*) from attempt group by job_id").fetchall())
        kinds = dict(c.execute("select error_kind, count(*) from attempt group by error_kind").fetchall())
        failed = c.execute("select id, error_kind, last_error, permanent from job where status = 'failed'").fetchall()
        done = c.execute("select count(*) from job where status = 'done'").fetchone()[0]
        settled = c.execute("select count(*) from usage where state = 'settled'").fetchone()[0]
        contents = [x for (x,) in c.execute("select content from response")]
    # the default bound: 2 more asks after an invalid answer, so 3 attempts at most, each paid and in the ledger
    assert max(attempts.values()) == 3 and sum(attempts.values()) == sim.stats()["answered"] == settled
    assert {"invalid_json", "invalid_schema", "truncated_json"} <= set(kinds) and kinds[None] == done
    assert failed and done + len(failed) == 60
    for job_id, kind, error, permanent in failed:
        assert attempts[job_id] == 3 and kind in ("invalid_json", "invalid_schema", "truncated_json") and permanent
        assert error.startswith(("the answer is not JSON", "the answer does not match the schema",
                                 "the answer was cut off"))
    for text in contents:
        jsonschema.validate(json.loads(text), LABEL)            # only valid answers are stored as answers

    e = cli("export", str(job))
    assert e.returncode == 0, e.stdout + e.stderr
    out = job.parent / "data" / "t"
    rows = [json.loads(line) for line in (out / "train.jsonl").read_text().splitlines()]
    assert len(rows) == done
    table = pq.read_table(next((out / "parquet").glob("train-*.parquet"))).to_pylist()
    hf = datasets.load_from_disk(str(out / "hf"))["train"]
    for row, prow, hrow in zip(rows, table, hf):
        text = row["messages"][-1]["content"]
        jsonschema.validate(json.loads(text), LABEL)
        assert {k: v for k, v in prow["parsed"].items() if v is not None} == json.loads(text)
        assert hrow["parsed"] == prow["parsed"]
    assert "`Label (label.json)`" in (out / "README.md").read_text()

    # a rerun asks nothing again: failed-invalid jobs are permanent (--retry-failed to ask anew)
    before = sim.stats()["requests"]
    assert cli("run", str(job)).returncode == 0 and sim.stats()["requests"] == before


def test_a_json_object_only_provider_gets_the_schema_in_the_prompt(sim_factory, make_job, tmp_path) -> None:
    log = tmp_path / "sim.jsonl"
    sim = sim_factory(log_path=str(log))
    job = shaped_job(make_job, sim, n=8, teacher={"provider": "deepseek"})
    (job.parent / "shapes.py").write_text(
        "from pydantic import BaseModel\n\nclass Verdict(BaseModel):\n    verdict: bool\n    reason: str\n")
    data = yaml.safe_load(job.read_text())
    data["prompts"].append({"path": "prompts.jsonl", "samples": 2, "response_schema": "shapes:Verdict"})
    job.write_text(yaml.safe_dump(data))
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    received = [json.loads(line) for line in log.read_text().splitlines()]
    received = [x for x in received if x["event"] == "received"]
    assert len(received) == 8 + 16
    for x in received:
        assert x["response_format"] == {"type": "json_object"}
        assert "JSON" in x["system"] and ('"Verdict"' in x["system"] or '"Label"' in x["system"])
    assert sum('"Verdict"' in x["system"] for x in received) == 16
    assert cli("export", str(job)).returncode == 0
    table = pq.read_table(next((job.parent / "data" / "t" / "parquet").glob("train-*.parquet"))).to_pylist()
    assert table[0]["parsed"] and isinstance(table[0]["parsed"], str)    # two schemas: JSON text
    for row in table:
        text = row["messages"][-1]["content"]
        assert json.loads(row["parsed"]) == json.loads(text)
        assert row["messages"][0]["role"] == "system"                    # the prompt as sent


@pytest.mark.parametrize("k", [5, 20])
def test_logprobs_round_trip_exactly_into_the_export(sim_factory, make_job, k) -> None:
    sim = sim_factory()
    job = make_job(sim, n=12, teacher={"params": {"max_tokens": 400, "logprobs": True, "top_logprobs": k}})
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    assert "without logprobs" not in r.stderr
    assert cli("export", str(job)).returncode == 0
    out = job.parent / "data" / "t"
    hf = datasets.load_from_disk(str(out / "hf"))["train"]
    table = pq.read_table(next((out / "parquet").glob("train-*.parquet"))).to_pylist()
    assert len(hf) == len(table) == 12
    for prow, hrow in zip(table, hf):
        messages = [m for m in prow["messages"][:-1]]
        text = prow["messages"][-1]["content"]
        sent = logprobs_for(text, k, f"{prompt_key(messages)}:0:0")      # what the simulator sent for it
        want = [{"token": t["token"], "logprob": t["logprob"],
                 "top": [{"token": a["token"], "logprob": a["logprob"]} for a in t["top_logprobs"]]} for t in sent]
        assert prow["logprobs"] == want and hrow["logprobs"] == want
        assert "".join(t["token"] for t in prow["logprobs"]) == text and all(len(t["top"]) == k for t in want)
    card = (out / "README.md").read_text()
    assert "`logprobs` column" in card and f"top-{k}" in card and "sim-teacher" in card


def test_a_teacher_that_sends_no_logprobs_is_reported_once(sim_factory, make_job) -> None:
    sim = sim_factory(logprobs=False)
    job = make_job(sim, n=6, teacher={"params": {"max_tokens": 100, "logprobs": True, "top_logprobs": 2}})
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stderr.count("answers came without logprobs") == 1 and "6 answers" in r.stderr
    e = cli("export", str(job))
    assert e.returncode == 0
    out = job.parent / "data" / "t"
    assert json.loads((out / "stats.json").read_text())["without_logprobs"] == 6
    assert "6 rows came without" in (out / "README.md").read_text()


def test_batch_results_that_are_invalid_go_again_within_the_bound(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.1, invalid_json_rate=0.3)
    job = shaped_job(make_job, sim, n=30, teacher={"mode": "batch"})
    data = yaml.safe_load(job.read_text())
    data["batch"] = {"poll_seconds": 0.05}
    job.write_text(yaml.safe_dump(data))
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    with db(job) as c:
        bad = c.execute("select count(*) from attempt where error_kind = 'invalid_json'").fetchone()[0]
        states = dict(c.execute("select status, count(*) from job group by status").fetchall())
        most = c.execute("select max(attempts) from job").fetchone()[0]
        contents = [x for (x,) in c.execute("select content from response")]
    assert bad > 0 and most <= 3 and states.get("done", 0) + states.get("failed", 0) == 30
    for text in contents:
        jsonschema.validate(json.loads(text), LABEL)


def test_a_pydantic_models_own_validators_check_every_answer(sim_factory, make_job) -> None:
    sim = sim_factory()
    job = make_job(sim, n=16, teacher={"response_schema": "shapes:Verdict"})
    (job.parent / "shapes.py").write_text(
        "from pydantic import BaseModel, field_validator\n\n"
        "class Verdict(BaseModel):\n    verdict: bool\n    reason: str\n\n"
        "    @field_validator('reason')\n    @classmethod\n    def no_rivers(cls, v: str) -> str:\n"
        "        if 'river' in v:\n            raise ValueError('no rivers, please')\n        return v\n")
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    with db(job) as c:
        refused = c.execute("select count(*) from attempt where error_kind = 'invalid_schema'").fetchone()[0]
        contents = [x for (x,) in c.execute("select content from response")]
        errors = [x for (x,) in c.execute("select last_error from job where status = 'failed'")]
    assert refused > 0 and contents                          # JSON Schema alone would have taken them
    assert all("river" not in json.loads(x)["reason"] for x in contents)
    assert all("does not validate as shapes:Verdict" in e and "no rivers" in e for e in errors)


def test_labels_that_repeat_across_prompts_are_not_removed_as_duplicates(sim_factory, make_job) -> None:
    sim = sim_factory()
    job = make_job(sim, n=20)
    (job.parent / "label.json").write_text(json.dumps({"type": "object", "required": ["label"],
                                                       "properties": {"label": {"enum": ["pos", "neg"]}}}))
    data = yaml.safe_load(job.read_text())
    data["teacher"]["response_schema"] = "label.json"
    job.write_text(yaml.safe_dump(data))
    assert cli("run", str(job)).returncode == 0
    assert cli("export", str(job)).returncode == 0
    rows = (job.parent / "data" / "t" / "train.jsonl").read_text().splitlines()
    assert len(rows) == 20 and len({json.loads(r)["messages"][-1]["content"] for r in rows}) == 2
