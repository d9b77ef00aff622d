"""Safe in careless hands: the slips people make with a job file, each caught by the real CLI with a
message that names the file or field and the fix, and never a traceback."""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml
from conftest import REPO, cli

from harvester import Harvester
from harvester.config import job_from_dict
from harvester.terms import check_terms


def _edit(job: Path, **teacher: object) -> Path:
    data = yaml.safe_load(job.read_text())
    data["teacher"].update(teacher)
    job.write_text(yaml.safe_dump(data))
    return job


def _refused(r, *fragments: str) -> str:
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    text = " ".join(r.stderr.split())
    for f in fragments:
        assert " ".join(f.split()) in text, r.stderr
    return text


def test_config_typos_get_did_you_mean(sim, make_job) -> None:
    job = make_job(sim, n=2, export={"format": "openia", "filters": {"refusl": True}})
    _edit(job, paramz={"temperature": 0.2})
    r = cli("run", str(job), "--quiet")
    _refused(r, str(job), "teacher.paramz: unknown key; did you mean `params`?",
             "export.format: Input should be 'openai', 'alpaca', 'sharegpt' or 'trl'; did you mean `openai`?",
             "export.filters.refusl: unknown key; did you mean `refusal`?")
    assert sim.stats()["requests"] == 0
    # a sampling parameter one level too high is pointed to teacher.params
    job = make_job(sim, n=2)
    _refused(cli("run", str(_edit(job, temperature=0.2)), "--quiet"),
             "teacher.temperature: unknown key; sampling parameters go under teacher.params")
    job = make_job(sim, n=2)
    _refused(cli("export", str(job), "--format", "sharegtp"), "--format: unknown format 'sharegtp'; "
             "did you mean `sharegpt`?")


def test_a_wrongly_typed_parameter_is_a_field_error(sim, make_job) -> None:
    for params, field in (({"max_tokens": "32 tokens"}, "teacher.params.max_tokens: must be a whole number above 0"),
                          ({"temperature": "warm"}, "teacher.params.temperature: must be a number"),
                          ({"stop": 3}, "teacher.params.stop: must be a text or a list of texts")):
        job = make_job(sim, n=2, teacher={"params": params})
        for args in (("run", str(job), "--quiet"), ("run", str(job), "--dry-run"), ("status", str(job))):
            _refused(cli(*args), str(job), field)
    assert sim.stats()["requests"] == 0
    # parameters harvester does not know pass through as they are
    job = make_job(sim, n=2, teacher={"params": {"max_tokens": 50, "repetition_penalty": "1.1", "top_k": 5}})
    assert cli("run", str(job), "--quiet").returncode == 0


def test_base_url_without_a_scheme_is_not_a_url(sim, make_job) -> None:
    job = make_job(sim, n=2, teacher={"base_url": "gpu-box:8000/v1"})
    text = _refused(cli("run", str(job), "--quiet"), str(job),
                    "teacher.base_url: not a URL: 'gpu-box:8000/v1'", "'http://gpu-box:8000/v1'")
    assert "training_use" not in text and "terms" not in text


def test_a_self_hosted_teacher_on_another_host_is_told_how_to_name_its_licence(sim, make_job) -> None:
    job = make_job(sim, n=2, teacher={"base_url": "http://gpu-box.invalid:8000/v1",
                                      "model": "Qwen/Qwen2.5-7B-Instruct"})
    _refused(cli("run", str(job), "--quiet"), "training_use is 'unknown'", "vLLM",
             "teacher: {provider: qwen} # the model's name suggests qwen",
             'teacher: {terms: {provider: "Apache-2.0", terms_url: "<the model card>", training_use: allowed}}',
             "teacher: {terms: {acknowledgement:")
    # a provider harvester does not list is named as such, with the nearest one it does
    _edit(job, provider="quen")
    _refused(cli("run", str(job), "--quiet"), "teacher.provider 'quen' is not in harvester's table of terms; "
             "did you mean `qwen`?")
    # each way out the message shows passes the terms check
    base = {"name": "x", "prompts": [{"path": "p.jsonl"}]}
    teacher = {"base_url": "http://gpu-box.invalid:8000/v1", "model": "Qwen/Qwen2.5-7B-Instruct"}
    for extra in ({"terms": {"provider": "Apache-2.0", "terms_url": "https://example.invalid/card",
                             "training_use": "allowed"}},
                  {"terms": {"acknowledgement": "me, the model card says Apache-2.0"}}):
        assert check_terms(job_from_dict({**base, "teacher": {**teacher, **extra}}).teacher)
    assert sim.stats()["requests"] == 0


