"""A text as the export's steps see it: `normalize_text` words (case, whitespace, punctuation
folded; see harvester.hashing) and their 64-bit hashes. Pure; shared by the quality filters,
decontamination and dedup, which run interleaved per row: the caches serve all three."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import xxhash

from harvester.hashing import ASCII_FOLD, normalize_text


@lru_cache(maxsize=64)  # steps run interleaved per record: the answer is normalized once
def normalized_words(text: str) -> list[bytes]:
    """UTF-8 words of `normalize_text(text)`."""
    if text.isascii():
        return text.encode("ascii").translate(ASCII_FOLD).split()  # normalize_text's fast path, as bytes
    return normalize_text(text).encode("utf-8").split()


def normalized(text: str) -> str:
    """`normalize_text`, through the ASCII fast path and the cache."""
    return b" ".join(normalized_words(text)).decode("utf-8")


@lru_cache(maxsize=1024)  # decontam and near-dup pass 1 hash the same answer (read-only result)
def word_hashes(text: str) -> np.ndarray:
    """xxh3-64 of every normalized (case/punctuation-folded) word, in order."""
    words = normalized_words(text)
    out = np.fromiter(map(xxhash.xxh3_64_intdigest, words), dtype=np.uint64, count=len(words))
    out.flags.writeable = False
    return out
