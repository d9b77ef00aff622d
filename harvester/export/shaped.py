"""The export's columns for answers with a shape: `parsed` (the answer's JSON as an object) and `logprobs`
(the teacher's tokens, their logprobs and top-k), in Parquet and hf/ only: chat formats keep the raw JSON
text as the assistant's content, and OpenAI's upload format takes no extra keys.

`parsed` is a struct typed from the response schema when the export has one schema of plain objects,
arrays and scalars, so that a trainer reads fields, not text; JSON text otherwise (several schemas, free
objects, unions).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from ..logprobs import Arrays, arrays
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

    def builders(self) -> dict[str, Any]:
        """Columns the writer builds from a batch's values in one go (name → function of the values)."""
        return {"logprobs": logprobs_column} if self.logprobs else {}

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
            out["logprobs"] = record.logprobs   # the blob: the writer builds the column (logprobs_column)
        return out


def logprobs_column(blobs: Sequence[bytes | None]) -> pa.Array:
    """The `logprobs` column of a batch of rows, built from the packed arrays with no Python object per token:
    at k = 20 a row holds thousands of values, and a dict each would make the export 20 times slower."""
    parts = [arrays(b) if b is not None else None for b in blobs]
    got = [p for p in parts if p is not None]
    empty = Arrays(np.zeros(0, "<u4"), np.zeros(0), np.zeros(0), np.zeros(0, "<u4"), b"")
    n_tokens = [len(p.counts) for p in got]
    counts = np.concatenate([p.counts for p in got] or [empty.counts])
    token_lengths = np.concatenate([p.lengths[:n] for p, n in zip(got, n_tokens)] or [empty.lengths])
    alt_lengths = np.concatenate([p.lengths[n:] for p, n in zip(got, n_tokens)] or [empty.lengths])
    token_text = b"".join(p.texts[:int(p.lengths[:n].sum())] for p, n in zip(got, n_tokens))
    alt_text = b"".join(p.texts[int(p.lengths[:n].sum()):] for p, n in zip(got, n_tokens))
    top = pa.StructArray.from_arrays(
        [_strings(alt_lengths, alt_text), pa.array(np.concatenate([p.alts for p in got] or [empty.alts]))],
        fields=list(_ALT))
    tokens = pa.StructArray.from_arrays(
        [_strings(token_lengths, token_text), pa.array(np.concatenate([p.chosen for p in got] or [empty.chosen])),
         pa.ListArray.from_arrays(_offsets(counts), top)], fields=list(LOGPROBS_TYPE.value_type))
    per_row = np.array([len(p.counts) if p is not None else 0 for p in parts], dtype=np.int64)
    column = pa.ListArray.from_arrays(_offsets(per_row), tokens, type=LOGPROBS_TYPE,
                                      mask=pa.array([p is None for p in parts]))
    column.validate(full=True)   # e.g. a lone surrogate in a token: not UTF-8 (raises rather than write it)
    return column


def _offsets(sizes: np.ndarray[Any, Any]) -> pa.Array:
    return pa.array(np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)]).astype(np.int32))


def _strings(lengths: np.ndarray[Any, Any], data: bytes) -> pa.Array:
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32)
    return pa.StringArray.from_buffers(len(lengths), pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
