"""Exact and near-duplicate removal: pure steps over `Record`, no I/O.

Exact: one 128-bit `text_key` digest (a Python int) per kept row in a set.

Near-dup: MinHash LSH over word 5-gram shingles of `normalize_text`, in TWO passes so that
memory per row stays ~200 B whatever the text length (see `NearDupIndex`):
  pass 1  `add(seq, text)` for every row: only b band hashes (uint64) per row are kept;
          `finalize()` sorts each band column and turns runs of equal band hashes into
          candidate pairs (numpy, O(n log n), no per-row dicts, no O(n^2)).
  pass 2  `resolve(seq, text)` in ascending seq: a row is removed iff some *kept* earlier
          candidate has exact shingle Jaccard >= threshold (verified on recomputed shingle
          sets), so every removed row has a kept near-duplicate: no chaining removals.
"""

from __future__ import annotations

from array import array
from collections import Counter, defaultdict
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable, Iterator, Literal

import numpy as np
import xxhash

from harvester.store.rows import Record
from harvester.hashing import ASCII_FOLD, normalize_text, text_key

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
    out = np.fromiter(map(xxhash.xxh3_64_intdigest, words), dtype=_U64, count=len(words))
    out.flags.writeable = False
    return out


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


class ExactDedup:
    """Streaming exact dedup on `exact_key` (case, whitespace, punctuation folded).
    Memory: one 128-bit int per distinct kept row (~80 B with the set slot)."""

    def __init__(self, fields: Fields = "prompt+answer") -> None:
        self.fields = fields
        self._seen: set[int] = set()

    def key(self, record: Record) -> int:
        return int.from_bytes(exact_key(record, self.fields), "big")

    def seen(self, record: Record) -> bool:
        """True if an equal row was seen before; otherwise remember this one."""
        k = self.key(record)
        if k in self._seen:
            return True
        self._seen.add(k)
        return False


def apply_exact_dedup(records: Iterable[Record], dedup: ExactDedup,
                      counter: Counter[str]) -> Iterator[tuple[Record, str | None]]:
    """Yield (record, None) for the first of each exact group, (record, "exact_duplicate") after."""
    for rec in records:
        if dedup.seen(rec):
            counter["exact_duplicate"] += 1
            yield rec, "exact_duplicate"
        else:
            yield rec, None


# ----------------------------------------------------------------------------- near dedup
@dataclass(frozen=True)
class NearDupConfig:
    threshold: float = 0.7     # exact shingle Jaccard at or above which a row is a near-dup
    shingle: int = 5           # words per shingle
    bands: int = 20            # b x r = 80 permutations; recall at J=0.7 is 0.9959 (s_curve)
    rows: int = 4
    fields: Fields = "answer"
    max_fanout: int = 32       # within one band bucket, a row is paired with its first K rows
    batch: int = 1024          # rows hashed per vectorized batch in pass 1
    seed: int = 1


def s_curve(s: float, bands: int, rows: int) -> float:
    """P(two rows with Jaccard s share at least one band) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - s**rows) ** bands


class NearDupIndex:
    """Two-pass near-dup remover. Pass 1: `add(seq, text)` per row (any order, unique seqs).
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
        self._pending: list[str] = []
        self._pending_seq: list[int] = []
        self._chunks: list[np.ndarray] = []     # (bands, rows_in_chunk) uint64 band hashes
        self._seq_chunks: list[np.ndarray] = []
        self._seqs: np.ndarray | None = None    # ascending seqs after finalize
        self.n_pairs = 0                        # candidate pairs found by LSH
        self.n_verified = 0                     # exact Jaccard computations in pass 2
        self.removed = array("q")               # removed seqs, in seq order ...
        self.kept_by = array("q")               # ... and the kept seq each one duplicates

    # ---- pass 1
    def add(self, seq: int, text: str) -> None:
        if self._seqs is not None:
            raise RuntimeError("add() after finalize()")
        self._pending.append(text)
        self._pending_seq.append(seq)
        if len(self._pending) >= self.cfg.batch:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self.add_signatures(np.asarray(self._pending_seq, np.int64), self.signatures(self._pending))
        self._pending.clear()
        self._pending_seq.clear()

    def signatures(self, texts: list[str]) -> np.ndarray:
        """The (bands, len(texts)) uint64 band hashes of `texts`: what `add` keeps of a row.
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
        sig = sig.reshape(self.cfg.bands, self.cfg.rows, len(offs))
        return _mix((sig * self._band_coef[None, :, None]).sum(axis=1, dtype=_U64))

    def add_signatures(self, seqs: np.ndarray, bands: np.ndarray) -> None:
        """Pass 1 for rows whose `signatures` were computed elsewhere (e.g. in worker processes)."""
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
        self._flush()
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

    def __contains__(self, seq: int) -> bool:
        """Was `seq` added? (after finalize; lets pass 2 skip rows dropped upstream)."""
        self.finalize()
        assert self._seqs is not None
        k = int(np.searchsorted(self._seqs, seq))
        return k < len(self._seqs) and int(self._seqs[k]) == seq

    def clusters(self) -> dict[int, list[int]]:
        """Kept representative seq -> removed seqs (for the dataset card)."""
        out: dict[int, list[int]] = defaultdict(list)
        for r, k in zip(self.removed, self.kept_by):
            out[k].append(r)
        return dict(out)

    def nbytes(self) -> int:
        """Bytes held by the index arrays now (pass 1: band hashes; pass 2: pairs)."""
        arrs = self._chunks + self._seq_chunks
        if self._seqs is not None:
            arrs += [self._seqs, self._pairs, self._left, self._left_last, *self._live.values()]
        return sum(a.nbytes for a in arrs) + self.removed.itemsize * 2 * len(self.removed)


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


def build_near_dup_index(records: Iterable[Record], cfg: NearDupConfig = NearDupConfig()) -> NearDupIndex:
    """Pass 1 over the rows that survived the earlier steps."""
    index = NearDupIndex(cfg)
    for rec in records:
        index.add(rec.seq, record_text(rec, cfg.fields))
    index.finalize()
    return index


def apply_near_dup(records: Iterable[Record], index: NearDupIndex, counter: Counter[str],
                   skip_unknown: bool = False) -> Iterator[tuple[Record, str | None]]:
    """Pass 2 over the same rows in ascending seq: (record, "near_duplicate") or (record, None).
    skip_unknown: silently pass over rows never added (already rejected upstream in pass 1),
    so pass 2 can iterate the store directly instead of re-running the earlier steps."""
    for rec in records:
        if skip_unknown and rec.seq not in index:
            continue
        if index.resolve(rec.seq, record_text(rec, index.cfg.fields)) is None:
            yield rec, None
        else:
            counter["near_duplicate"] += 1
            yield rec, "near_duplicate"


def near_dup_removals(docs: Iterable[tuple[int, str]], cfg: NearDupConfig = NearDupConfig()) -> dict[int, int]:
    """In-memory convenience (tests, small data): removed seq -> kept seq, both passes."""
    docs = sorted(docs)
    index = NearDupIndex(cfg)
    for seq, text in docs:
        index.add(seq, text)
    for seq, text in docs:
        index.resolve(seq, text)
    return dict(zip(index.removed, index.kept_by))

