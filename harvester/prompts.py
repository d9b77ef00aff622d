"""Prompt sets → job specs with stable ids. Every error names the file and the line.

A row is one of four shapes: `prompt` (text), `messages` (chat turns), `instruction` with an optional
`input` (Alpaca; Dolly's `context`), or `conversations` (ShareGPT: `from`/`value` turns, the request
being every turn up to the last human one); optional `system`, `id`, `metadata`. An answer already in
the row (Alpaca's `output`, Dolly's `response`, ShareGPT's last `gpt` turn) is kept as
`metadata.reference`, not sent. Other keys (Dolly's `category`, a dataset's own columns) are metadata.

Files:
- JSONL: one row a line. JSON: an array of rows (Alpaca's `alpaca_data.json`).
- YAML: `template` + `variables` (lists expand as a product), a list of `templates`, and/or a
  list of literal `prompts` (strings or rows); an optional top-level `system`.
- CSV, Parquet, a local HF dataset (a `save_to_disk` folder): a table whose columns name the row's
  keys (`messages`/`conversations` as JSON text in CSV); other columns → metadata.
"""

from __future__ import annotations

import csv
import difflib
import io
import itertools
import json
import string
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Job, PromptSet
from .errors import PromptSourceError
from .hashing import content_hash
from .store.rows import JobSpec

ROLES = {"system", "user", "assistant"}
SHAPES = ("prompt", "messages", "instruction", "conversations")
ROW_KEYS = {*SHAPES, "input", "output", "system", "id", "metadata"}
# Dolly's names for Alpaca's `input` and `output` (its `category`, like any other key, is metadata)
DOLLY = {"context": "input", "response": "output"}
# ShareGPT speakers as written by the datasets that use the format
_SPEAKERS = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "chatgpt": "assistant",
             "bard": "assistant", "bing": "assistant", "model": "assistant", "system": "system"}


@dataclass(slots=True)
class Prompt:
    """One prompt as read from a file, before samples and the model make it a job."""

    messages: list[dict[str, str]]
    source: str                                   # "file:line"
    metadata: dict[str, Any] = field(default_factory=dict)


def plan(job: Job, counts: list[int] | None = None) -> Iterator[JobSpec]:
    """Every job spec of a job file, in a deterministic order (file order × samples). `counts`, if
    given (one per prompt set), counts the prompts read from each set, for the plan's description."""
    seq = 0
    for index, prompt_set in enumerate(job.prompts):
        for prompt in read_prompt_set(prompt_set):
            if counts is not None:
                counts[index] += 1
            prompt_key = content_hash(prompt.messages)
            for sample in range(prompt_set.samples):
                request = {"model": job.teacher.model, "messages": prompt.messages,
                           "params": job.teacher.params}
                job_id = content_hash({**request, "sample": sample})
                yield JobSpec(job_id, prompt_key, seq, sample, request, prompt.source, prompt.metadata)
                seq += 1


def read_prompt_set(prompt_set: PromptSet) -> Iterator[Prompt]:
    path = prompt_set.path
    kind = prompt_set.format
    if kind == "auto":
        kind = "hf" if path.is_dir() else {
            ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".yaml": "yaml", ".yml": "yaml",
            ".csv": "csv", ".parquet": "parquet"}.get(path.suffix.lower(), "")
        if not kind:
            raise PromptSourceError(f"{path}: unknown prompt file type {path.suffix!r} (use .jsonl, .json, "
                                    ".yaml, .csv, .parquet, a save_to_disk folder, or set format)")
    if kind in ("parquet", "hf"):
        from .prompt_tables import read_hf_dataset, read_parquet
        prompts = (read_parquet if kind == "parquet" else read_hf_dataset)(path)
    else:
        reader = {"jsonl": _read_jsonl, "json": _read_json, "yaml": _read_yaml, "csv": _read_csv}[kind]
        prompts = reader(_read_text(path), str(path))
    count = 0
    try:
        for prompt in prompts:
            count += 1
            yield prompt
    except RecursionError:  # JSON nested thousands deep, or a YAML alias that contains itself
        raise PromptSourceError(f"{path}: nested too deeply (or a YAML alias refers to itself)") from None
    if count == 0:
        raise PromptSourceError(f"{path}: no prompts in this file")


def _read_text(path: Path) -> str:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise PromptSourceError(f"{path}: no such prompt file") from None
    except OSError as e:
        raise PromptSourceError(f"{path}: cannot read ({e.strerror})") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise PromptSourceError(f"{path}:{line}: not UTF-8 (byte {raw[e.start]:#04x})") from None


