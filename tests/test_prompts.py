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
    ("unknown.jsonl", '{"promt": "y"}\n', ":1", "unknown key 'promt'; did you mean 'prompt'?"),
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
    # JSON arrays and the Alpaca and ShareGPT shapes
    ("obj.json", '{"prompt": "x"}\n', ":1", "expected a JSON array"),
    ("bad.json", '[\n {"prompt": "a"},\n {"prompt": }\n]\n', ":3", "invalid JSON"),
    ("row.json", '[\n {"prompt": "a"},\n\n {"instruction": ""}\n]\n', ":4", "'instruction' must be non-empty text"),
    ("sep.json", '[{"prompt": "a"} {"prompt": "b"}]', ":1", "expected ',' or ']'"),
    ("tail.json", '[{"prompt": "a"}]\n\nmore', ":3", "text after the array"),
    ("two.jsonl", '{"prompt": "a", "instruction": "b"}\n', ":1", "exactly one of 'prompt', 'messages'"),
    ("input.jsonl", '{"prompt": "a", "input": "b"}\n', ":1", "'input' and 'output' go with 'instruction'"),
    ("nohuman.jsonl", '{"conversations": [{"from": "gpt", "value": "hi"}]}\n', ":1", "has no human turn"),
    ("speaker.jsonl", '{"conversations": [{"from": "robot", "value": "hi"}]}\n', ":1", "conversations[0] must be"),
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


# --- the shapes of the common instruction datasets, and tables ------------------------------------
ALPACA = [{"instruction": "Name a prime.", "input": "", "output": "Seven."},
          {"instruction": "Translate to French.", "input": "Good morning", "output": "Bonjour"}]
SHAREGPT = {"conversations": [{"from": "system", "value": "Be brief."}, {"from": "human", "value": "Hi"},
                              {"from": "gpt", "value": "Hello!"}, {"from": "human", "value": "2 + 2?"},
                              {"from": "gpt", "value": "4"}]}


def test_alpaca_json_array_and_sharegpt_rows(tmp_path: Path) -> None:
    import json

    p = tmp_path / "alpaca_data.json"
    p.write_text("[\n" + ",\n".join(json.dumps(r, indent=2) for r in ALPACA) + "\n]\n")
    rows = read(p)
    assert [r.messages for r in rows] == [[{"role": "user", "content": "Name a prime."}],
                                          [{"role": "user", "content": "Translate to French.\n\nGood morning"}]]
    assert [r.metadata for r in rows] == [{"reference": "Seven."}, {"reference": "Bonjour"}]   # kept, not sent
    assert [r.source for r in rows] == [f"{p}:2", f"{p}:7"]                  # where each row starts
    q = tmp_path / "share.jsonl"
    q.write_text(json.dumps(SHAREGPT) + "\n")
    (row,) = read(q)
    assert row.messages == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                            {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2 + 2?"}]
    assert row.metadata == {"reference": "4"}


def test_parquet_files_and_saved_hf_datasets(tmp_path: Path) -> None:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({"instruction": [r["instruction"] for r in ALPACA], "input": [r["input"] for r in ALPACA],
                      "output": [r["output"] for r in ALPACA], "category": ["math", "translation"]})
    pq.write_table(table, tmp_path / "alpaca.parquet")
    rows = read(tmp_path / "alpaca.parquet")
    assert rows[1].messages == [{"role": "user", "content": "Translate to French.\n\nGood morning"}]
    assert rows[1].metadata == {"category": "translation", "reference": "Bonjour"}    # other columns → metadata
    assert rows[1].source == f"{tmp_path / 'alpaca.parquet'}:row 2"

    chats = datasets.Dataset.from_list([{"messages": [{"role": "user", "content": f"Question {i}?"}], "n": i}
                                        for i in range(3)])
    chats.save_to_disk(str(tmp_path / "ds"))
    datasets.DatasetDict({"train": chats, "test": chats.select([0])}).save_to_disk(str(tmp_path / "dd"))
    for folder in ("ds", "dd"):
        rows = read(tmp_path / folder)                                           # a folder: a saved dataset
        assert [r.messages[-1]["content"] for r in rows] == ["Question 0?", "Question 1?", "Question 2?"]
        assert [r.metadata for r in rows] == [{"n": 0}, {"n": 1}, {"n": 2}]

    pq.write_table(pa.table({"text": ["no prompt column"]}), tmp_path / "plain.parquet")
    with pytest.raises(PromptSourceError, match="plain.parquet: the table needs a 'prompt'"):
        read(tmp_path / "plain.parquet")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(PromptSourceError, match="broken.parquet: not a readable Parquet file"):
        read(tmp_path / "broken.parquet")
    (tmp_path / "empty").mkdir()
    with pytest.raises(PromptSourceError, match="empty: not a dataset folder"):
        read(tmp_path / "empty")


def test_a_job_from_a_parquet_prompt_set_runs_and_exports(sim, tmp_path: Path) -> None:
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq
    import yaml
    from conftest import cli

    pq.write_table(pa.table({"instruction": [f"Explain topic {i}." for i in range(5)]}), tmp_path / "p.parquet")
    job = tmp_path / "job.yaml"
    job.write_text(yaml.safe_dump({"name": "pq", "prompts": [{"path": "p.parquet"}],
                                   "teacher": {"base_url": sim.url, "model": "sim-teacher", "api_key_env": None}}))
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    assert cli("export", str(job)).returncode == 0
    rows = [json.loads(line) for line in (tmp_path / "data" / "pq" / "train.jsonl").read_text().splitlines()]
    assert sorted(row["messages"][0]["content"] for row in rows) == [f"Explain topic {i}." for i in range(5)]
