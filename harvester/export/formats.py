"""Trainer formats: one function per format, Record → a JSON-ready row."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .record import Record


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