def row_to_prompt(row: Any, where: str, system: str | None = None) -> Prompt:
    """A JSONL/YAML row (`prompt` or `messages`, optional `system`, `id`, `metadata`) → Prompt."""
    if isinstance(row, str):
        row = {"prompt": row}
    if not isinstance(row, dict):
        raise PromptSourceError(f"{where}: expected an object with 'prompt' or 'messages', "
                                f"got {type(row).__name__}")
    row, extra = _split_extra(row, where)
    if sum(k in row for k in SHAPES) != 1:
        found = f" (this row has {sorted(map(str, [*row, *extra]))})"
        raise PromptSourceError(f"{where}: give exactly one of 'prompt', 'messages', 'instruction' (Alpaca, "
                                f"Dolly) or 'conversations' (ShareGPT){found}")
    if "instruction" not in row and ("input" in row or "output" in row):
        raise PromptSourceError(f"{where}: 'input' and 'output' go with 'instruction'")
    system = row.get("system", system)
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise PromptSourceError(f"{where}: 'system' must be non-empty text")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PromptSourceError(f"{where}: 'metadata' must be an object")
    metadata = {**extra, **metadata}
    try:  # the store keeps it as JSON: a YAML date or set would fail there, far from this line
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise PromptSourceError(f"{where}: 'metadata' must hold plain JSON values ({e})") from None
    if "id" in row:
        if not isinstance(row["id"], (str, int)):
            raise PromptSourceError(f"{where}: 'id' must be text or a number")
        metadata = {**metadata, "id": row["id"]}
    reference = None
    if "prompt" in row:
        messages = [{"role": "user", "content": _text(row, "prompt", where)}]
    elif "instruction" in row:
        extra = _text(row, "input", where, optional=True)
        instruction = _text(row, "instruction", where)
        messages = [{"role": "user", "content": f"{instruction}\n\n{extra}" if extra else instruction}]
        reference = _text(row, "output", where, optional=True)
    elif "conversations" in row:
        messages, reference = _sharegpt(row["conversations"], where)
    else:
        messages = _check_messages(row["messages"], where)
    if reference:
        metadata = {**metadata, "reference": reference}
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return Prompt(messages, where, metadata)


def _split_extra(row: dict[Any, Any], where: str) -> tuple[dict[Any, Any], dict[str, Any]]:
    """A row's own keys (Dolly's renamed to Alpaca's), and the others, which become metadata as a
    table's other columns do. A key one letter off a row key the row lacks is a typo, not metadata:
    `promt` or `sytem` kept as metadata would send the wrong request without a word."""
    row = dict(row)
    if "instruction" in row:
        for dolly, alpaca in DOLLY.items():
            if dolly in row and alpaca not in row:
                row[alpaca] = row.pop(dolly)
    extra = {str(k): v for k, v in row.items() if k not in ROW_KEYS}
    missing = sorted(ROW_KEYS - row.keys())
    for key in extra:
        close = difflib.get_close_matches(key, missing, n=1, cutoff=0.85)
        if close:
            raise PromptSourceError(f"{where}: unknown key {key!r}; did you mean {close[0]!r}? (put it under "
                                    "'metadata' if it is meant as data)")
    return {k: v for k, v in row.items() if k in ROW_KEYS}, extra


def _text(row: dict[Any, Any], key: str, where: str, *, optional: bool = False) -> str:
    value = row.get(key)
    if optional and (value is None or (isinstance(value, str) and not value.strip())):
        return ""
    if not isinstance(value, str) or not value.strip():
        raise PromptSourceError(f"{where}: '{key}' must be {'text' if optional else 'non-empty text'}")
    return value


def _sharegpt(turns: Any, where: str) -> tuple[list[dict[str, str]], str | None]:
    """ShareGPT turns → the request (every turn up to the last human one) and the answer after it."""
    if not isinstance(turns, list) or not turns:
        raise PromptSourceError(f"{where}: 'conversations' must be a non-empty list")
    messages = []
    for i, t in enumerate(turns):
        role = _SPEAKERS.get(str(t.get("from", "")).lower()) if isinstance(t, dict) else None
        if role is None or set(t) - {"from", "value", "weight"} or not isinstance(t.get("value"), str) \
                or not t["value"].strip():
            raise PromptSourceError(f"{where}: conversations[{i}] must be {{from: human|gpt|system, "
                                    "value: non-empty text}")
        messages.append({"role": role, "content": t["value"]})
    reference = None
    while messages and messages[-1]["role"] == "assistant":
        reference = reference or messages[-1]["content"]   # the last answer, the one a student learns from
        messages.pop()
    if not messages:
        raise PromptSourceError(f"{where}: 'conversations' has no human turn")
    return _check_messages(messages, where), reference


