"""The text prompt files: JSONL (one row a line), JSON (an array of rows, Alpaca's `alpaca_data.json`)
and CSV (a header naming the row's keys, `messages`/`conversations` as JSON text)."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import PromptSourceError
from .rows import Prompt, need_a_shape, row_to_prompt, table_row


def read_jsonl(path: Path) -> Iterator[Prompt]:
    return _read_jsonl(read_text(path), str(path))


def read_json(path: Path) -> Iterator[Prompt]:
    return _read_json(read_text(path), str(path))


def read_csv(path: Path) -> Iterator[Prompt]:
    return _read_csv(read_text(path), str(path))


def read_text(path: Path) -> str:
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
