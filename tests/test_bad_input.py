"""Bad input, table-driven: each malformed job file, prompt file, environment or store makes the
CLI exit 2 with a message that names the file and line, or the field; and nothing in the store
changes (a dump of every table before and after), no file appears beside it, nothing is sent.

Every case starts from a copy of one finished harvest (5 prompts answered, its store in data/).
The table runs the CLI in process (typer's runner: the same code from argv to exit code, without
a second of interpreter start-up per case); a few cases also run as a real `harvester` process.
"""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import cli
from typer.testing import CliRunner

from harvester.cli import app
from harvester.sim import SimConfig, Simulator, running
from harvester.store import SCHEMA_VERSION

UNSET_ENV = "HARVESTER_TEST_SURELY_UNSET_KEY"


@pytest.fixture(scope="module")
def sim() -> Iterator[Simulator]:
    with running(SimConfig()) as s:
        yield s


@pytest.fixture(scope="module")
def golden(sim: Simulator, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished harvest: job.yaml, prompts.jsonl, data/t.db."""
    folder = tmp_path_factory.mktemp("golden")
    (folder / "prompts.jsonl").write_text("".join(f'{{"prompt": "Golden question {i}?"}}\n' for i in range(5)))
    job = {"name": "t", "teacher": {"base_url": sim.url, "model": "sim-teacher", "api_key_env": None,
                                    "params": {"max_tokens": 300}, "limits": {"max_concurrency": 4}},
           "prompts": [{"path": "prompts.jsonl"}],
           "retry": {"max_attempts": 2, "initial_wait": 0.01, "max_wait": 0.05}}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    r = cli("run", str(folder / "job.yaml"), "--quiet")
    assert r.returncode == 0, r.stderr
    return folder


# --- the cases: each edits a copy of the golden folder and says what the message must contain ------

@dataclass
class Case:
    id: str
    edit: Callable[[Path], list[str]]   # returns fragments the error message must contain
    args: tuple[str, ...] = ("run", "{job}", "--quiet")


def _job(folder: Path) -> dict[str, Any]:
    return yaml.safe_load((folder / "job.yaml").read_text())


def _set_job(folder: Path, **changes: Any) -> None:
    job = _job(folder)
    for dotted, value in changes.items():
        *parents, last = dotted.split("__")
        node = job
        for p in parents:
            node = node[p]
        if value is _DELETE:
            del node[last]
        else:
            node[last] = value
    (folder / "job.yaml").write_text(yaml.safe_dump(job))


_DELETE = object()


def _prompts(folder: Path, text: str | bytes, name: str = "prompts.jsonl") -> Path:
    path = folder / name
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    if name != "prompts.jsonl":
        _set_job(folder, prompts=[{"path": name}])
    return path


def prompt_file(text: str | bytes, *expected: str, name: str = "prompts.jsonl") -> Callable[[Path], list[str]]:
    """An edit that writes the prompt file `name`; `{p}` in `expected` stands for its path."""
    def edit(f: Path) -> list[str]:
        p = _prompts(f, text, name)
        return [e.format(p=p) for e in expected]
    return edit


def job_change(*expected: str, **changes: Any) -> Callable[[Path], list[str]]:
    """An edit of job.yaml (see `_set_job`); `{f}` in `expected` stands for the folder."""
    def edit(f: Path) -> list[str]:
        _set_job(f, **changes)
        return [e.format(f=f) for e in expected]
    return edit


invalid_json_line = prompt_file('{"prompt": "fine"}\n{"prompt": "fine too"}\n{"prompt": oops}\n',
                                "{p}:3: invalid JSON")
wrong_type_in_prompt = prompt_file('{"prompt": "fine"}\n{"prompt": 42}\n', "{p}:2: 'prompt' must be non-empty text")
line_not_an_object = prompt_file('["a list", "not an object"]\n', "{p}:1: each line must be a JSON object")
unknown_key_in_prompt = prompt_file('{"prompt": "a"}\n\n{"prompt": "b", "sytem": "Be brief."}\n',
                                    "{p}:3: unknown key 'sytem'; did you mean 'system'?")
bad_messages = prompt_file('{"messages": [{"role": "user", "content": "a"}, {"role": "robot", "content": "b"}]}\n',
                           "{p}:1: messages[1] must be")
last_message_not_user = prompt_file(
    '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n',
    "{p}:1: the last message must be the user's")
empty_prompt_file = prompt_file("", "{p}: no prompts in this file")
blank_prompt_file = prompt_file("\n   \n\t\n", "{p}: no prompts in this file")
non_utf8_prompts = prompt_file(b'{"prompt": "fine"}\n{"prompt": "caf\xe9"}\n', "{p}:2: not UTF-8 (byte 0xe9)")
template_variable_without_values = prompt_file(    # the line of the top-level template
    'system: Be brief.\ntemplate: "Explain {topic} to {audience}."\nvariables:\n  topic: [gravity, tides]\n',
    "{p}:2: template variable {{audience}} has no values", name="p.yaml")
template_variable_empty_list = prompt_file(         # the line of the variable
    'template: "Explain {topic} in {place}."\nvariables:\n  place: [a, b]\n  topic: []\n',
    "{p}:4: variable 'topic' needs a non-empty list", name="p.yaml")
invalid_yaml_prompts = prompt_file('template: "Explain {topic}."\nvariables:\n  topic: [a, b\n',
                                   "{p}:", "invalid YAML", name="p.yaml")
csv_without_prompt_column = prompt_file("question,answer\nwhy?,because\n",
                                        "{p}:1: the header needs a 'prompt', 'messages', 'instruction' "
                                        "or 'conversations' column", name="p.csv")
unknown_prompt_extension = prompt_file("just text\n", "{p}: unknown prompt file type '.txt'", name="p.txt")


def missing_prompt_file(f: Path) -> list[str]:
    _set_job(f, prompts=[{"path": "nowhere.jsonl"}])
    return [f"{f / 'nowhere.jsonl'}: no such prompt file"]


job_wrong_type = job_change("{f}/job.yaml: invalid job file", "teacher.limits.rpm: Input should be a valid number",
                            teacher__limits__rpm="fast")
job_unknown_key = job_change("teacher.temprature: unknown key", teacher__temprature=0.2)
job_missing_field = job_change("teacher.model: Field required", teacher__model=_DELETE)
job_samples_wrong_type = job_change("prompts[0].samples: Input should be a valid integer",
                                    prompts=[{"path": "prompts.jsonl", "samples": "many"}])
job_bad_name = job_change("  name: String should match pattern", name="no spaces allowed")


def job_empty_file(f: Path) -> list[str]:
    (f / "job.yaml").write_text("")
    return [f"{f / 'job.yaml'}: a job file is a mapping"]


def job_non_utf8(f: Path) -> list[str]:
    (f / "job.yaml").write_bytes((f / "job.yaml").read_bytes() + b"# caf\xe9\n")
    return [f"{f / 'job.yaml'}: cannot read job file (UnicodeDecodeError)"]


def job_invalid_yaml(f: Path) -> list[str]:
    (f / "job.yaml").write_text((f / "job.yaml").read_text() + "quota: {requests_total: 5\n")
    return [f"{f / 'job.yaml'}:", "not valid YAML"]


def job_invalid_toml(f: Path) -> list[str]:
    (f / "job.yaml").unlink()
    (f / "job.toml").write_text('name = "t"\n[teacher\nmodel = "m"\n')
    return [f"{f / 'job.toml'}: not valid TOML"]


def api_key_unset(f: Path) -> list[str]:
    # New prompts too, so that the run has something to plan and send: nothing may be planned either.
    with (f / "prompts.jsonl").open("a") as out:
        out.write('{"prompt": "A new question?"}\n')
    _set_job(f, teacher__api_key_env=UNSET_ENV)
    return [f"teacher.api_key_env: environment variable {UNSET_ENV} is not set"]


def quota_without_max_tokens(f: Path) -> list[str]:
    with (f / "prompts.jsonl").open("a") as out:
        out.write('{"prompt": "A new question?"}\n')
    _set_job(f, teacher__params={}, quota={"requests_total": 100})
    return ["teacher.params.max_tokens: a quota needs max_tokens"]


usd_budget_without_prices = job_change("quota.prices: no built-in prices for model 'sim-teacher'",
                                       quota={"usd_total": 1.0})
terms_forbid = job_change("teacher.terms: training_use for openai is 'forbidden'", teacher__provider="openai")


def store_parent_is_a_file(f: Path) -> list[str]:
    (f / "blocker").write_text("a file where a folder should be\n")
    _set_job(f, store="sqlite:///blocker/t.db")
    return [f"store {f / 'blocker' / 't.db'}: cannot create its folder"]


def store_is_a_directory(f: Path) -> list[str]:
    (f / "adir.db").mkdir()
    _set_job(f, store="sqlite:///adir.db")
    return [f"store sqlite:///{f / 'adir.db'}: cannot open"]


def store_from_a_newer_schema(f: Path) -> list[str]:
    with sqlite3.connect(f / "data" / "t.db") as c:
        c.execute("update meta set value = ? where key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    return [f"has schema version {SCHEMA_VERSION + 1}, newer than this harvester understands"]


def store_of_another_job(f: Path) -> list[str]:
    _set_job(f, name="other")
    _set_job(f, store="sqlite:///data/t.db")
    return ["belongs to job 't', not 'other'"]


def export_unknown_format(f: Path) -> list[str]:
    return ["--format: unknown format 'parquet'"]


CASES = [
    Case("invalid-json-line", invalid_json_line), Case("wrong-type-in-prompt", wrong_type_in_prompt),
    Case("line-not-an-object", line_not_an_object), Case("unknown-key-in-prompt", unknown_key_in_prompt),
    Case("bad-messages", bad_messages), Case("last-message-not-user", last_message_not_user),
    Case("empty-prompt-file", empty_prompt_file), Case("blank-prompt-file", blank_prompt_file),
    Case("non-utf8-prompts", non_utf8_prompts),
    Case("template-variable-without-values", template_variable_without_values),
    Case("template-variable-empty-list", template_variable_empty_list),
    Case("invalid-yaml-prompts", invalid_yaml_prompts), Case("csv-without-prompt-column", csv_without_prompt_column),
    Case("unknown-prompt-extension", unknown_prompt_extension), Case("missing-prompt-file", missing_prompt_file),
    Case("job-wrong-type", job_wrong_type), Case("job-unknown-key", job_unknown_key),
    Case("job-missing-field", job_missing_field), Case("job-samples-wrong-type", job_samples_wrong_type),
    Case("job-bad-name", job_bad_name), Case("job-empty-file", job_empty_file), Case("job-non-utf8", job_non_utf8),
    Case("job-invalid-yaml", job_invalid_yaml), Case("job-invalid-toml", job_invalid_toml, ("run", "{toml}")),
    Case("api-key-unset", api_key_unset), Case("quota-without-max-tokens", quota_without_max_tokens),
    Case("usd-budget-without-prices", usd_budget_without_prices), Case("terms-forbid", terms_forbid),
    Case("store-parent-is-a-file", store_parent_is_a_file), Case("store-is-a-directory", store_is_a_directory),
    Case("store-from-a-newer-schema", store_from_a_newer_schema),
    Case("store-of-another-job", store_of_another_job),
    Case("export-unknown-format", export_unknown_format, ("export", "{job}", "--format", "parquet")),
    Case("status-of-a-bad-job-file", job_wrong_type, ("status", "{job}", "--json")),
    Case("export-of-a-bad-job-file", job_unknown_key, ("export", "{job}")),
    Case("quota-of-a-bad-job-file", job_missing_field, ("quota", "{job}")),
    Case("dry-run-of-a-bad-prompt-file", invalid_json_line, ("run", "{job}", "--dry-run")),
]


def snapshot(folder: Path) -> tuple[list[str], list[str]]:
    """Every table of the store, and every file under the folder (name, size) but the job's inputs."""
    db = folder / "data" / "t.db"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as c:
        tables = list(c.iterdump())
    files = sorted(f"{p.relative_to(folder)}" for p in folder.rglob("*")
                   if not p.name.endswith(("-wal", "-shm")))
    return tables, files


def check(case: Case, golden: Path, sim: Simulator, folder: Path, real_process: bool) -> None:
    shutil.copytree(golden, folder)
    expected = case.edit(folder)
    before = snapshot(folder)
    requests = sim.stats()["requests"]
    args = [a.format(job=folder / "job.yaml", toml=folder / "job.toml") for a in case.args]
    if real_process:
        r = cli(*args, env={UNSET_ENV: ""}, timeout=60)
        code, stdout, stderr = r.returncode, r.stdout, r.stderr
    else:
        result = CliRunner().invoke(app, args, env={UNSET_ENV: ""})
        code, stdout, stderr = result.exit_code, result.stdout, result.stderr
        assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert code == 2, stdout + stderr
    message = " ".join(stderr.split())               # compare with spaces folded
    for fragment in expected:
        assert " ".join(fragment.split()) in message, stderr
    assert "Traceback" not in stderr
    assert snapshot(folder) == before                # nothing in the store changed, no file appeared
    assert sim.stats()["requests"] == requests       # nothing was sent


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_exits_2_names_where_and_changes_nothing(case: Case, golden: Path, sim: Simulator,
                                                            tmp_path: Path) -> None:
    check(case, golden, sim, tmp_path / "job", real_process=False)


REAL = [c for c in CASES if c.id in ("invalid-json-line", "non-utf8-prompts", "job-unknown-key", "api-key-unset",
                                     "store-from-a-newer-schema")]


@pytest.mark.parametrize("case", REAL, ids=[c.id for c in REAL])
def test_bad_input_in_a_real_process(case: Case, golden: Path, sim: Simulator, tmp_path: Path) -> None:
    check(case, golden, sim, tmp_path / "job", real_process=True)