def _check_messages(messages: Any, where: str) -> list[dict[str, str]]:
    if not isinstance(messages, list) or not messages:
        raise PromptSourceError(f"{where}: 'messages' must be a non-empty list")
    out = []
    for i, m in enumerate(messages):
        if (not isinstance(m, dict) or set(m) != {"role", "content"} or m["role"] not in ROLES
                or not isinstance(m["content"], str) or not m["content"].strip()):
            raise PromptSourceError(f"{where}: messages[{i}] must be {{role: system|user|assistant, "
                                    "content: non-empty text}")
        out.append({"role": m["role"], "content": m["content"]})
    if out[-1]["role"] != "user":
        raise PromptSourceError(f"{where}: the last message must be the user's")
    return out


def _read_jsonl(text: str, name: str) -> Iterator[Prompt]:
    # Only "\n" ends a JSONL line: str.splitlines() would also split on U+2028, U+0085 and other
    # characters that JSON allows unescaped inside a string.
    for lineno, line in enumerate(text.split("\n"), 1):
        line = line.removesuffix("\r")
        if not line.strip():
            continue
        where = f"{name}:{lineno}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise PromptSourceError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(row, dict):
            raise PromptSourceError(f"{where}: each line must be a JSON object")
        yield row_to_prompt(row, where)


