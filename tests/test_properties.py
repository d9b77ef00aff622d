"""Property-based tests (hypothesis) of prompt parsing and of the export's filters, dedup and formats.

Prompt parsing: whatever bytes a prompt file holds, reading it yields prompts or raises
PromptSourceError naming the file (never another exception, which the CLI would show as a crash);
text survives a round trip through each format; job ids are stable (the same prompt gives the same
id whatever its file, line, position or metadata) and distinct prompts get distinct ids.
Export: every filter verdict is a known reason or None, deterministic and counted; exact dedup keeps
the first of each group in order and is idempotent; every format makes a valid, JSON-ready row.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from export_path import counts, export_reasons
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from openai_rows import validate_openai_row

from harvester.config import PromptSet, job_from_dict
from harvester.errors import PromptSourceError
from harvester.export.filters import REASONS, FilterConfig, filter_reason
from harvester.export.formats import FORMATS
from harvester.hashing import content_hash
from harvester.prompts import plan, read_prompt_set
from harvester.store.rows import Record

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_TMP = Path(tempfile.mkdtemp(prefix="harvester-props-"))

# Text a user might put in a prompt: any character but surrogates (not encodable as UTF-8).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=60)
nonblank = text.filter(lambda s: s.strip() != "")
json_scalar = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | text
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=4)
                          | st.dictionaries(text, inner, max_size=4), max_leaves=12)
ROW_KEYS = ["prompt", "messages", "instruction", "input", "output", "conversations", "system", "id", "metadata"]
row_key = st.sampled_from(ROW_KEYS) | text
# Rows near the valid shape: right keys, any values; messages with right and wrong parts.
message = st.fixed_dictionaries({"role": st.sampled_from(["user", "assistant", "system", "robot"]),
                                 "content": json_value})
turn = st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system", "robot"]), "value": json_value})
row = st.dictionaries(row_key, json_value | st.lists(message, max_size=3) | st.lists(turn, max_size=3),
                      max_size=4) | json_value


def write(name: str, data: bytes) -> Path:
    path = _TMP / name
    path.write_bytes(data)
    return path


def read_all(path: Path, fmt: str = "auto") -> list[Any] | PromptSourceError:
    """The prompts of a file, or the PromptSourceError it raised: never anything else."""
    try:
        return list(read_prompt_set(PromptSet(path=path, format=fmt)))
    except PromptSourceError as e:
        assert str(path) in str(e)                  # names the file (and the line, where there is one)
        return e


# --- never anything but PromptSourceError ---------------------------------------------------

@SETTINGS
@given(data=st.binary(max_size=300), fmt=st.sampled_from(["jsonl", "json", "yaml", "csv"]))
@example(data=b'{"prompt": "caf\xe9"}\n', fmt="jsonl")
@example(data=b"\xef\xbb\xbf" + b'{"prompt": "with a BOM"}\n', fmt="jsonl")
def test_arbitrary_bytes_parse_or_raise_prompt_source_error(data: bytes, fmt: str) -> None:
    read_all(write(f"bytes.{fmt}", data))


@SETTINGS
@given(rows=st.lists(row, max_size=5), blank_lines=st.booleans())
def test_jsonl_rows_of_any_shape_parse_or_raise_prompt_source_error(rows: list[Any], blank_lines: bool) -> None:
    sep = "\n\n" if blank_lines else "\n"
    got = read_all(write("rows.jsonl", sep.join(json.dumps(r, ensure_ascii=False) for r in rows).encode()))
    if isinstance(got, list):
        assert all(p.messages and p.messages[-1]["role"] == "user" for p in got)


@SETTINGS
@given(rows=st.lists(row, max_size=5), indent=st.none() | st.integers(0, 2))
def test_json_arrays_of_any_rows_parse_or_raise_prompt_source_error(rows: list[Any], indent: int | None) -> None:
    got = read_all(write("rows.json", json.dumps(rows, ensure_ascii=False, indent=indent).encode()))
    if isinstance(got, list):
        assert all(p.messages and p.messages[-1]["role"] == "user" for p in got)


yaml_doc = st.dictionaries(
    st.sampled_from(["system", "template", "variables", "templates", "prompts", "metadata"]) | json_scalar,
    json_value | st.lists(row, max_size=3) | st.dictionaries(text, st.lists(json_scalar, max_size=3), max_size=3),
    max_size=4)


@SETTINGS
@given(doc=yaml_doc | json_value)
@example(doc={"templates": 3})
@example(doc={"template": "x {a}", "variables": {"a": [1]}, "metadata": 5})
@example(doc={"template": "x {a:>{b}}", "variables": {"a": [1]}})
@example(doc={"template": "x {a:d}", "variables": {"a": ["v"]}})
@example(doc={"template": "x {b}", "variables": {1: ["x"], "b": ["y"], "z": ["w"]}})
@example(doc={1: "x", "foo": "y"})
@example(doc={"prompts": [{"prompt": "hi", 1: 2, "z": 3}]})
def test_yaml_documents_of_any_shape_parse_or_raise_prompt_source_error(doc: Any) -> None:
    read_all(write("doc.yaml", yaml.safe_dump(doc, allow_unicode=True).encode()))


@SETTINGS
@given(text=st.text(max_size=200))
@example(text="a: &a [*a]\n")
@example(text="prompts: &a [*a]\n")
@example(text="prompts:\n  - {prompt: hi, metadata: {when: 2024-01-01}}\n")
@example(text="template: '{a}'\nvariables: {a: !!set {x, y}}\n")
def test_yaml_text_parses_or_raises_prompt_source_error(text: str) -> None:
    got = read_all(write("text.yaml", text.encode("utf-8", "surrogatepass")))
    if isinstance(got, list):  # whatever was read, the store can keep as JSON
        for p in got:
            json.dumps({"messages": p.messages, "metadata": p.metadata})


@SETTINGS
@given(table=st.lists(st.lists(text, min_size=1, max_size=4), max_size=5),
       header=st.lists(st.sampled_from(ROW_KEYS) | text, min_size=1, max_size=4))
def test_csv_tables_parse_or_raise_prompt_source_error(table: list[list[str]], header: list[str]) -> None:
    out = io.StringIO()
    csv.writer(out).writerows([header, *table])
    read_all(write("table.csv", out.getvalue().encode("utf-8", "surrogatepass")))


def test_a_csv_field_over_the_csv_limit_names_its_line() -> None:
    got = read_all(write("long.csv", ("prompt\nshort\n" + "x" * 200_000 + "\n").encode()))
    assert isinstance(got, PromptSourceError) and "long.csv:3: not valid CSV" in str(got)


def test_json_nested_too_deeply_is_an_error_not_a_crash() -> None:
    got = read_all(write("deep.jsonl", b'{"prompt": "x", "metadata": {"a": ' + b"[" * 100_000 + b"\n"))
    assert isinstance(got, PromptSourceError)


# --- text survives every format -----------------------------------------------------------

@SETTINGS
@given(prompts=st.lists(nonblank, min_size=1, max_size=5), ascii_only=st.booleans())
@example(prompts=["a\u2028b", "c\x85d", "e\u2029f\x0cg"], ascii_only=False)
def test_jsonl_round_trip(prompts: list[str], ascii_only: bool) -> None:
    body = "".join(json.dumps({"prompt": p}, ensure_ascii=ascii_only) + "\n" for p in prompts)
    got = read_all(write("rt.jsonl", body.encode()))
    assert not isinstance(got, PromptSourceError), got
    assert [p.messages for p in got] == [[{"role": "user", "content": p}] for p in prompts]


# YAML itself folds its other line breaks (U+0085, U+2028, U+2029) in scalars: not ours to test.
yaml_text = st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x85\u2028\u2029"),
                    max_size=60).filter(lambda s: s.strip() != "")


@SETTINGS
@given(prompts=st.lists(yaml_text, min_size=1, max_size=5))
def test_yaml_literal_prompts_round_trip(prompts: list[str]) -> None:
    got = read_all(write("rt.yaml", yaml.safe_dump({"prompts": prompts}, allow_unicode=True).encode()))
    assert not isinstance(got, PromptSourceError), got
    assert [p.messages[0]["content"] for p in got] == prompts


@SETTINGS
@given(values=st.dictionaries(st.sampled_from(["a", "b", "c"]), st.lists(nonblank, min_size=1, max_size=3),
                              min_size=1, max_size=3))
def test_yaml_templates_expand_to_the_product(values: dict[str, list[str]]) -> None:
    template = "Q: " + " / ".join("{" + k + "}" for k in values)
    doc = {"template": template, "variables": values}
    got = read_all(write("tpl.yaml", yaml.safe_dump(doc, allow_unicode=True).encode()))
    assert not isinstance(got, PromptSourceError), got
    n = 1
    for v in values.values():
        n *= len(v)
    assert len(got) == n
    assert all(p.messages[0]["content"] == template.format(**p.metadata["vars"]) for p in got)


# --- job ids are stable --------------------------------------------------------------------

def _ids(lines: list[dict[str, Any]], name: str, samples: int = 1, params: dict | None = None) -> list[str]:
    folder = _TMP / name
    folder.mkdir(exist_ok=True)
    (folder / "p.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    job = job_from_dict({"name": "props", "teacher": {"model": "m", "params": params or {}},
                         "prompts": [{"path": "p.jsonl", "samples": samples}]}, base=folder)
    return [s.id for s in plan(job)]


@SETTINGS
@given(prompts=st.lists(nonblank, min_size=1, max_size=6, unique=True), data=st.data())
def test_job_ids_depend_on_the_request_only(prompts: list[str], data: st.DataObject) -> None:
    rows = [{"prompt": p} for p in prompts]
    ids = _ids(rows, "a")
    assert ids == _ids(rows, "a")                                     # stable across plans
    assert len(set(ids)) == len(ids)                                  # distinct prompts, distinct ids
    order = data.draw(st.permutations(range(len(rows))))
    moved = [{**rows[i], "id": f"x{i}", "metadata": {"k": i}} for i in order]
    assert _ids(moved, "b") == [ids[i] for i in order]                # not the line, file, id or metadata
    assert ids[0] == content_hash({"model": "m", "messages": [{"role": "user", "content": prompts[0]}],
                                   "params": {}, "sample": 0})
    two = _ids(rows, "c", samples=2)
    assert two[0::2] == ids and not set(two[1::2]) & set(ids)         # sample 0 keeps its id
    assert not set(_ids(rows, "d", params={"temperature": 0.3})) & set(ids)  # a changed parameter: new jobs


# --- export filters, dedup and formats -------------------------------------------------------

messages = st.lists(st.fixed_dictionaries({"role": st.sampled_from(["system", "user", "assistant"]),
                                           "content": nonblank}), max_size=3).map(
    lambda ms: [m for i, m in enumerate(ms) if m["role"] != "system" or i == 0])
answers = text | st.sampled_from(["As an AI language model, I cannot", "N/A", "2. second item", "...",
                                  "word " * 40, "x" * 150, "line\n" * 8, ""])
record = st.builds(
    lambda ms, user, answer, finish, tokens, i: Record(
        job_id=f"j{i}", prompt_key="k", seq=i, sample_index=0,
        messages=[*ms, {"role": "user", "content": user}], answer=answer, finish_reason=finish,
        completion_tokens=tokens),
    messages, nonblank, answers, st.sampled_from([None, "stop", "length", "content_filter"]),
    st.none() | st.integers(0, 40000), st.integers(0, 10**6))
configs = st.builds(FilterConfig, truncated=st.booleans(), empty=st.booleans(),
                    min_tokens=st.none() | st.integers(0, 50), max_tokens=st.none() | st.integers(1, 50000),
                    refusal=st.booleans(), placeholder=st.booleans(), list_numbering=st.booleans(),
                    repetition=st.booleans(), prompt_echo=st.booleans(),
                    refusal_window=st.none() | st.integers(1, 200))
ALL_OFF = FilterConfig(truncated=False, empty=False, min_tokens=None, max_tokens=None, refusal=False,
                       placeholder=False, list_numbering=False, repetition=False, prompt_echo=False)


@SETTINGS
@given(records=st.lists(record, max_size=8), cfg=configs)
def test_filters_give_a_known_reason_deterministically_and_count_it(records: list[Record], cfg: FilterConfig) -> None:
    records = [dataclasses.replace(r, seq=k) for k, r in enumerate(records)]   # the store's order
    reasons, decisions = export_reasons(records, filters=cfg)      # every record written or rejected
    assert all(r is None or r in REASONS for r in reasons)
    assert reasons == [filter_reason(r, cfg) for r in records]       # deterministic
    assert decisions.dropped == counts(reasons)                      # every drop counted by its reason
    assert all(filter_reason(r, ALL_OFF) is None for r in records)   # all off: nothing dropped
    assert export_reasons(records, filters=ALL_OFF)[0] == [None] * len(records)
    for r, reason in zip(records, reasons):
        if cfg.truncated and r.finish_reason == "length":
            assert reason == "truncated"
        if reason is not None:                                       # a filter only drops when it is on
            assert getattr(cfg, {"too_short": "min_tokens", "too_long": "max_tokens"}.get(
                reason, reason.split("_")[0] if reason.startswith("repetition") else reason)) not in (False, None)


@SETTINGS
@given(before=text, after=text, case=st.sampled_from([str.lower, str.upper, str.title, lambda s: s]))
def test_a_refusal_phrase_anywhere_is_found(before: str, after: str, case: Any) -> None:
    cfg = FilterConfig(truncated=False, empty=False, min_tokens=None, max_tokens=None, placeholder=False,
                       list_numbering=False, repetition=False, prompt_echo=False)
    answer = f"{before} {case('As an AI language model')}, {after}"
    r = Record(job_id="j", prompt_key="k", seq=0, sample_index=0,
               messages=[{"role": "user", "content": "q"}], answer=answer)
    assert filter_reason(r, cfg) == "refusal"


def _variants(r: Record, style: int) -> Record:
    """The same row up to case, spacing and punctuation: an exact duplicate for the export."""
    answer = [r.answer, r.answer.upper(), "  " + r.answer.replace(" ", "   ") + " !", r.answer + "."][style]
    return Record(job_id=r.job_id + f"v{style}", prompt_key=r.prompt_key, seq=r.seq, sample_index=1,
                  messages=r.messages, answer=answer)


@SETTINGS
@given(records=st.lists(record, max_size=8), data=st.data())
def test_exact_dedup_keeps_the_first_of_each_group_in_order(records: list[Record], data: st.DataObject) -> None:
    records = [dataclasses.replace(r, job_id=f"r{i}") for i, r in enumerate(records)]
    dupes = [_variants(r, data.draw(st.integers(0, 3))) for r in data.draw(st.lists(st.sampled_from(records),
                                                                                      max_size=4))] if records else []
    stream = [dataclasses.replace(r, seq=i) for i, r in enumerate(records + dupes)]   # the store's order
    reasons, decisions = export_reasons(stream, exact="prompt+answer")
    kept = [r.job_id for r, reason in zip(stream, reasons) if reason is None]
    assert len(kept) + decisions.dropped["exact_duplicate"] == len(stream)
    assert set(reasons) <= {None, "exact_duplicate"}
    assert not {d.job_id for d in dupes if d.answer.isascii()} & set(kept)   # case/space/punctuation folded
    assert kept == [r.job_id for r in stream if r.job_id in kept]    # order kept
    kept_records = [r for r, reason in zip(stream, reasons) if reason is None]
    again, decided = export_reasons(kept_records, exact="prompt+answer")
    assert again == [None] * len(kept_records) and not decided.dropped   # idempotent


@SETTINGS
@given(r=record.filter(lambda r: r.answer.strip() != ""))
def test_every_format_makes_a_valid_json_row(r: Record) -> None:
    rows = {name: to_row(r) for name, to_row in FORMATS.items()}
    for row in rows.values():
        assert json.loads(json.dumps(row, ensure_ascii=False)) == row
    if [m["role"] for m in r.messages if m["role"] != "system"] == ["user"]:
        assert validate_openai_row(rows["openai"]) == []
    assert rows["openai"]["messages"][-1] == {"role": "assistant", "content": r.answer}
    assert rows["alpaca"]["output"] == r.answer and rows["alpaca"]["instruction"] == r.messages[-1]["content"]
    assert rows["sharegpt"]["conversations"][-1] == {"from": "gpt", "value": r.answer}
    assert rows["trl"]["completion"] == [{"role": "assistant", "content": r.answer}]


def teardown_module() -> None:
    for path in sorted(_TMP.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() else path.unlink()
    os.rmdir(_TMP)