def _toml_job(folder: Path, url: str, key_line: str) -> Path:
    (folder / "prompts.jsonl").write_text('{"prompt": "One?"}\n{"prompt": "Two?"}\n')
    path = folder / "job.toml"
    path.write_text(f'name = "t"\n[teacher]\nbase_url = "{url}"\nmodel = "sim-teacher"\n{key_line}\n'
                    '[teacher.params]\nmax_tokens = 50\n[[prompts]]\npath = "prompts.jsonl"\n')
    return path


def test_a_toml_job_file_can_say_no_key(sim, tmp_path: Path) -> None:
    for i, line in enumerate(('api_key_env = false', 'api_key_env = ""', 'api_key_env = "none"')):
        folder = tmp_path / str(i)
        folder.mkdir()
        r = cli("run", str(_toml_job(folder, sim.url, line)), "--quiet", env={"OPENAI_API_KEY": ""})
        assert r.returncode == 0, r.stderr
    assert sim.stats()["answered"] == 6   # two prompts, three stores


def test_a_missing_key_names_the_job_file_and_both_fixes(sim, tmp_path: Path) -> None:
    job = _toml_job(tmp_path, sim.url, 'api_key_env = "HARVESTER_TEST_NOT_SET"')
    r = cli("run", str(job), "--quiet", env={"HARVESTER_TEST_NOT_SET": ""})
    _refused(r, f"{job}: teacher.api_key_env: environment variable HARVESTER_TEST_NOT_SET is not set",
             "export HARVESTER_TEST_NOT_SET=...", "null (YAML) or false (TOML)")
    # a key pasted where the variable's name goes is refused without being printed
    secret = "sk-proj-abcdef0123456789SECRET"
    job.write_text(job.read_text().replace('"HARVESTER_TEST_NOT_SET"', f'"{secret}"'))
    r = cli("run", str(job), "--quiet")
    _refused(r, "teacher.api_key_env: must be the name of an environment variable")
    assert secret not in r.stderr + r.stdout
    assert sim.stats()["requests"] == 0


def test_status_explains_other_plans_in_words(sim, make_job) -> None:
    job = make_job(sim, n=3)
    assert cli("run", str(job), "--quiet").returncode == 0
    make_job(sim, n=2)                   # the job file's prompts change: a new plan; the third prompt's job stays
    assert cli("run", str(job), "--quiet").returncode == 0
    r = cli("status", str(job))
    assert r.returncode == 0, r.stderr
    row = next(line for line in r.stdout.splitlines() if "jobs of other plans" in line)
    assert "(earlier versions of this job" in row and row.split("│")[2].strip() == "1", r.stdout
    assert json.loads(cli("status", str(job), "--json").stdout)["other_plans"] == 1


def test_version_help_and_job_metavar() -> None:
    from harvester import __version__
    r = cli("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"harvester {__version__}"
    top = cli("--help")
    assert top.returncode == 0 and "4 the teacher looks down" in " ".join(top.stdout.split())
    for command in ("run", "status", "quota", "export"):
        h = cli(command, "--help").stdout
        assert f"harvester {command} [OPTIONS] {{JOB}}" in h and "JOB <path>" in h, h
    missing = cli("run")
    assert missing.returncode == 2 and "Missing argument 'JOB'" in missing.stderr


def test_harvester_is_a_context_manager(sim, make_job) -> None:
    job = make_job(sim, n=3)
    with Harvester.from_file(job) as h:
        assert h.run_sync(handle_signals=False).exit_code == 0
        assert h.status()["done"] == 3
    assert h._store is None          # closed on leaving the block
    r = cli("status", str(job), "--json")
    assert json.loads(r.stdout)["done"] == 3


def test_readme_links_nothing_outside_the_checkout() -> None:
    text = (REPO / "README.md").read_text()
    targets = re.findall(r"\]\(([^)]+)\)", text) + re.findall(r"`(\.\./[^`]*)`", text)
    outside = [t for t in targets if not t.startswith(("http://", "https://", "#"))
               and not (REPO / t.split("#")[0]).resolve().is_relative_to(REPO)]
    assert not outside and "../shared" not in text, outside
    assert "## Architecture" in text or (REPO / "docs" / "architecture.md").exists()


def test_a_rejected_or_missing_key_names_the_variable_and_the_job_file(sim_factory, make_job) -> None:
    sim = sim_factory(api_key="right-key-123")
    job = make_job(sim, n=5, teacher={"api_key_env": "HARVESTER_TEST_KEY"})
    r = cli("run", str(job), "--quiet", env={"HARVESTER_TEST_KEY": "wrong-key-456"})
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert f"check the key in $HARVESTER_TEST_KEY (teacher.api_key_env in {job})" in " ".join(r.stderr.split())
    job = make_job(sim, n=5)                      # api_key_env: null, against a server that wants a key
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 1
    assert f"the teacher wants an API key (Incorrect API key provided.), and teacher.api_key_env in {job} says " \
           "none" in " ".join(r.stderr.split())
    assert "wrong-key-456" not in r.stdout + r.stderr