def _read_json(text: str, name: str) -> Iterator[Prompt]:
    """A JSON array of rows, each error at the line where its row starts."""
    decoder = json.JSONDecoder()
    line, counted = 1, 0

    def at(i: int) -> int:  # the line of text[i], counted incrementally (rows come in order)
        nonlocal line, counted
        line += text.count("\n", counted, i)
        counted = i
        return line

    def skip(i: int) -> int:
        while i < len(text) and text[i] in " \t\r\n":
            i += 1
        return i

    pos = skip(0)
    if not text.startswith("[", pos):
        raise PromptSourceError(f"{name}:{at(pos)}: expected a JSON array of rows (or use .jsonl, a row a line)")
    pos = skip(pos + 1)
    closed = text.startswith("]", pos)
    while not closed:
        try:
            row, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as e:
            raise PromptSourceError(f"{name}:{e.lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
        yield row_to_prompt(row, f"{name}:{at(pos)}")
        pos = skip(end)
        if text.startswith(",", pos):
            pos = skip(pos + 1)
        elif text.startswith("]", pos):
            closed = True
        else:
            raise PromptSourceError(f"{name}:{at(pos)}: expected ',' or ']' after a row")
    if skip(pos + 1) < len(text):
        raise PromptSourceError(f"{name}:{at(skip(pos + 1))}: text after the array")


def _read_csv(text: str, name: str) -> Iterator[Prompt]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        need_a_shape(reader.fieldnames or [], f"{name}:1: the header")
        for row in reader:
            yield table_row(row, f"{name}:{reader.line_num}")
    except csv.Error as e:  # e.g. a field longer than csv.field_size_limit(); in the row after the last read
        raise PromptSourceError(f"{name}:{reader.line_num + 1}: not valid CSV ({e})") from None


def need_a_shape(columns: Iterable[Any], what: str) -> None:
    if not set(columns) & set(SHAPES):
        raise PromptSourceError(f"{what} needs a 'prompt', 'messages', 'instruction' or 'conversations' column")


def table_row(values: dict[Any, Any], where: str) -> Prompt:
    """A row of a table (CSV, Parquet, HF dataset): columns named like a row's keys make the row (chat
    turns may be JSON text), empty cells are absent, other columns go to metadata."""
    data: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    for key, value in values.items():
        if key is None or value is None or value == "":
            continue
        if key in ("messages", "conversations") and isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                raise PromptSourceError(f"{where}: '{key}' is not valid JSON") from None
        if key == "metadata" and isinstance(value, dict):
            meta.update({str(k): _plain(v) for k, v in value.items()})
        elif (key in ROW_KEYS or key in DOLLY) and key != "metadata":
            data[key] = value
        else:
            meta[str(key)] = _plain(value)
    if meta:
        data["metadata"] = meta
    return row_to_prompt(data, where)


def _plain(value: Any) -> Any:
    """A cell as a JSON value the store can keep (dates and bytes as text, NaN as null)."""
    try:
        return json.loads(json.dumps(value, default=str, allow_nan=False))
    except ValueError:
        return None


# --- YAML, with line numbers -------------------------------------------------------------

class _LineLoader(yaml.SafeLoader):
    """Records the line of every mapping under the key `__line__`, and of each of its keys under `__keys__`."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        mapping["__keys__"] = {k.value: k.start_mark.line + 1 for k, _ in node.value if isinstance(k, yaml.ScalarNode)}
        return mapping


_MARKS = ("__line__", "__keys__")


def _line_of(mapping: dict[Any, Any], *keys: Any) -> int:
    """The line of the first of `keys` present in a loaded mapping, else of the mapping itself."""
    lines = mapping.get("__keys__", {})
    return next((lines[k] for k in keys if k in lines), mapping.get("__line__", 1))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _LineLoader.construct_mapping)


def _strip_lines(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_lines(v) for k, v in value.items() if k not in _MARKS}
    if isinstance(value, list):
        return [_strip_lines(v) for v in value]
    return value


def _read_yaml(text: str, name: str) -> Iterator[Prompt]:
    try:
        doc = yaml.load(text, Loader=_LineLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = mark.line + 1 if mark is not None else 1
        raise PromptSourceError(f"{name}:{line}: invalid YAML ({getattr(e, 'problem', e)})") from None
    if doc is None:
        return
    if not isinstance(doc, dict):
        raise PromptSourceError(f"{name}:1: expected a mapping with 'template', 'templates' or 'prompts'")
    known = {*_MARKS, "system", "template", "variables", "templates", "prompts", "metadata"}
    unknown = sorted(map(str, set(doc) - known))
    if unknown:
        raise PromptSourceError(f"{name}:{_line_of(doc, *unknown)}: unknown key(s) {unknown}")
    system = doc.get("system")
    if not isinstance(doc.get("templates") or [], list):
        raise PromptSourceError(f"{name}:{_line_of(doc, 'templates')}: 'templates' must be a list")
    templates = list(doc.get("templates") or [])
    if "template" in doc:
        templates.insert(0, {k: doc[k] for k in ("template", "variables", "metadata", *_MARKS) if k in doc})
    elif "variables" in doc:
        raise PromptSourceError(f"{name}:{_line_of(doc, 'variables')}: 'variables' without a 'template'")
    for t in templates:
        yield from _expand_template(t, name, system)
    prompts = doc.get("prompts") or []
    if not isinstance(prompts, list):
        raise PromptSourceError(f"{name}:{_line_of(doc, 'prompts')}: 'prompts' must be a list")
    for i, row in enumerate(prompts):
        line = row.get("__line__") if isinstance(row, dict) else None
        yield row_to_prompt(_strip_lines(row), f"{name}:{line or doc['__line__']}" if line
                            else f"{name}:prompts[{i}]", system)


def _expand_template(t: Any, name: str, system: str | None) -> Iterator[Prompt]:
    if not isinstance(t, dict) or "template" not in t:
        raise PromptSourceError(f"{name}: each entry of 'templates' needs a 'template'")
    where = f"{name}:{_line_of(t, 'template')}"  # the line of each prompt it makes, and of its errors
    unknown = sorted(map(str, set(t) - {*_MARKS, "template", "variables", "system", "metadata"}))
    if unknown:
        raise PromptSourceError(f"{name}:{_line_of(t, *unknown)}: unknown key(s) {unknown} in a template")
    template = t["template"]
    if not isinstance(template, str) or not template.strip():
        raise PromptSourceError(f"{where}: 'template' must be non-empty text")
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as e:
        raise PromptSourceError(f"{where}: bad template ({e}); write {{{{ and }}}} for literal braces") from None
    at_variables = f"{name}:{_line_of(t, 'variables')}"
    raw_variables = t.get("variables") or {}
    variables = _strip_lines(raw_variables)
    if not isinstance(variables, dict):
        raise PromptSourceError(f"{at_variables}: 'variables' must map names to lists of values")
    for f in fields:
        if not f.isidentifier():
            raise PromptSourceError(f"{where}: template field {{{f}}} must be a plain name")
        if f not in variables:
            raise PromptSourceError(f"{where}: template variable {{{f}}} has no values")
    names = list(dict.fromkeys(fields))
    unused = set(variables) - set(names)
    if unused:
        raise PromptSourceError(f"{at_variables}: variable(s) {sorted(map(str, unused))} are not used in the template")
    values: list[list[str]] = []
    for n in names:
        v = variables[n]
        v = v if isinstance(v, list) else [v]
        if not v or any(isinstance(x, (dict, list)) or x is None for x in v):
            raise PromptSourceError(f"{name}:{_line_of(raw_variables, n)}: variable {n!r} needs a non-empty list "
                                    "of plain values")
        values.append([str(x) for x in v])
    metadata = _strip_lines(t.get("metadata") or {})
    if not isinstance(metadata, dict):
        raise PromptSourceError(f"{name}:{_line_of(t, 'metadata')}: 'metadata' must be an object")
    for combo in itertools.product(*values):
        bound = dict(zip(names, combo))
        try:  # a format spec may name another field ({a:>{w}}) or not suit text ({a:d})
            text = template.format(**bound)
        except (KeyError, IndexError, ValueError, TypeError, AttributeError) as e:
            raise PromptSourceError(f"{where}: bad template ({type(e).__name__}: {e})") from None
        yield row_to_prompt({"prompt": text, "metadata": {**metadata, "vars": bound},
                             **({"system": t["system"]} if "system" in t else {})}, where, system)
