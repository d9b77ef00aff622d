"""Pass 1 of the export as columns: what each row's own text says about it, and the decisions
that depend on row order, made over those columns.

`Analyzer.analyze(records)` is pure and works on any slice of the store, so slices can run in
separate processes (see `pipeline`): per row it keeps the quality-filter verdict, a 128-bit
exact-dedup key, the eval sets the row hits, and the near-dup band hashes (~200 B per row).
`decide(verdicts)` then joins the slices in seq order and settles what needs order: the first
of each exact group is kept, contaminated rows go, the rest feed the near-dup index.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice

import numpy as np

from ..store.rows import Record
from .decontam import Decontaminator, record_words
from .dedup import Fields, NearDupConfig, NearDupIndex, exact_key, record_text
from .filters import REASONS, FilterConfig, filter_reason

KEEP = 0
EXACT = len(REASONS) + 1           # filter reasons are 1..len(REASONS)
CONTAMINATED = EXACT + 1
_CODE = {reason: i + 1 for i, reason in enumerate(REASONS)}


@dataclass
class Verdicts:
    """Pass-1 results for rows in ascending seq; columns, so they pickle and concatenate cheaply."""

    seq: np.ndarray                                  # int64
    code: np.ndarray                                 # uint8: KEEP, a filter reason (1..), EXACT, CONTAMINATED
    key: np.ndarray                                  # (n, 2) uint64 exact-dedup key; 0 if filtered out
    bucket: np.ndarray                               # uint64 split hash of the job id (see split_hash)
    bands: list[np.ndarray] | None                   # near-dup signatures, (bands, m) uint64 chunks in row
                                                     # order (never joined: 160 B/row); None if off
    hits: dict[int, tuple[str, ...]] = field(default_factory=dict)   # row position -> eval sets hit

    def __len__(self) -> int:
        return len(self.seq)

    def reason(self, i: int) -> str | None:
        """Why row `i` is dropped (None: kept so far)."""
        c = int(self.code[i])
        if c == KEEP:
            return None
        if c == EXACT:
            return "exact_duplicate"
        if c == CONTAMINATED:
            return "contaminated:" + "+".join(self.hits[i])
        return REASONS[c - 1]

    @staticmethod
    def concat(parts: list[Verdicts], near: bool) -> Verdicts:
        """Slices in seq order → one."""
        hits, offset = {}, 0
        for p in parts:
            hits.update({offset + i: names for i, names in p.hits.items()})
            offset += len(p)
        return Verdicts(np.concatenate([p.seq for p in parts]) if parts else np.empty(0, np.int64),
                        np.concatenate([p.code for p in parts]) if parts else np.empty(0, np.uint8),
                        np.concatenate([p.key for p in parts]) if parts else np.empty((0, 2), np.uint64),
                        np.concatenate([p.bucket for p in parts]) if parts else np.empty(0, np.uint64),
                        [b for p in parts for b in p.bands or ()] if near else None, hits)


@dataclass
class Analyzer:
    """Per-row checks; each part is off when None. Holds no state between calls."""

    filters: FilterConfig | None = None
    exact: Fields | None = "prompt+answer"
    decontaminator: Decontaminator | None = None
    near: NearDupConfig | None = None
    batch: int = 1024                                # rows per vectorized decontam/MinHash call

    def analyze(self, records: Iterable[Record]) -> Verdicts:
        """Verdicts for `records` (ascending seq)."""
        it = iter(records)
        parts = []
        while chunk := list(islice(it, self.batch)):
            parts.append(self._analyze_batch(chunk))
        v = Verdicts.concat(parts, self.near is not None)
        if v.bands:
            v.bands = [np.concatenate(v.bands, axis=1)]     # one array per slice: cheap to pickle
        return v

    def _analyze_batch(self, records: list[Record]) -> Verdicts:
        n = len(records)
        code = np.zeros(n, np.uint8)
        key = np.zeros((n, 2), np.uint64)
        keys = key.view(np.uint8).reshape(n, 16)
        survivors: list[int] = []
        for i, rec in enumerate(records):
            reason = filter_reason(rec, self.filters) if self.filters is not None else None
            if reason is not None:
                code[i] = _CODE[reason]
                continue
            survivors.append(i)
            if self.exact is not None:
                keys[i] = np.frombuffer(exact_key(rec, self.exact), np.uint8)
        hits: dict[int, tuple[str, ...]] = {}
        if self.decontaminator is not None and survivors:
            found = self.decontaminator.batch_hits([record_words(records[i]) for i in survivors])
            hits = {i: tuple(names) for i, names in zip(survivors, found) if names}
        bands = None
        if self.near is not None:
            bands = np.zeros((self.near.bands, n), np.uint64)
            if survivors:
                bands[:, survivors] = _index(self.near).signatures(
                    [record_text(records[i], self.near.fields) for i in survivors])
        return Verdicts(np.fromiter((r.seq for r in records), np.int64, n), code, key,
                        np.fromiter((split_hash(r.job_id) for r in records), np.uint64, n),
                        None if bands is None else [bands], hits)


def split_hash(job_id: str) -> int:
    """A job's place in [0, 2**64): below test_size × 2**64 it is in the test split, whatever else changes."""
    return int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8, person=b"split").digest())


