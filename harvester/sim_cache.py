"""The simulator's prompt cache: what share of a prompt it reports as cached (`cached_tokens`).

Kept simple, after OpenAI's automatic caching: only a prompt's first message is cached (a long system
prompt or few-shot block), and only when it is `min_tokens` (1,024) tokens or more; a hit reports that
message's tokens (with the prompt's 3 priming tokens) rounded down to a multiple of 128. The cache
holds `slots` first messages, least recently used out first, each for `ttl` seconds after its last
use: prompts sent interleaved with many others evict each other, as they do on a real provider's
machines; sent together, all but the first hit.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Callable
from typing import Any


class PrefixCache:
    def __init__(self, count_tokens: Callable[[str], int], *, slots: int = 4, ttl: float = 300.0,
                 min_tokens: int = 1024, block: int = 128) -> None:
        self.count_tokens, self.slots, self.ttl = count_tokens, slots, ttl
        self.min_tokens, self.block = min_tokens, block
        self._seen: OrderedDict[str, float] = OrderedDict()   # first message's hash -> last use

    def cached_tokens(self, messages: list[dict[str, Any]], now: float) -> int:
        """The tokens of this prompt served from the cache, and note its first message as cached."""
        if len(messages) < 2 or self.slots < 1:
            return 0
        tokens = 3 + 4 + self.count_tokens(str(messages[0].get("content", "")))
        if tokens < self.min_tokens:
            return 0
        key = hashlib.sha256(json.dumps(messages[0], sort_keys=True).encode()).hexdigest()
        last = self._seen.pop(key, None)
        self._seen[key] = now
        while len(self._seen) > self.slots:
            self._seen.popitem(last=False)
        if last is None or now - last > self.ttl:
            return 0
        return tokens // self.block * self.block
