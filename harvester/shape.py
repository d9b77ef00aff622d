"""Answers with a shape: a response schema, the request that asks for it, and every answer checked against it.

Pure: the schema is already loaded (harvester.shape_load reads files and imports models). A shape rides in
the job's stored request (`request["shape"]`), so it is part of the job's id, and every path an answer
comes by (the synchronous crawler, batch results, the export) checks it the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import jsonschema

from .hashing import canonical_json
from .providers.base import StructuredOutput

FROM_PARAMS = "teacher.params.response_format"   # the source of a shape the job file's params give

# What a shaped answer can be that makes it no answer: it does not parse, does not validate, or was cut off
INVALID_KINDS = ("invalid_json", "invalid_schema", "truncated_json")


@dataclass(frozen=True, slots=True)
class Shape:
    """A response schema: `name` (as OpenAI's json_schema.name wants it), the JSON Schema, where it came from."""

    name: str
    schema: dict[str, Any]
    source: str                      # a file's name, `module:Class`, or teacher.params.response_format
    strict: bool | None = None       # OpenAI's json_schema.strict, when the job file set it

    def stored(self) -> dict[str, Any]:
        """The shape as kept in a job's request (and hashed into its id)."""
        out: dict[str, Any] = {"name": self.name, "schema": self.schema, "source": self.source}
        if self.strict is not None:
            out["strict"] = self.strict
        return out


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why an answer is not one: `kind` one of INVALID_KINDS, `message` what is wrong, in words."""

    kind: str
    message: str


def schema_name(text: str) -> str:
    """A name OpenAI accepts for json_schema.name: letters, digits, _ and -, at most 64."""
    return (re.sub(r"[^A-Za-z0-9_-]+", "_", text).strip("_") or "answer")[:64]


def check_schema(schema: Any) -> str | None:
    """What is wrong with a JSON Schema (None: nothing): an object that its own metaschema accepts."""
    if not isinstance(schema, dict):
        return f"a JSON Schema is an object ({{\"type\": \"object\", ...}}), not {type(schema).__name__}"
    try:
        jsonschema.validators.validator_for(schema).check_schema(schema)
    except jsonschema.SchemaError as e:
        return f"not a valid JSON Schema: {e.message} (at {_path(e.absolute_path) or 'the top'})"
    return None


def from_response_format(value: Any) -> Shape | None:
    """The shape OpenAI's own `response_format` asks for: json_schema's schema, or any JSON object for
    json_object; None for text or a value this is not."""
    if not isinstance(value, dict):
        return None
    if value.get("type") == "json_object":
        return Shape("json_object", {"type": "object"}, FROM_PARAMS)
    spec = value.get("json_schema")
    if value.get("type") == "json_schema" and isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
        strict = spec.get("strict")
        return Shape(schema_name(str(spec.get("name") or "answer")), spec["schema"],
                     FROM_PARAMS, strict if isinstance(strict, bool) else None)
    return None


def instruction(shape: Shape) -> str:
    """The schema in words, for a provider without json_schema. DeepSeek's JSON mode wants the word
    "json" and the format in the prompt."""
    return ("Answer with one JSON object and nothing else: no prose, no code fences. It must validate against "
            f"this JSON Schema:\n{json.dumps(shape.schema, ensure_ascii=False, sort_keys=True)}")


def shaped_request(messages: list[dict[str, Any]], params: dict[str, Any], shape: Shape,
                   mode: StructuredOutput) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The messages and params that ask `mode`'s provider for `shape`: `response_format` json_schema where
    it takes one; else json_object (or nothing) and the schema in a system message (appended to the
    first one, if the prompt has one). What is sent is what is stored: the dataset shows the prompt asked.
    Either way the schema is in what is sent, so in the job's id (which leaves `request["shape"]` out)."""
    params = dict(params)
    own = shape.source == FROM_PARAMS
    if own and (mode == "json_schema" or params.get("response_format", {}).get("type") == "json_object"):
        return messages, params   # the job file's own response_format, sent as-is (as before it was enforced)
    if mode == "json_schema":
        spec: dict[str, Any] = {"name": shape.name, "schema": shape.schema}
        if shape.strict is not None:
            spec["strict"] = shape.strict
        params["response_format"] = {"type": "json_schema", "json_schema": spec}
        return messages, params
    if mode == "json_object":
        params["response_format"] = {"type": "json_object"}
    else:
        params.pop("response_format", None)   # not honoured there
    words = instruction(shape)
    if messages and messages[0].get("role") == "system":
        first = {**messages[0], "content": f"{messages[0].get('content', '')}\n\n{words}"}
        return [first, *messages[1:]], params
    return [{"role": "system", "content": words}, *messages], params


ModelCheck = Callable[[str], "str | None"]   # a Pydantic model's own validation of the text: what is wrong


def check_answer(shape: Shape | dict[str, Any], content: str, finish_reason: str | None,
                 models: Mapping[str, ModelCheck] | None = None) -> Any:
    """The parsed answer, or an `Invalid` saying what is wrong: cut off by max_tokens, not JSON, or not of
    the schema (the first few violations, each with its place in the object). A shape from a Pydantic
    model is also validated by the model itself (`models`, by source: its own validators count too)."""
    schema = shape.schema if isinstance(shape, Shape) else shape["schema"]
    if finish_reason == "length":
        return Invalid("truncated_json", "the answer was cut off by max_tokens (finish_reason: length): raise "
                       "teacher.params.max_tokens")
    if not content.strip():
        return Invalid("invalid_json", "the answer is blank")
    try:
        parsed = json.loads(content)
    except ValueError as e:
        return Invalid("invalid_json", f"the answer is not JSON ({e})")
    errors = sorted(_validator(canonical_json(schema)).iter_errors(parsed), key=lambda e: list(e.absolute_path))
    if errors:
        said = "; ".join(f"{_path(e.absolute_path) or 'the answer'}: {e.message}" for e in errors[:3])
        more = f" (and {len(errors) - 3} more)" if len(errors) > 3 else ""
        return Invalid("invalid_schema", f"the answer does not match the schema: {said}{more}")
    source = shape.source if isinstance(shape, Shape) else shape.get("source", "")
    model = models.get(source) if models else None
    problem = model(content) if model is not None else None
    if problem:
        return Invalid("invalid_schema", f"the answer does not validate as {source}: {problem}")
    return parsed


@lru_cache(maxsize=64)
def _validator(schema_json: str) -> Any:
    """One compiled validator per schema (keyed by its canonical JSON): a harvest checks thousands of answers."""
    schema = json.loads(schema_json)
    return jsonschema.validators.validator_for(schema)(schema)


def _path(path: Any) -> str:
    return "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in path).lstrip(".")
