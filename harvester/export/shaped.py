"""The export's columns for answers with a shape: `parsed` (the answer's JSON as an object) and `logprobs`
(the teacher's tokens, their logprobs and top-k), in Parquet and hf/ only: chat formats keep the raw JSON
text as the assistant's content, and OpenAI's upload format takes no extra keys.

`parsed` is a struct typed from the response schema when the export has one schema of plain objects,
arrays and scalars, so that a trainer reads fields, not text; JSON text otherwise (several schemas, free
objects, unions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from ..logprobs import as_rows, unpack
from ..shape import Invalid, Shape, check_answer
from ..store.rows import Record

_ALT = pa.struct([("token", pa.string()), ("logprob", pa.float64())])
LOGPROBS_TYPE = pa.list_(pa.struct([("token", pa.string()), ("logprob", pa.float64()), ("top", pa.list_(_ALT))]))
_SCALARS = {"string": pa.string(), "integer": pa.int64(), "number": pa.float64(), "boolean": pa.bool_()}


def arrow_type(schema: dict[str, Any], depth: int = 0) -> pa.DataType | None:
    """The Arrow type of a JSON Schema's values, None where no one type holds them all."""
    if depth > 16 or any(k in schema for k in ("anyOf", "oneOf", "allOf", "$ref", "not", "patternProperties")):
        return None
    kind = schema.get("type")
    if "enum" in schema and kind is None and all(isinstance(v, str) for v in schema["enum"]):
        return pa.string()
    if isinstance(kind, str) and kind in _SCALARS:
        return _SCALARS[kind]
    if kind == "array" and isinstance(schema.get("items"), dict):
        item = arrow_type(schema["items"], depth + 1)
        return None if item is None else pa.list_(item)
    if kind == "object" and schema.get("properties") and schema.get("additionalProperties") in (None, False):
        fields = []
        for name, sub in schema["properties"].items():
            t = arrow_type(sub, depth + 1) if isinstance(sub, dict) else None
            if t is None:
                return None
            fields.append(pa.field(name, t))
        return pa.struct(fields)
    return None


@dataclass
class ShapedColumns:
    """What an export writes for shaped answers; `shapes`: the plan's response schemas, `logprobs`: the
    plan asks for logprobs."""

    shapes: list[Shape] = field(default_factory=list)
    logprobs: bool = False
    tokenizer: str | None = None     # where the logprobs' tokens come from, where known (the card names it)
    without_logprobs: int = 0        # rows whose teacher sent none though asked
    invalid: int = 0                 # rows whose stored answer is not of its schema (never written)

    def __post_init__(self) -> None:
        distinct = {json.dumps(s.schema, sort_keys=True) for s in self.shapes}
        self.parsed_type: pa.DataType | None = None
        if self.shapes:
            typed = arrow_type(self.shapes[0].schema) if len(distinct) == 1 else None
            self.parsed_type = typed if isinstance(typed, pa.StructType) else pa.string()

    def fields(self) -> list[pa.Field]:
        out = []
        if self.parsed_type is not None:
            out.append(pa.field("parsed", self.parsed_type))
        if self.logprobs:
            out.append(pa.field("logprobs", LOGPROBS_TYPE))
        return out

    def values(self, record: Record) -> dict[str, Any] | Invalid:
        """The row's shaped columns, or why its answer is not of its schema."""
        out: dict[str, Any] = {}
        if self.parsed_type is not None:
            parsed = None
            if record.shape is not None:
                parsed = check_answer(record.shape, record.answer, record.finish_reason)
                if isinstance(parsed, Invalid):
                    self.invalid += 1
                    return parsed
            out["parsed"] = parsed if parsed is None or self.parsed_type != pa.string() \
                else json.dumps(parsed, ensure_ascii=False, sort_keys=True)
        if self.logprobs:
            if record.logprobs is None:
                self.without_logprobs += 1
            out["logprobs"] = None if record.logprobs is None else as_rows(unpack(record.logprobs))
        return out
