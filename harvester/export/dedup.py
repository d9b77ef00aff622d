"""Exact and near-duplicate removal: pure steps over `Record`, no I/O.

Exact: `exact_key`, one 128-bit `text_key` digest per row; `analyze.decide` keeps the first row
of each group of equal keys.

Near-dup: MinHash LSH over word 5-gram shingles of `normalize_text`, in TWO passes so that
memory per row stays ~200 B whatever the text length (see `NearDupIndex`):
  pass 1  `signatures(texts)` then `add_signatures(seqs, bands)` for every row (see analyze:
          worker processes compute the signatures): only b band hashes (uint64) per row are kept;
          `finalize()` sorts each band column and turns runs of equal band hashes into
          candidate pairs (numpy, O(n log n), no per-row dicts, no O(n^2)).
  pass 2  `resolve(seq, text)` in ascending seq: a row is removed iff some *kept* earlier
          candidate has exact shingle Jaccard >= threshold (verified on recomputed shingle
          sets), so every removed row has a kept near-duplicate: no chaining removals.
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal

import numpy as np

from harvester.export.text import word_hashes
from harvester.hashing import text_key
from harvester.store.rows import Record

Fields = Literal["answer", "prompt+answer"]
_U64 = np.uint64


def record_text(record: Record, fields: Fields) -> str:
    """The text a dedup step looks at: the answer alone, or prompt and answer."""
    return record.answer if fields == "answer" else record.prompt_text + "\n" + record.answer


# ---------------------------------------------------------------- hashing helpers (shared)
_RNG = np.random.default_rng(0x5EED_D15C)
_COEF = _RNG.integers(1, 2**64, size=64, dtype=_U64) | _U64(1)   # per-position multipliers
_LEN_TAG = _RNG.integers(1, 2**64, size=64, dtype=_U64)          # tells n-gram lengths apart


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64 finalizer: turns the linear n-gram combination into a well-spread hash."""
    x = x ^ (x >> _U64(30))
    x *= _U64(0xBF58476D1CE4E9B9)
    x ^= x >> _U64(27)
    x *= _U64(0x94D049BB133111EB)
    x ^= x >> _U64(31)
    return x


def ngram_hashes(wh: np.ndarray, n: int) -> np.ndarray:
    """64-bit hashes of all word n-grams (order-sensitive); empty if fewer than n words."""
    m = len(wh) - n + 1
    if m <= 0:
        return np.empty(0, _U64)
    acc = wh[:m] * _COEF[0]
    for k in range(1, n):                       # n vector ops, not one Python op per n-gram
        acc += wh[k:k + m] * _COEF[k]
    acc += _LEN_TAG[n]
    return _mix(acc)


def shingle_set(text: str, n: int = 5) -> np.ndarray:
    """Sorted unique shingle hashes. Texts with < n words get ONE shingle hashing all their
    words (and their count), so short texts compare exactly: equal or Jaccard 0."""
    wh = word_hashes(text)
    return np.unique(ngram_hashes(wh, n)) if len(wh) >= n else _short_shingle(wh)


def _short_shingle(wh: np.ndarray) -> np.ndarray:
    return ngram_hashes(wh, len(wh)) if len(wh) else _mix(_LEN_TAG[:1].copy())


