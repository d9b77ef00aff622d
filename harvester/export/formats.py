"""Trainer formats: one function per format, Record → a JSON-ready row."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from ..store.rows import Record
from .names import FORMATS as NAMES


def with_reasoning(record: Record, mode: str) -> Record:
    """The record as trained on. `think`: the teacher's reasoning trace goes before the answer in
    <think> tags, the layout reasoning models' chat templates (DeepSeek-R1, QwQ, Qwen3) expect;
    `drop`: the answer alone."""
    if mode == "think" and record.reasoning:
        return dataclasses.replace(record, answer=f"<think>\n{record.reasoning.strip()}\n</think>\n\n{record.answer}")
    return record


def _turns(record: Record) -> list[dict[str, str]]:
    return [*record.messages, {"role": "assistant", "content": record.answer}]


def to_openai(record: Record) -> dict[str, Any]:
    """OpenAI fine-tuning chat format: {"messages": [...]}; TRL's conversational format too. Assistant
    turns written in the prompt file get `weight: 0`: OpenAI's fine-tuning then trains on the teacher's
    answer alone (TRL ignores the key, and Parquet/HF rows leave it out: see `table_row`)."""
    earlier = [{**m, "weight": 0} if m["role"] == "assistant" else m for m in record.messages]
    return {"messages": [*earlier, {"role": "assistant", "content": record.answer}]}


def to_alpaca(record: Record) -> dict[str, Any]:
    """Alpaca: instruction/input/output, with `system` and earlier turns as `history` (LLaMA-Factory)."""
    system = next((m["content"] for m in record.messages if m["role"] == "system"), "")
    turns = [m for m in record.messages if m["role"] != "system"]
    history = [[turns[i]["content"], turns[i + 1]["content"]] for i in range(0, len(turns) - 1, 2)]
    return {"instruction": turns[-1]["content"], "input": "", "output": record.answer,
            "system": system, "history": history}


_SHAREGPT_ROLE = {"user": "human", "assistant": "gpt"}


def to_sharegpt(record: Record) -> dict[str, Any]:
    """ShareGPT: {"conversations": [{"from": "human"|"gpt", "value"}], "system"}."""
    system = next((m["content"] for m in record.messages if m["role"] == "system"), "")
    conv = [{"from": _SHAREGPT_ROLE[m["role"]], "value": m["content"]} for m in _turns(record)
            if m["role"] != "system"]
    return {"conversations": conv, "system": system}


def to_trl(record: Record) -> dict[str, Any]:
    """TRL conversational prompt/completion."""
    return {"prompt": record.messages, "completion": [{"role": "assistant", "content": record.answer}]}


RowFunction = Callable[[Record], dict[str, Any]]

# The names are listed once (harvester.export.names, which config reads without importing this module);
# each has its row function `to_<name>` above, and a name without one fails here, at import.
FORMATS: dict[str, RowFunction] = {name: globals()[f"to_{name}"] for name in NAMES}


# The formats whose JSONL rows may carry `export.keep` columns: LLaMA-Factory and TRL read the columns
# they are told of and leave the rest; OpenAI's fine-tuning refuses unknown keys.
JSONL_EXTRAS: dict[str, bool] = {"openai": False, "alpaca": True, "sharegpt": True, "trl": True}


def keep_columns(record: Record, keep: Sequence[str]) -> dict[str, Any]:
    """The `export.keep` columns of a row. The prompt's `id` as text (files mix numbers and text);
    its metadata as JSON text, since rows hold different keys (a struct column needs the same ones)."""
    out: dict[str, Any] = {}
    for name in keep:
        if name == "id":
            value = record.metadata.get("id")
            out["id"] = None if value is None else str(value)
        elif name == "metadata":
            rest = {k: v for k, v in record.metadata.items() if k != "id"}
            out["metadata"] = json.dumps(rest, ensure_ascii=False, sort_keys=True)
        elif name == "job_id":
            out["job_id"] = record.job_id
    return out


def table_row(fmt: str, row: dict[str, Any]) -> dict[str, Any]:
    """A JSONL row as a Parquet/HF row: `weight` is OpenAI's upload-file key only (a struct field would
    give every other message a null weight)."""
    if fmt == "openai":
        return {**row, "messages": [{"role": m["role"], "content": m["content"]} for m in row["messages"]]}
    return row


def arrow_schema(fmt: str, keep: Sequence[str] = ()) -> pa.Schema:
    """Explicit column types, so a first batch with empty lists cannot fix a wrong type for the rest."""
    import pyarrow as pa

    turn = pa.struct([("role", pa.string()), ("content", pa.string())])
    schemas = {
        "openai": pa.schema([("messages", pa.list_(turn))]),
        "alpaca": pa.schema([("instruction", pa.string()), ("input", pa.string()), ("output", pa.string()),
                             ("system", pa.string()), ("history", pa.list_(pa.list_(pa.string())))]),
        "sharegpt": pa.schema([("conversations", pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))),
                               ("system", pa.string())]),
        "trl": pa.schema([("prompt", pa.list_(turn)), ("completion", pa.list_(turn))]),
    }
    schema = schemas[fmt]
    for name in keep:
        schema = schema.append(pa.field(name, pa.string()))
    return schema


def llamafactory_entry(fmt: str, file_name: str) -> dict[str, Any] | None:
    """LLaMA-Factory's dataset_info.json entry for a file of this format (None: it has no such format)."""
    if fmt == "openai":
        return {"file_name": file_name, "formatting": "sharegpt", "columns": {"messages": "messages"},
                "tags": {"role_tag": "role", "content_tag": "content", "user_tag": "user",
                         "assistant_tag": "assistant", "system_tag": "system"}}
    if fmt == "sharegpt":
        return {"file_name": file_name, "formatting": "sharegpt",
                "columns": {"messages": "conversations", "system": "system"}}
    if fmt == "alpaca":
        return {"file_name": file_name, "columns": {"prompt": "instruction", "query": "input", "response": "output",
                                                    "system": "system", "history": "history"}}
    return None
