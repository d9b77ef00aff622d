"""A row of a prompt set → a `Prompt`. Every error names the file and the line (or row).

A row is one of four shapes: `prompt` (text), `messages` (chat turns), `instruction` with an optional
`input` (Alpaca; Dolly's `context`), or `conversations` (ShareGPT: `from`/`value` turns, the request
being every turn up to the last human one); optional `system`, `id`, `metadata`. An answer already in
the row (Alpaca's `output`, Dolly's `response`, ShareGPT's last `gpt` turn) is kept as
`metadata.reference`, not sent. Other keys (Dolly's `category`, a dataset's own columns) are metadata.
A table's row (CSV, Parquet, HF dataset) goes through `table_row`: its columns name the row's keys.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ..errors import PromptSourceError

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
        given_input = _text(row, "input", where, optional=True)
        instruction = _text(row, "instruction", where)
        messages = [{"role": "user", "content": f"{instruction}\n\n{given_input}" if given_input else instruction}]
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
