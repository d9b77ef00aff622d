"""Decontamination: drop rows sharing a word n-gram (default 13) with any eval set.

Words are `normalize_text` words (case, punctuation folded). A row's n-grams run over its
prompt's words followed by its answer's, so an eval passage split across the prompt/answer
boundary is caught. Each eval set is a sorted unique uint64 array of n-gram hashes (8 B per
n-gram; a Python set would take ~70 B), fronted by a 2 B/n-gram bit filter, and rows are
looked up in batches so numpy's per-call overhead is paid once per batch, not per row.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from harvester.export.text import word_hashes
from harvester.store.rows import Record

_U64 = np.uint64
_B = 0x9E3779B97F4A7C15                               # odd: invertible modulo 2**64
_rng = np.random.default_rng(0xDEC0)
_TAG = _rng.integers(1, 2**64, size=4096, dtype=_U64)  # per n-gram length
_POW = np.ones(1, _U64)
_IPOW = np.ones(1, _U64)


def _powers(n: int) -> tuple[np.ndarray, np.ndarray]:
    """B**t and B**-t (mod 2**64) for t < n, grown by doubling."""
    global _POW, _IPOW
    if len(_POW) < n:
        m = max(n, 2 * len(_POW))
        one = np.ones(1, _U64)                       # (a Python 1 would promote to float64)
        _POW = np.concatenate((one, np.cumprod(np.full(m - 1, _B, _U64))))
        _IPOW = np.concatenate((one, np.cumprod(np.full(m - 1, pow(_B, -1, 2**64), _U64))))
    return _POW[:n], _IPOW[:n]


def _mix(x: np.ndarray) -> np.ndarray:
    x ^= x >> _U64(31)
    x *= _U64(0xBF58476D1CE4E9B9)
    x ^= x >> _U64(29)
    return x


def ngram_hashes_batch(whs: list[np.ndarray], lengths: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of all word n-grams, for every n in `lengths`, of every text (word-hash arrays),
    none spanning two texts; and the index of the text each came from. Vectorized over the
    whole batch: a polynomial prefix sum g gives the n-gram at i as (g[i+n] - g[i]) * B**-i."""
    lens = np.fromiter(map(len, whs), dtype=np.int64, count=len(whs))
    w = np.concatenate(whs) if whs else np.empty(0, _U64)
    pw, ipw = _powers(len(w) + 1)
    g = np.zeros(len(w) + 1, _U64)
    np.cumsum(w * pw[: len(w)], out=g[1:])
    owner = np.repeat(np.arange(len(whs)), lens)
    end = np.cumsum(lens)[owner]                        # end of each word's own text
    pos = np.arange(len(w))
    hashes, owners = [], []
    for n in lengths:
        i = pos[pos + n <= end]
        hashes.append((g[i + n] - g[i]) * ipw[i] + _TAG[n])
        owners.append(owner[i])
    if not hashes:
        return np.empty(0, _U64), np.empty(0, np.int64)
    return _mix(np.concatenate(hashes)), np.concatenate(owners)


class Decontaminator:
    """Built once from eval sets (name -> texts); `batch_hits` names the sets each text overlaps.

    Eval texts shorter than n words would have no n-gram at all: those with >= `min_words`
    words are kept whole and matched as an exact word sequence of their own length; shorter
    ones (e.g. "yes", "B") are ignored, they would match half the corpus.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], n: int = 13, min_words: int = 8) -> None:
        self.n = n
        self.sizes: dict[str, int] = {}                 # eval set -> distinct n-grams
        self._sets: dict[str, np.ndarray] = {}          # name -> sorted unique hashes (all lengths)
        lengths: set[int] = set()
        for name, texts in eval_sets.items():
            by_size: dict[int, list[np.ndarray]] = {}
            for text in texts:
                wh = word_hashes(text)
                if len(wh) >= min(min_words, n):
                    by_size.setdefault(min(n, len(wh)), []).append(wh)
            lengths |= by_size.keys()
            parts = [ngram_hashes_batch(v, [k])[0] for k, v in by_size.items()]
            self._sets[name] = np.unique(np.concatenate(parts)) if parts else np.empty(0, _U64)
            self.sizes[name] = len(self._sets[name])
        self._lengths = sorted(lengths)
        # One-bit-per-slot filter over all sets (>= 16 slots per n-gram: ~6% false positives,
        # 2 B per n-gram): binary searches in a table bigger than the cache cost ~1 us per
        # query n-gram, so only the few n-grams whose bit is set go on to searchsorted.
        total = sum(self.sizes.values())
        bits = max(10, int(np.ceil(np.log2(16 * max(total, 1)))))
        self._shift = _U64(64 - bits)
        self._bitmap = np.zeros(1 << (bits - 3), np.uint8)
        for table in self._sets.values():
            pos = table >> self._shift
            np.bitwise_or.at(self._bitmap, pos >> _U64(3), (1 << (pos & _U64(7))).astype(np.uint8))

    def batch_hits(self, whs: list[np.ndarray]) -> list[list[str]]:
        """Names of the eval sets sharing at least one n-gram with each text, given as its word hashes
        (sorted; many texts at once amortize numpy's call overhead)."""
        grams, owner = ngram_hashes_batch(whs, self._lengths)
        pos = grams >> self._shift
        keep = (self._bitmap[pos >> _U64(3)] >> (pos & _U64(7)).astype(np.uint8)) & 1 == 1
        grams, owner = grams[keep], owner[keep]
        out: list[list[str]] = [[] for _ in whs]
        for name in sorted(self._sets):
            table = self._sets[name]
            if len(grams) and len(table):
                idx = np.minimum(np.searchsorted(table, grams), len(table) - 1)
                for k in np.unique(owner[table[idx] == grams]):
                    out[k].append(name)
        return out


def record_words(record: Record) -> np.ndarray:
    """Word hashes of prompt + answer (hashed apart: the answer's are cached across steps)."""
    return np.concatenate([word_hashes(record.prompt_text), word_hashes(record.answer)])


def _strings(value: Any) -> Iterator[str]:
    """Every string inside a JSON value, depth first (questions, choices, answers...)."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def load_eval_texts(path: str | Path) -> Iterator[str]:
    """One text per eval row: all its string values joined by newlines (.jsonl/.json/.parquet)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(path)
        cols = [f.name for f in pf.schema_arrow
                if pa.types.is_string(f.type) or pa.types.is_large_string(f.type)]
        for batch in pf.iter_batches(columns=cols):
            for values in zip(*(c.to_pylist() for c in batch.columns)):
                yield "\n".join(v for v in values if v)
    elif suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            rows: Iterable[Any] = (json.loads(line) for line in f if line.strip()) \
                if suffix == ".jsonl" else json.load(f)
            for row in [rows] if isinstance(rows, dict) else rows:
                yield "\n".join(_strings(row))
    else:
        raise ValueError(f"unsupported eval file {path.name}: use .jsonl, .json or .parquet")
