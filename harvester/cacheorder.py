"""The order jobs are sent in, for the provider's prompt cache.

A provider caches the start of a prompt for a few minutes (OpenAI: prompts of 1,024 tokens and more,
automatically; DeepSeek: on disk; Anthropic: where asked). Jobs whose first message is the same (one
long system prompt, one few-shot block) hit that cache only when sent close together: each is
given the seq of the first job of the plan with that first message (`group_seq`), and the store
claims by it. Plan order is otherwise kept: ids, export order and `--limit` (the plan's first N jobs,
by seq) do not change. Jobs of a single message keep their own seq.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator

from .store.rows import JobSpec


def prefix_key(messages: list[dict[str, object]]) -> bytes | None:
    """What jobs share to be sent together: their first message, when more follow it."""
    if len(messages) < 2:
        return None
    return hashlib.sha256(json.dumps(messages[0], sort_keys=True).encode()).digest()[:12]


def grouped(specs: Iterable[JobSpec], enabled: bool = True) -> Iterator[JobSpec]:
    """The specs with their `group_seq` set (a dict of 12 bytes per distinct first message)."""
    first: dict[bytes, int] = {}
    for spec in specs:
        key = prefix_key(spec.request["messages"]) if enabled else None
        spec.group_seq = spec.seq if key is None else first.setdefault(key, spec.seq)
        yield spec


__all__ = ["grouped", "prefix_key"]
