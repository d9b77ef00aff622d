"""Trainer formats: one function per format, Record → a JSON-ready row."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from .record import Record


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
    """OpenAI fine-tuning chat format: {"messages": [...]}; TRL's conversational format too."""
    return {"messages": _turns(record)}


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


FORMATS: dict[str, Callable[[Record], dict[str, Any]]] = {
    "openai": to_openai, "alpaca": to_alpaca, "sharegpt": to_sharegpt, "trl": to_trl,
}


def validate_openai_row(row: dict[str, Any]) -> list[str]:
    """Problems with one OpenAI-format row (empty list = valid): roles alternate after an optional
    system turn, the last message is the assistant's, no empty content."""
    problems = []
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return ["no messages"]
    turns = messages[1:] if messages[0].get("role") == "system" else messages
    for i, m in enumerate(messages):
        if not isinstance(m.get("content"), str) or not m["content"].strip():
            problems.append(f"messages[{i}] has empty content")
    for i, m in enumerate(turns):
        want = "user" if i % 2 == 0 else "assistant"
        if m.get("role") != want:
            problems.append(f"turn {i} is {m.get('role')!r}, expected {want!r}")
            break
    if messages[-1].get("role") != "assistant":
        problems.append("the last message is not the assistant's")
    return problems


def arrow_schema(fmt: str) -> "pa.Schema":
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
    return schemas[fmt]


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
