from pathlib import Path

import pytest

from harvester.config import PromptSet, job_from_dict
from harvester.errors import PromptSourceError
from harvester.prompts import plan, read_prompt_set


def read(path: Path) -> list:
    return list(read_prompt_set(PromptSet(path=path)))


def test_jsonl_rows(tmp_path: Path) -> None:
    p = tmp_path / "p.jsonl"
    p.write_text('{"prompt": "hi", "system": "be brief", "id": 7, "metadata": {"k": 1}}\n\n'
                 '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},'
                 ' {"role": "user", "content": "c"}]}\n')
    rows = read(p)
    assert rows[0].messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    assert rows[0].metadata == {"k": 1, "id": 7}
    assert rows[0].source == f"{p}:1"
    assert [m["role"] for m in rows[1].messages] == ["user", "assistant", "user"]
    assert rows[1].source == f"{p}:3"


def test_yaml_template_product_and_literals(tmp_path: Path) -> None:
    p = tmp_path / "t.yaml"
    p.write_text('system: S\ntemplate: "Explain {topic} to a {audience}."\nvariables:\n'
                 '  topic: [gravity, tides, rust]\n  audience: [child, expert]\nprompts:\n  - "plain"\n'
                 '  - {prompt: "with meta", metadata: {d: 1}}\n')
    rows = read(p)
    texts = [r.messages[-1]["content"] for r in rows]
    assert len(rows) == 8
    assert texts[:2] == ["Explain gravity to a child.", "Explain gravity to a expert."]
    assert texts[-2:] == ["plain", "with meta"]
    assert all(r.messages[0] == {"role": "system", "content": "S"} for r in rows)
    assert rows[0].metadata["vars"] == {"topic": "gravity", "audience": "child"}


def test_csv(tmp_path: Path) -> None:
    p = tmp_path / "p.csv"
    p.write_text('prompt,system,lang\n"Say ""hi""",Be kind,en\nSecond,,fr\n')
    rows = read(p)
    assert rows[0].messages[-1]["content"] == 'Say "hi"'
    assert rows[0].metadata == {"lang": "en"}
    assert rows[1].messages == [{"role": "user", "content": "Second"}]


@pytest.mark.parametrize("name,content,where,words", [
    ("bad.jsonl", '{"prompt": "ok"}\n{"prompt": "broken"\n', ":2", "invalid JSON"),
    ("types.jsonl", '{"prompt": 5}\n', ":1", "'prompt' must be non-empty text"),
    ("unknown.jsonl", '{"prompt": "x", "promt": "y"}\n', ":1", "unknown key"),
    ("empty.jsonl", "\n\n", "", "no prompts"),
    ("novalue.yaml", 'template: "Hi {name} from {town}"\nvariables:\n  name: [a]\n', ":1", "{town} has no values"),
    ("last.jsonl", '{"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]}\n',
     ":1", "last message must be the user's"),
    ("brace.yaml", 'template: "Use {x"\nvariables: {x: [1]}\n', ":1", "bad template"),
    ("nested.yaml", 'templates:\n  - template: "{a}"\n    variables: {a: [x]}\n  - template: "{b}"\n'
     '    variables: {}\n', ":4", "{b} has no values"),
    # a YAML error names the line of the key at fault, not of the mapping holding it
    ("late.yaml", '# notes\n\nvariables:\n  w: [a]\ntemplate: "Hi {w} {z}"\n', ":5", "{z} has no values"),
    ("emptyvar.yaml", 'template: "{a} {b}"\nvariables:\n  a: [x]\n  b: []\n', ":4", "'b' needs a non-empty list"),
    ("unused.yaml", 'template: "{a}"\n\nvariables:\n  a: [x]\n  c: [y]\n', ":3", "['c'] are not used"),
    ("extra.yaml", 'template: "{a}"\nvariables: {a: [x]}\ncolour: red\n', ":3", "unknown key(s) ['colour']"),
    ("extra2.yaml", 'templates:\n  - template: "{a}"\n    variables: {a: [x]}\n    colour: red\n', ":4",
     "unknown key(s) ['colour'] in a template"),
])
def test_errors_name_file_and_line(tmp_path: Path, name: str, content: str, where: str, words: str) -> None:
    p = tmp_path / name
    p.write_text(content)
    with pytest.raises(PromptSourceError) as e:
        read(p)
    assert f"{p}{where}" in str(e.value)
    assert words in str(e.value)


def test_non_utf8_names_line(tmp_path: Path) -> None:
    p = tmp_path / "latin.jsonl"
    p.write_bytes(b'{"prompt": "ok"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(PromptSourceError, match=r"latin.jsonl:2: not UTF-8"):
        read(p)


def test_job_ids_are_stable_and_depend_on_the_request(tmp_path: Path) -> None:
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n{"prompt": "b"}\n')
    base = {"name": "j", "teacher": {"model": "m", "params": {"temperature": 0.5}},
            "prompts": [{"path": "p.jsonl", "samples": 2}]}
    first = [s.id for s in plan(job_from_dict(base, base=tmp_path))]
    again = [s.id for s in plan(job_from_dict(base, base=tmp_path))]
    assert first == again and len(set(first)) == 4
    hotter = {**base, "teacher": {"model": "m", "params": {"temperature": 0.9}}}
    assert set(first).isdisjoint(s.id for s in plan(job_from_dict(hotter, base=tmp_path)))
    specs = list(plan(job_from_dict(base, base=tmp_path)))
    assert specs[0].prompt_key == specs[1].prompt_key != specs[2].prompt_key
    assert [s.seq for s in specs] == [0, 1, 2, 3]
