"""Canonical JSON and the content hashes built on it (job ids, exact dedup keys)."""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from typing import Any


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values always give equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def content_hash(value: Any, length: int = 32) -> str:
    """A stable hex digest of `value`'s canonical JSON (sha256, truncated to `length` hex chars)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()[:length]


_NOT_WORD = re.compile(r"[\W_]+", re.UNICODE)

# On ASCII text the folding below is exactly: lower-case, every byte that is not a letter or a digit
# to a space. bytes.translate does that several times faster than NFKC + casefold + a regex.
ASCII_FOLD = bytes(c + 32 if 65 <= c <= 90 else c if 48 <= c <= 57 or 97 <= c <= 122 else 32
                   for c in range(256))


def normalize_text(text: str) -> str:
    """Fold case, whitespace and punctuation, so that trivially different texts compare equal."""
    if text.isascii():
        return " ".join(text.encode("ascii").translate(ASCII_FOLD).decode("ascii").split())
    text = unicodedata.normalize("NFKC", text).casefold()
    return " ".join(_NOT_WORD.sub(" ", text).split())


def text_key(*parts: str) -> str:
    """The exact-dedup key of one or more texts after `normalize_text`."""
    joined = "\x1f".join(normalize_text(p) for p in parts)
    return hashlib.blake2b(joined.encode("utf-8"), digest_size=16).hexdigest()
