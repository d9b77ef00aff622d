"""What OpenAI's fine-tuning accepts in a chat row: the tests' check of the rows an export writes."""

from __future__ import annotations

from typing import Any

# Other keys fail OpenAI's validation.
OPENAI_ROW_KEYS = frozenset({"messages", "tools", "parallel_tool_calls", "functions"})


def validate_openai_row(row: dict[str, Any]) -> list[str]:
    """Problems with one OpenAI-format row (empty list = valid): only keys OpenAI's fine-tuning knows,
    roles alternate after an optional system turn, the last message is the assistant's, no empty
    content, `weight` (0 or 1) on assistant messages only."""
    problems = []
    unknown = set(row) - OPENAI_ROW_KEYS
    if unknown:
        problems.append(f"unknown key(s) {sorted(unknown)}")
    messages = row.get("messages")
    if not isinstance(messages, list) or not messages:
        return [*problems, "no messages"]
    for i, m in enumerate(messages):
        if "weight" in m and (m.get("role") != "assistant" or m["weight"] not in (0, 1)
                              or isinstance(m["weight"], bool)):
            problems.append(f"messages[{i}] has weight {m['weight']!r}: only assistant messages take a "
                            "weight, 0 or 1")
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