@lru_cache(maxsize=4)
def _index(cfg: NearDupConfig) -> NearDupIndex:
    """An index used only for its (stateless) `signatures`: its permutations depend on cfg alone."""
    return NearDupIndex(cfg)


@dataclass
class Decisions:
    """What pass 1 settled, in seq order: the verdicts with their final codes, drops per step."""

    verdicts: Verdicts
    steps: list[tuple[str, int, int]]                # (step, kept, dropped), in order
    dropped: Counter[str]                            # reason -> rows
    decontamination: Counter[str]                    # eval set -> rows dropped that hit it
    near: NearDupIndex | None                        # finalized, ready for pass 2; None if off
    # each exact duplicate's seq (ascending) and the seq of the row kept in its place
    duplicates: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    duplicate_of: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))


def decide(v: Verdicts, *, filters: bool = True, exact: bool = True, decontaminate: bool = False,
           near: NearDupConfig | None = None) -> Decisions:
    """Settle the order-dependent steps over pass-1 columns (no I/O; mutates `v.code`)."""
    if np.any(v.seq[1:] <= v.seq[:-1]):
        raise ValueError("verdicts must be in strictly ascending seq")
    steps: list[tuple[str, int, int]] = []
    dropped: Counter[str] = Counter()
    for c, count in zip(*np.unique(v.code, return_counts=True)):
        if c != KEEP:
            dropped[REASONS[int(c) - 1]] = int(count)
    alive = v.code == KEEP
    if filters:
        steps.append(("quality filters", int(alive.sum()), len(v) - int(alive.sum())))
    duplicates = duplicate_of = np.empty(0, np.int64)
    if exact:
        idx = np.flatnonzero(alive)
        duplicates, duplicate_of = _exact_groups(v.key[idx], v.seq[idx])
        v.code[np.searchsorted(v.seq, duplicates)] = EXACT
        if len(duplicates):
            dropped["exact_duplicate"] = len(duplicates)
        steps.append(("exact dedup", len(idx) - len(duplicates), len(duplicates)))
        alive = v.code == KEEP
    decontamination: Counter[str] = Counter()
    if decontaminate:
        before = int(alive.sum())
        for i, names in v.hits.items():
            if alive[i]:
                v.code[i] = CONTAMINATED
                decontamination.update(names)
                dropped["contaminated:" + "+".join(names)] += 1
        alive = v.code == KEEP
        steps.append(("decontamination", int(alive.sum()), before - int(alive.sum())))
    index = None
    if near is not None:
        assert v.bands is not None
        index = NearDupIndex(near)
        offset = 0
        while v.bands:                 # the index takes each chunk over (or its kept columns): no second copy
            chunk = v.bands.pop(0)
            m = chunk.shape[1]
            keep = alive[offset:offset + m]
            index.add_signatures(v.seq[offset:offset + m][keep], chunk if keep.all() else chunk[:, keep])
            offset += m
        if offset != len(v):
            raise ValueError(f"signatures for {offset} rows, verdicts for {len(v)}")
        v.bands = None
        index.finalize()
    return Decisions(v, steps, dropped, decontamination, index, duplicates, duplicate_of)


def _exact_groups(keys: np.ndarray, seqs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(seqs of the rows repeating an earlier row's key, ascending; the seq of that earliest row)."""
    if len(keys) < 2:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    order = np.lexsort((keys[:, 1], keys[:, 0]))            # stable: a group's first row heads it
    ks = keys[order]
    repeat = np.concatenate(([False], np.all(ks[1:] == ks[:-1], axis=1)))
    heads = np.flatnonzero(~repeat)                          # sorted positions heading each group
    head = order[heads[np.cumsum(~repeat) - 1]]              # each sorted row's group head
    dups, kept = seqs[order[repeat]], seqs[head[repeat]]
    by_seq = np.argsort(dups, kind="stable")
    return dups[by_seq], kept[by_seq]