def batch_shingles(whs: list[np.ndarray], n: int) -> tuple[np.ndarray, np.ndarray]:
    """Shingle hashes (as `shingle_set`, not deduplicated) of many texts, concatenated, and
    each text's start offset; computed over the concatenation to avoid per-text numpy calls."""
    lens = np.fromiter(map(len, whs), dtype=np.int64, count=len(whs))
    counts = np.where(lens >= n, lens - n + 1, 1)
    offs = np.zeros(len(whs), np.int64)
    np.cumsum(counts[:-1], out=offs[1:])
    flat = np.empty(int(counts.sum()), _U64)
    long = lens >= n
    if long.any():
        allw = np.concatenate(whs)
        grams = ngram_hashes(allw, n)              # includes n-grams straddling two texts ...
        woff = np.zeros(len(whs), np.int64)
        np.cumsum(lens[:-1], out=woff[1:])
        c = counts[long]
        within = np.arange(c.sum()) - np.repeat(np.cumsum(c) - c, c)
        flat[np.repeat(offs[long], c) + within] = grams[np.repeat(woff[long], c) + within]  # ... dropped
    for d in np.flatnonzero(~long):
        flat[offs[d]] = _short_shingle(whs[d])[0]
    return flat, offs


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays."""
    inter = len(np.intersect1d(a, b, assume_unique=True))
    return inter / (len(a) + len(b) - inter)


# ---------------------------------------------------------------------------- exact dedup
def exact_key(record: Record, fields: Fields) -> bytes:
    """The 16-byte exact-dedup key of a row: `text_key` of its answer, or of prompt and answer."""
    parts = (record.answer,) if fields == "answer" else (record.prompt_text, record.answer)
    return bytes.fromhex(text_key(*parts))


# ----------------------------------------------------------------------------- near dedup
@dataclass(frozen=True)
class NearDupConfig:
    threshold: float = 0.7     # exact shingle Jaccard at or above which a row is a near-dup
    shingle: int = 5           # words per shingle
    bands: int = 20            # b x r = 80 permutations; recall at J=0.7 is 1-(1-0.7**4)**20 = 0.9959
    rows: int = 4
    fields: Fields = "answer"
    max_fanout: int = 32       # within one band bucket, a row is paired with its first K rows
    seed: int = 1


class NearDupIndex:
    """Two-pass near-dup remover. Pass 1: `add_signatures(seqs, signatures(texts))` per chunk of
    rows (any order, unique seqs).
    Pass 2: `resolve(seq, text)` for EXACTLY the same rows in ascending seq; it returns the
    seq of the kept row this one near-duplicates, or None to keep it. `clusters()` then maps
    each kept representative to the seqs removed in its favour."""

    def __init__(self, cfg: NearDupConfig = NearDupConfig()) -> None:
        self.cfg = cfg
        k = cfg.bands * cfg.rows
        rng = np.random.default_rng(cfg.seed)
        self._a = rng.integers(1, 2**64, size=k, dtype=_U64) | _U64(1)  # odd: a bijection
        self._b = rng.integers(0, 2**64, size=k, dtype=_U64)
        self._band_coef = _COEF[: cfg.rows]
        self._chunks: list[np.ndarray] = []     # (bands, rows_in_chunk) uint64 band hashes
        self._seq_chunks: list[np.ndarray] = []
        self._seqs: np.ndarray | None = None    # ascending seqs after finalize
        self.n_pairs = 0                        # candidate pairs found by LSH
        self.n_verified = 0                     # exact Jaccard computations in pass 2
        self.removed = array("q")               # removed seqs, in seq order ...
        self.kept_by = array("q")               # ... and the kept seq each one duplicates

    # ---- pass 1
    def signatures(self, texts: list[str]) -> np.ndarray:
        """The (bands, len(texts)) uint64 band hashes of `texts`: what pass 1 keeps of a row.
        Pure and deterministic for a config, so other processes can compute them."""
        if not texts:
            return np.empty((self.cfg.bands, 0), _U64)
        flat, offs = batch_shingles([word_hashes(t) for t in texts], self.cfg.shingle)
        tmp = np.empty_like(flat)
        sig = np.empty((len(self._a), len(offs)), _U64)
        for j in range(len(self._a)):  # one vector op per permutation over the whole batch
            np.multiply(flat, self._a[j], out=tmp)
            tmp += self._b[j]
            np.minimum.reduceat(tmp, offs, out=sig[j])
        banded = sig.reshape(self.cfg.bands, self.cfg.rows, len(offs))
        return _mix((banded * self._band_coef[None, :, None]).sum(axis=1, dtype=_U64))

    def add_signatures(self, seqs: np.ndarray, bands: np.ndarray) -> None:
        """Pass 1: rows and their `signatures` (computed anywhere, e.g. in worker processes)."""
        if self._seqs is not None:
            raise RuntimeError("add_signatures() after finalize()")
        if bands.shape != (self.cfg.bands, len(seqs)):
            raise ValueError(f"expected ({self.cfg.bands}, {len(seqs)}) band hashes, got {bands.shape}")
        self._chunks.append(np.ascontiguousarray(bands, _U64))
        self._seq_chunks.append(np.asarray(seqs, np.int64))

    def finalize(self) -> None:
        """Turn band buckets into candidate pairs (i < j, row indices in seq order)."""
        if self._seqs is not None:
            return
        seqs = np.concatenate(self._seq_chunks) if self._seq_chunks else np.empty(0, np.int64)
        order = np.argsort(seqs, kind="stable")
        self._seqs = seqs[order]
        if np.any(self._seqs[1:] == self._seqs[:-1]):
            raise ValueError("duplicate seq added to NearDupIndex")
        if len(seqs) >= 2**31:                       # pairs pack two row indices in an int64
            raise ValueError("NearDupIndex holds at most 2**31 - 1 rows")
        permute = bool(np.any(order != np.arange(len(order))))
        found: list[np.ndarray] = []
        for band in range(self.cfg.bands):
            col = np.concatenate([c[band] for c in self._chunks]) if self._chunks else np.empty(0, _U64)
            if permute:
                col = col[order]
            found.extend(_band_pairs(col, self.cfg.max_fanout))
            if len(found) > 1 and sum(map(len, found)) > 1 << 20:   # true pairs recur in
                found = [np.unique(np.concatenate(found))]          # many bands: compact
        self._chunks.clear()
        self._seq_chunks.clear()
        # pairs packed as j<<32|i, sorted: pass 2 walks them by j with one moving pointer
        pairs = np.unique(np.concatenate(found)) if found else np.empty(0, np.int64)
        self._pairs = pairs
        self.n_pairs = len(pairs)
        i_of = pairs & 0xFFFFFFFF
        # last partner of every left endpoint: when its shingles can be freed in pass 2
        by_i = np.lexsort((pairs >> 32, i_of))
        li, lj = i_of[by_i], (pairs >> 32)[by_i]
        last = np.r_[li[1:] != li[:-1], True] if len(li) else np.empty(0, bool)
        self._left, self._left_last = li[last], lj[last]
        self._ptr = self._lptr = self._next = 0
        self._live: dict[int, np.ndarray] = {}          # kept rows still needed as references
        self._expire: defaultdict[int, list[int]] = defaultdict(list)

    # ---- pass 2
    def resolve(self, seq: int, text: str) -> int | None:
        self.finalize()
        assert self._seqs is not None
        j = self._next
        if j >= len(self._seqs) or self._seqs[j] != seq:
            raise ValueError(f"resolve() must see the added seqs in ascending order; got {seq}")
        self._next += 1
        shingles: np.ndarray | None = None
        rep: int | None = None
        p, pairs = self._ptr, self._pairs
        while p < len(pairs) and (pairs[p] >> 32) == j:
            i = int(pairs[p] & 0xFFFFFFFF)
            p += 1
            ref = self._live.get(i)
            if rep is not None or ref is None:      # already decided, or i was removed
                continue
            if shingles is None:
                shingles = shingle_set(text, self.cfg.shingle)
            small, big = sorted((len(ref), len(shingles)))
            if small < self.cfg.threshold * big:   # Jaccard <= small/big: cannot pass
                continue
            self.n_verified += 1
            if jaccard(ref, shingles) >= self.cfg.threshold:
                rep = i
        self._ptr = p
        k, left = self._lptr, self._left
        if k < len(left) and left[k] == j:              # later rows will compare to row j
            self._lptr += 1
            if rep is None:
                self._live[j] = shingles if shingles is not None else shingle_set(text, self.cfg.shingle)
                self._expire[int(self._left_last[k])].append(j)
        for i in self._expire.pop(j, ()):
            self._live.pop(i, None)
        if rep is None:
            return None
        kept = int(self._seqs[rep])
        self.removed.append(seq)
        self.kept_by.append(kept)
        return kept

    def clusters(self) -> dict[int, list[int]]:
        """Kept representative seq -> removed seqs (for the dataset card)."""
        out: dict[int, list[int]] = defaultdict(list)
        for r, k in zip(self.removed, self.kept_by):
            out[k].append(r)
        return dict(out)

def _band_pairs(col: np.ndarray, fanout: int) -> list[np.ndarray]:
    """Rows with equal band hash are candidates: pair every bucket member with the bucket's
    first `fanout` rows (stable sort keeps row order), never all pairs of a big bucket."""
    order = np.argsort(col, kind="stable")
    same = col[order[1:]] == col[order[:-1]]
    t = np.flatnonzero(same) + 1                       # sorted positions that are not a bucket head
    if not len(t):
        return []
    head = np.flatnonzero(np.r_[True, ~same])          # bucket head positions
    start = head[np.searchsorted(head, t, side="right") - 1]
    pos = t - start
    out = []
    for d in range(min(fanout, int(pos.max()))):
        m = pos > d
        i, j = order[start[m] + d], order[t[m]]
        out.append((j.astype(np.int64) << 32) | i)
    return out
