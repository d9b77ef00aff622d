"""Decontamination: drop rows sharing a word n-gram (default 13) with any eval set.

Words are `normalize_text` words (case, punctuation folded). A row's n-grams are taken over
prompt + " " + answer, so an eval passage split across the prompt/answer boundary is caught.
Each eval set is one sorted, unique uint64 array of n-gram hashes (8 B per n-gram, looked up
with searchsorted) rather than a Python set (~70 B per int).
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

import numpy as np

from harvester.export.dedup import ngram_hashes, word_hashes
from harvester.export.record import Record


class Decontaminator:
    """Built once from eval sets (name -> texts); `hits_of(text)` names the sets a text overlaps.

    Eval texts shorter than n words would have no n-gram at all: those with >= `min_words`
    words are kept whole and matched as an exact word sequence of their own length; shorter
    ones (e.g. "yes", "B") are ignored, they would match half the corpus.
    """

    def __init__(self, eval_sets: Mapping[str, Iterable[str]], n: int = 13, min_words: int = 8) -> None:
        self.n = n
        self.hits: Counter[str] = Counter()             # eval set -> rows dropped that hit it
        self.sizes: dict[str, int] = {}                 # eval set -> distinct n-grams
        self._sets: dict[str, dict[int, np.ndarray]] = {}   # name -> length -> sorted hashes
        for name, texts in eval_sets.items():
            by_len: dict[int, list[np.ndarray]] = {}
            for text in texts:
                wh = word_hashes(text)
                size = n if len(wh) >= n else len(wh)
                if size >= min(min_words, n):
                    by_len.setdefault(size, []).append(ngram_hashes(wh, size))
            self._sets[name] = {k: np.unique(np.concatenate(v)) for k, v in by_len.items()}
            self.sizes[name] = sum(len(a) for a in self._sets[name].values())
        self._lengths = sorted({k for s in self._sets.values() for k in s})

    def hits_of(self, text: str) -> list[str]:
        """Names of the eval sets sharing at least one n-gram with `text` (sorted)."""
        return self._hits(word_hashes(text))

    def record_hits(self, record: Record) -> list[str]:
        """Eval sets hit by the row's prompt + answer, n-grams crossing the boundary included."""
        # hash the parts separately (the answer's normalization is cached across steps)
        return self._hits(np.concatenate([word_hashes(record.prompt_text), word_hashes(record.answer)]))

    def _hits(self, wh: np.ndarray) -> list[str]:
        grams = {k: ngram_hashes(wh, k) for k in self._lengths if k <= len(wh)}
        out = []
        for name, by_len in self._sets.items():
            for k, table in by_len.items():
                q = grams.get(k)
                if q is not None and len(q) and _any_in(q, table):
                    out.append(name)
                    break
        return sorted(out)


def _any_in(q: np.ndarray, table: np.ndarray) -> bool:
    idx = np.searchsorted(table, q)
    idx[idx == len(table)] = 0
    return bool(np.any(table[idx] == q))


def apply_decontam(records: Iterable[Record], decon: Decontaminator,
                   counter: Counter[str]) -> Iterator[tuple[Record, str | None]]:
    """Yield (record, None) or (record, "contaminated:<set>[+<set>...]"); `decon.hits` counts
    drops per eval set (a row hitting two sets counts for both), `counter` per reason string."""
    for rec in records:
        names = decon.record_hits(rec)
        if not names:
            yield rec, None
            continue
        decon.hits.update(names)
        reason = "contaminated:" + "+".join(names)
        counter[reason] += 1
        yield rec, reason


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
            for row in zip(*(c.to_pylist() for c in batch.columns)):
                yield "\n".join(v for v in row if v)
    elif suffix in (".jsonl", ".json"):
        with path.open(encoding="utf-8") as f:
            rows: Iterable[Any] = (json.loads(line) for line in f if line.strip()) \
                if suffix == ".jsonl" else json.load(f)
            for row in [rows] if isinstance(rows, dict) else rows:
                yield "\n".join(_strings(row))
    else:
        raise ValueError(f"unsupported eval file {path.name}: use .jsonl, .json or .parquet")
