from pathlib import Path

import pytest

from harvester.config import load_job
from harvester.errors import ConfigError

GOOD = """name: capitals
teacher:
  base_url: http://127.0.0.1:8765/v1
  model: gpt-4o-mini
  api_key_env: OPENAI_API_KEY
  params: {temperature: 0.7, max_tokens: 512}
  limits: {rpm: 3000, tpm: 2000000, max_concurrency: 64}
prompts:
  - path: prompts/capitals.yaml
    samples: 1
store: sqlite:///data/capitals.db
export: {out: data/capitals, format: openai}
"""


def test_issue_example_loads_and_resolves_paths(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text(GOOD)
    job = load_job(tmp_path / "job.yaml")
    assert job.prompts[0].path == tmp_path.resolve() / "prompts/capitals.yaml"
    assert job.store == f"sqlite:///{tmp_path.resolve()}/data/capitals.db"
    assert job.export.out == tmp_path.resolve() / "data/capitals"
    assert job.teacher.limits.rpm == 3000 and job.teacher.max_tokens == 512


def test_defaults(tmp_path: Path) -> None:
    (tmp_path / "j.yaml").write_text("name: x\nteacher: {model: m}\nprompts: [{path: p.jsonl}]\n")
    job = load_job(tmp_path / "j.yaml")
    assert job.store == f"sqlite:///{tmp_path.resolve()}/data/x.db"
    assert job.export.out == tmp_path.resolve() / "data/x"


def test_toml(tmp_path: Path) -> None:
    (tmp_path / "j.toml").write_text('name = "x"\n[teacher]\nmodel = "m"\n[[prompts]]\npath = "p.jsonl"\n')
    assert load_job(tmp_path / "j.toml").teacher.model == "m"


@pytest.mark.parametrize("change,field", [
    (("rpm: 3000", "rpm: -5"), "teacher.limits.rpm"),
    (("rpm: 3000", "rmp: 3000"), "teacher.limits.rmp"),
    (("samples: 1", "samples: many"), "prompts[0].samples"),
    (("format: openai", "format: csv"), "export.format"),
    (("name: capitals", "name: 'bad name!'"), "name"),
])
def test_errors_name_the_field(tmp_path: Path, change: tuple[str, str], field: str) -> None:
    (tmp_path / "job.yaml").write_text(GOOD.replace(*change))
    with pytest.raises(ConfigError) as e:
        load_job(tmp_path / "job.yaml")
    assert f"  {field}:" in str(e.value)
    assert str(tmp_path / "job.yaml") in str(e.value)


def test_yaml_syntax_error_names_line(tmp_path: Path) -> None:
    (tmp_path / "job.yaml").write_text("name: x\nteacher: {model: m\nprompts: []\n")
    with pytest.raises(ConfigError, match=r"job.yaml:\d+: not valid YAML"):
        load_job(tmp_path / "job.yaml")


def test_unset_key_variable_names_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "job.yaml").write_text(GOOD.replace("OPENAI_API_KEY", "HARVESTER_TEST_UNSET_KEY"))
    monkeypatch.delenv("HARVESTER_TEST_UNSET_KEY", raising=False)
    job = load_job(tmp_path / "job.yaml")
    with pytest.raises(ConfigError, match="teacher.api_key_env: environment variable HARVESTER_TEST_UNSET_KEY"):
        job.teacher.api_key()
