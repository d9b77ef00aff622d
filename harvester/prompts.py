"""Prompt sets → job specs with stable ids. Every error names the file and the line.

Formats:
- JSONL: one object a line with `prompt` (text) or `messages` (chat turns); optional `system`, `id`, `metadata`.
- YAML: `template` + `variables` (lists expand as a product), a list of `templates`, and/or a
  list of literal `prompts` (strings or objects shaped like a JSONL row); an optional top-level `system`.
- CSV: a header row with `prompt` (or `messages` as JSON); optional `system`, `id`; other columns → metadata.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import string
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .config import Job, PromptSet
from .errors import PromptSourceError
from .hashing import content_hash

ROLES = {"system", "user", "assistant"}
ROW_KEYS = {"prompt", "messages", "system", "id", "metadata"}


@dataclass(slots=True)
class Prompt:
    """One prompt as read from a file, before samples and the model make it a job."""

    messages: list[dict[str, str]]
    source: str                                   # "file:line"
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class JobSpec:
    """One request to send: stable `id` = hash(messages, model, params, sample index)."""

    id: str
    prompt_key: str
    seq: int
    sample_index: int
    request: dict[str, Any]                       # {"model", "messages", "params"}
    source: str
    metadata: dict[str, Any]


def plan(job: Job) -> Iterator[JobSpec]:
    """Every job spec of a job file, in a deterministic order (file order × samples)."""
    seq = 0
    for prompt_set in job.prompts:
        for prompt in read_prompt_set(prompt_set):
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
        kind = {".jsonl": "jsonl", ".ndjson": "jsonl", ".yaml": "yaml", ".yml": "yaml",
                ".csv": "csv"}.get(path.suffix.lower(), "")
        if not kind:
            raise PromptSourceError(f"{path}: unknown prompt file type {path.suffix!r} "
                                    "(use .jsonl, .yaml, .csv or set format)")
    text = _read_text(path)
    reader = {"jsonl": _read_jsonl, "yaml": _read_yaml, "csv": _read_csv}[kind]
    count = 0
    try:
        for prompt in reader(text, str(path)):
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
    unknown = set(row) - ROW_KEYS
    if unknown:  # YAML keys may be numbers: sort their text
        raise PromptSourceError(f"{where}: unknown key(s) {sorted(map(str, unknown))}; "
                                f"allowed: {sorted(ROW_KEYS)}")
    if ("prompt" in row) == ("messages" in row):
        raise PromptSourceError(f"{where}: give exactly one of 'prompt' or 'messages'")
    system = row.get("system", system)
    if system is not None and (not isinstance(system, str) or not system.strip()):
        raise PromptSourceError(f"{where}: 'system' must be non-empty text")
    metadata = row.get("metadata", {})
    if not isinstance(metadata, dict):
        raise PromptSourceError(f"{where}: 'metadata' must be an object")
    try:  # the store keeps it as JSON: a YAML date or set would fail there, far from this line
        json.dumps(metadata)
    except (TypeError, ValueError) as e:
        raise PromptSourceError(f"{where}: 'metadata' must hold plain JSON values ({e})") from None
    if "id" in row:
        if not isinstance(row["id"], (str, int)):
            raise PromptSourceError(f"{where}: 'id' must be text or a number")
        metadata = {**metadata, "id": row["id"]}
    if "prompt" in row:
        if not isinstance(row["prompt"], str) or not row["prompt"].strip():
            raise PromptSourceError(f"{where}: 'prompt' must be non-empty text")
        messages = [{"role": "user", "content": row["prompt"]}]
    else:
        messages = _check_messages(row["messages"], where)
    if system is not None and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": system}, *messages]
    return Prompt(messages, where, metadata)


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


def _read_csv(text: str, name: str) -> Iterator[Prompt]:
    reader = csv.DictReader(io.StringIO(text))
    try:
        fields = reader.fieldnames or []
        if "prompt" not in fields and "messages" not in fields:
            raise PromptSourceError(f"{name}:1: the header needs a 'prompt' or 'messages' column")
        yield from _csv_rows(reader, name)
    except csv.Error as e:  # e.g. a field longer than csv.field_size_limit(); in the row after the last read
        raise PromptSourceError(f"{name}:{reader.line_num + 1}: not valid CSV ({e})") from None


def _csv_rows(reader: csv.DictReader[str], name: str) -> Iterator[Prompt]:
    for row in reader:
        where = f"{name}:{reader.line_num}"
        data: dict[str, Any] = {}
        meta = {k: v for k, v in row.items() if k not in ROW_KEYS and k is not None and v != ""}
        if row.get("prompt"):
            data["prompt"] = row["prompt"]
        if row.get("messages"):
            try:
                data["messages"] = json.loads(row["messages"])
            except json.JSONDecodeError:
                raise PromptSourceError(f"{where}: 'messages' is not valid JSON") from None
        for key in ("system", "id"):
            if row.get(key):
                data[key] = row[key]
        if meta:
            data["metadata"] = meta
        yield row_to_prompt(data, where)


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
