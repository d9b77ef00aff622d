"""Store → files, in two passes; every drop is counted with its reason and written to `rejected.jsonl`.

Pass 1 (`analyze`) reads the answered rows in slices of seq, in worker processes when the export is
big, and reduces each row to columns: filter verdict, exact-dedup key, eval sets hit, near-dup band
hashes. The order-dependent steps are then settled over those columns (`decide`): first of each exact
group kept, contaminated rows dropped, the near-dup index built. Pass 2 streams the store again in
seq order, drops near-duplicates (each verified by exact Jaccard against a kept row), splits by a
stable hash of the job id and writes every file. Near-duplicates are removed before the split, so
none straddles train and test. The folder is written to a temporary sibling and swapped in whole,
and only over a folder an export may replace (harvester.export.target).
"""

from __future__ import annotations

import ctypes
import json
import multiprocessing
import os
import shutil
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from .. import __version__
from ..config import Export
from ..errors import ConfigError, HarvesterError
from ..results import Provenance
from ..shape import Invalid
from ..store.rows import Record
from .analyze import KEEP, Analyzer, Decisions, Verdicts, decide, split_hash
from .decontam import Decontaminator, load_eval_texts
from .dedup import NearDupConfig, record_text
from .filters import FilterConfig
from .formats import FORMATS, JSONL_EXTRAS, keep_columns, table_row, with_reasoning
from .lengths import length_histogram
from .shaped import ShapedColumns
from .staging import new_staging, swap_in
from .target import Protected, absolute, previous_export, write_marker
from .writers import SplitWriter, write_hf, write_llamafactory_info

PARALLEL_MIN_ROWS = 20_000      # below this, starting processes costs more than it saves
SLICES_PER_WORKER = 4           # smaller slices even out workers that run at different speeds
CLUSTER_EXAMPLES = 3            # near-duplicate clusters named in stats.json and the report, the biggest
SLICE_ROWS = 25_000             # at most (on average): a worker's memory stays flat as exports grow


class RecordSource(Protocol):
    """Where an export reads its rows; picklable, so worker processes can open it themselves."""

    def bounds(self) -> tuple[int, int, int]:
        """(rows, lowest seq, highest seq)."""
        ...

    def records(self, seqs: tuple[int, int] | None = None) -> Iterable[Record]:
        """Rows in ascending seq, only lo <= seq < hi with `seqs`."""
        ...


@dataclass
class ExportReport:
    out: Path
    format: str
    selected: int = 0
    dropped: Counter[str] = field(default_factory=Counter)          # reason → rows
    rows: dict[str, int] = field(default_factory=dict)                # split → rows written
    steps: list[tuple[str, int, int]] = field(default_factory=list)   # (step, kept, dropped)
    near_dup_clusters: int = 0
    clusters: list[dict[str, Any]] = field(default_factory=list)      # the biggest: kept seq, removed seqs
    decontamination: dict[str, int] = field(default_factory=dict)     # eval set → rows dropped
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_rows: int = 0                                           # rows written with a reasoning trace
    reasoning: str = "think"                                          # how traces were written
    llamafactory: bool = False
    workers: int = 1                                                  # processes in pass 1
    multi_turn_rows: int = 0                                          # rows with assistant turns of the prompt file
    keep: list[str] = field(default_factory=list)                     # export.keep columns written
    schemas: list[str] = field(default_factory=list)                  # response schemas: "name (source)"
    logprobs_rows: int = 0                                            # rows written with the teacher's logprobs
    without_logprobs: int = 0                                         # rows whose teacher sent none, though asked
    logprobs_asked: bool = False                                      # the plan asks for logprobs
    tokenizer: str | None = None                                      # the logprobs' tokens' tokenizer, where known
    notes: list[str] = field(default_factory=list)                    # what the user should know (no test split...)
    provenance: Provenance | None = None                              # runs, channels, cost (Harvester.provenance)
    lengths: Counter[tuple[int, bool]] = field(default_factory=Counter)  # rows selected by (tokens out, truncated)
    plots: list[tuple[str, str]] = field(default_factory=list)        # (title, path in the folder) of the card

    @property
    def kept(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict[str, Any]:
        # the folder's own name, not its path: stats.json travels with the dataset (no /home/... in it)
        return {"out": self.out.name, "format": self.format, "selected": self.selected,
                "dropped": dict(self.dropped), "rows": self.rows,
                "steps": [{"step": s, "kept": k, "dropped": d} for s, k, d in self.steps],
                "near_dup_clusters": self.near_dup_clusters, "clusters": self.clusters,
                "decontamination": self.decontamination, "lengths": length_histogram(self.lengths),
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "reasoning_rows": self.reasoning_rows, "reasoning": self.reasoning,
                "multi_turn_rows": self.multi_turn_rows, "keep": self.keep, "notes": self.notes,
                "schemas": self.schemas, "logprobs_rows": self.logprobs_rows,
                "without_logprobs": self.without_logprobs, "logprobs_asked": self.logprobs_asked,
                "tokenizer": self.tokenizer,
                "provenance": self.provenance, "plots": [{"title": t, "path": p} for t, p in self.plots]}


def split_of(job_id: str, test_size: float) -> str:
    """A stable split: the same job always lands in the same split, whatever else changes."""
    if test_size <= 0:
        return "train"
    return "test" if split_hash(job_id) / 2**64 < test_size else "train"


def promoted_to_test(v: Verdicts, test_size: float) -> tuple[set[int], str | None]:
    """Rows moved into the test split (by seq), and why there is no test split if there cannot be one.

    The split is decided row by row, so a small export can draw no test row at all (30 rows at 0.1: 4%
    of the time; 5 rows at 0.05: 77%). Then the surviving row whose hash is lowest goes to test: the
    choice depends on the job ids alone, so a rerun makes the same one."""
    if test_size <= 0:
        return set(), None
    alive = np.flatnonzero(v.code == KEEP)
    if len(alive) < 2:
        return set(), (f"no test split: {len(alive)} row{'' if len(alive) == 1 else 's'} left after the filters "
                       f"and dedup, and test_size {test_size:g} needs at least 2 (one for each split)")
    buckets = v.bucket[alive] / 2**64
    if (buckets < test_size).any():
        return set(), None
    return {int(v.seq[alive[int(np.argmin(v.bucket[alive]))]])}, None


# export.filters settings named otherwise in FilterConfig; every other one (but `enabled`) is its namesake
_FILTER_FIELD = {"max_repeated_share": "max_rep_share"}


def filter_config(settings: Export) -> FilterConfig:
    """The job file's `export.filters` as the filters take them (no refusal_phrases: the built-in list)."""
    given = settings.filters.model_dump(exclude={"enabled"}, exclude_none=False)
    if given["refusal_phrases"] is None:
        del given["refusal_phrases"]
    fields: dict[str, Any] = {_FILTER_FIELD.get(k, k): tuple(v) if isinstance(v, list) else v
                              for k, v in given.items()}
    return FilterConfig(**fields)


def load_decontaminator(settings: Export) -> Decontaminator | None:
    evals = settings.decontaminate.evals
    if not evals:
        return None
    texts = {}
    for name, path in evals.items():
        if not Path(path).is_file():
            raise ConfigError(f"export.decontaminate.evals.{name}: no such file {path}")
        try:
            texts[name] = list(load_eval_texts(path))
        except (ValueError, OSError, json.JSONDecodeError) as e:
            raise ConfigError(f"export.decontaminate.evals.{name}: cannot read {path} ({e})") from None
    return Decontaminator(texts, n=settings.decontaminate.ngram)


def analyzer_for(settings: Export) -> Analyzer:
    """The pass-1 checks the job file turns on (reads the eval files: a bad one is a ConfigError)."""
    return Analyzer(filters=filter_config(settings) if settings.filters.enabled else None,
                    exact="prompt+answer" if settings.dedup.exact else None,
                    decontaminator=load_decontaminator(settings),
                    near=NearDupConfig(threshold=settings.dedup.threshold, fields=settings.dedup.on)
                    if settings.dedup.near else None)


# ------------------------------------------------------------------------------------- pass 1
_worker: tuple[RecordSource, Analyzer] | None = None


_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


def _start_worker(source: RecordSource, analyzer: Analyzer) -> None:
    global _worker
    _worker = (source, analyzer)
    # The parent decides when to stop: Ctrl-C (sent to the whole process group) is its to handle,
    # and a worker it terminates dies at once, quietly (not through a handler inherited by fork).
    # Both signals were held since the fork (see analyze_source), so none came in between.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)


def _analyze_slice(seqs: tuple[int, int]) -> Verdicts:
    assert _worker is not None
    source, analyzer = _worker
    return analyzer.analyze(source.records(seqs))


def worker_count(rows: int, wanted: int | None) -> int:
    """`wanted`, or one process per usable CPU (at most 8) for big exports."""
    if wanted is not None:
        return wanted
    if rows < PARALLEL_MIN_ROWS:
        return 1
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(8, cpus))


def release_freed_memory() -> None:
    """Hand freed heap back to the OS. glibc keeps it after the big temporary arrays of a pass are
    freed (its mmap threshold rises after the first big free), so without this each pass would
    stack its high-water mark on the last one's. A no-op off glibc."""
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _stop_workers(pool: ProcessPoolExecutor) -> None:
    if hasattr(pool, "terminate_workers"):               # Python >= 3.14
        pool.terminate_workers()
        return
    for process in list((getattr(pool, "_processes", None) or {}).values()):
        process.terminate()


def start_method() -> str:
    """fork is cheap and needs no `if __name__ == "__main__"` guard in the caller's script, but is
    only safe in a process with no other thread (a lock held by one would stay held in the child)."""
    return "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"


def analyze_source(source: RecordSource, analyzer: Analyzer, workers: int | None = None) -> tuple[Verdicts, int]:
    """Pass 1 over the whole source: (verdicts in seq order, processes used)."""
    rows, lo, hi = source.bounds()
    k = min(worker_count(rows, workers), max(1, rows))
    if k == 1:
        return analyzer.analyze(source.records()), 1
    m = max(k * SLICES_PER_WORKER, -(-rows // SLICE_ROWS))
    cuts = [lo + (hi + 1 - lo) * i // m for i in range(m + 1)]
    slices = [(a, b) for a, b in zip(cuts, cuts[1:]) if b > a]
    pool = ProcessPoolExecutor(k, mp_context=multiprocessing.get_context(start_method()),
                               initializer=_start_worker, initargs=(source, analyzer))
    try:
        held = signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)   # the workers start here: a signal
        try:                                                              # waits until their handlers are set
            results = pool.map(_analyze_slice, slices)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, held)
        parts = list(results)
    except BrokenProcessPool:
        raise HarvesterError(f"export: a worker process of the first pass died (out of memory?); nothing was "
                             f"written. Rerun with fewer workers (now {k}), e.g. --workers 1") from None
    except BaseException:  # Ctrl-C, or a slice failed: stop the others now, not after their slices
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
    return Verdicts.concat(parts, analyzer.near is not None), k


# ------------------------------------------------------------------------------------- pass 2
class _Rejects:
    """Writes dropped rows with their reason (and, for an exact duplicate, the job id of the row kept)."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8")

    def write(self, rec: Record, reason: str, duplicate_of: str | None = None) -> None:
        row = {"reason": reason, "job_id": rec.job_id, "seq": rec.seq, "source": rec.source,
               "messages": rec.messages, "answer": rec.answer, "finish_reason": rec.finish_reason}
        if duplicate_of is not None:
            row["duplicate_of"] = duplicate_of
        self.file.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.file.close()


def _survivors(records: Iterable[Record], decisions: Decisions, rejects: _Rejects,
               lengths: Counter[tuple[int, bool]]) -> Iterator[Record]:
    """Pass 2: the rows pass 1 kept, minus near-duplicates; every other row goes to `rejects`. Every row
    selected is counted in `lengths` by (completion tokens, truncated). Rows answered after pass 1 are
    left for the next export."""
    v, near = decisions.verdicts, decisions.near
    seqs, codes = v.seq.tolist(), v.code.tobytes()   # plain Python: per-row numpy indexing is slow
    # an exact duplicate's kept row always comes first (the earliest of its group): remember its job id
    kept_of = dict(zip(decisions.duplicates.tolist(), decisions.duplicate_of.tolist()))
    heads = set(kept_of.values())
    head_ids: dict[int, str] = {}
    i, n = 0, len(seqs)
    for rec in records:
        while i < n and seqs[i] < rec.seq:
            i += 1
        if i == n or seqs[i] != rec.seq:
            continue
        lengths[(rec.completion_tokens or 0, rec.finish_reason == "length")] += 1
        if rec.seq in heads:
            head_ids[rec.seq] = rec.job_id
        reason = v.reason(i) if codes[i] else None
        i += 1
        if reason is None and near is not None and near.resolve(rec.seq, record_text(rec, near.cfg.fields)) is not None:
            reason = "near_duplicate"
        if reason is None:
            yield rec
        else:
            rejects.write(rec, reason, head_ids.get(kept_of[rec.seq]) if reason == "exact_duplicate" else None)


def check_out(source: RecordSource, out: Path, name: str, protected: Iterable[Protected]) -> None:
    """Refuse, before any work, a folder an export may not replace, and an export of no answer over a
    previous one (an edited copy of the job file, never run, would write an empty dataset over it)."""
    previous = previous_export(out, name, protected)
    if previous is not None and source.bounds()[0] == 0:
        raise ConfigError(f"export: job {name!r} has no answers for this job file's prompts and parameters "
                          f"(0 selected; an edited job file is a new plan), and {out} holds a previous export: "
                          f"it is left as it is. Run this job file first (`harvester run`), or export it to "
                          f"another folder (--out)")


def run_export(source: RecordSource, out: Path, settings: Export, *, fmt: str | None = None,
               name: str = "dataset", card: Callable[[ExportReport], str] | None = None,
               protected: Iterable[Protected] = (), provenance: Provenance | None = None,
               shaped: ShapedColumns | None = None,
               plots: Callable[[dict[str, Any], Path], list[tuple[str, str]]] | None = None) -> ExportReport:
    """Export `source` into `out`, replaced whole on success. `protected`: (what, path) that must never be
    inside what the export replaces (the store, the job file, prompt sets). `provenance` goes into
    `stats.json` as given, and the card reads it from there (one source for both). `plots` draws the
    report's figures into the folder as image files and says which (title, relative path), for the card."""
    fmt = fmt or settings.format
    if fmt not in FORMATS:
        raise ConfigError(f"export.format: unknown format {fmt!r}; choose from {', '.join(sorted(FORMATS))}")
    out, protected = absolute(out), list(protected)
    check_out(source, out, name, protected)
    analyzer = analyzer_for(settings)  # before anything is written: a bad eval file is a config error
    verdicts, workers = analyze_source(source, analyzer, settings.workers)
    decisions = decide(verdicts, filters=analyzer.filters is not None, exact=analyzer.exact is not None,
                       decontaminate=analyzer.decontaminator is not None, near=analyzer.near)
    release_freed_memory()
    report = ExportReport(out=out, format=fmt, selected=len(verdicts), dropped=decisions.dropped,
                          steps=list(decisions.steps), decontamination=dict(decisions.decontamination),
                          workers=workers, reasoning=settings.reasoning, keep=list(settings.keep),
                          provenance=provenance)
    shaped = shaped or ShapedColumns()
    report.schemas = [f"{s.name} ({s.source})" for s in shaped.shapes]
    report.logprobs_asked, report.tokenizer = shaped.logprobs, shaped.tokenizer
    promoted, no_test = promoted_to_test(decisions.verdicts, settings.test_size)
    staging = new_staging(out)
    rejects = _Rejects(staging / "rejected.jsonl")
    try:
        survivors = _survivors(source.records(), decisions, rejects, report.lengths)
        _write_rows(survivors, staging, fmt, settings, report, promoted, shaped, rejects)
        rejects.close()
        if decisions.near is not None:
            kept = report.steps[-1][1] if report.steps else report.selected
            removed = len(decisions.near.removed)
            report.steps.append(("near-duplicate removal", kept - removed, removed))
            if removed:
                report.dropped["near_duplicate"] = removed
            clusters = decisions.near.clusters()
            report.near_dup_clusters = len(clusters)
            biggest = sorted(clusters.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:CLUSTER_EXAMPLES]
            report.clusters = [{"kept": k, "removed": len(v), "examples": v[:2]} for k, v in biggest]
        if settings.test_size > 0 and not report.rows.get("test"):
            report.notes.append(no_test or "no test split: the rows drawn for it were removed as near-duplicates")
        report.llamafactory = write_llamafactory_info(staging, name, fmt, sorted(report.rows))
        if plots is not None:
            report.plots = plots(report.as_dict(), staging)
        (staging / "stats.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        if card is not None:
            (staging / "README.md").write_text(card(report), encoding="utf-8")
        write_marker(staging, name, fmt, __version__)
        swap_in(staging, out, name, protected)
    except BaseException:
        rejects.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.out = out
    return report


def _write_rows(records: Iterable[Record], folder: Path, fmt: str, settings: Export, report: ExportReport,
                promoted: set[int] | None = None, shaped: ShapedColumns | None = None,
                rejects: _Rejects | None = None) -> None:
    to_row, keep, promoted = FORMATS[fmt], settings.keep, promoted or set()
    shaped = shaped or ShapedColumns()
    extra_fields, builders = shaped.fields(), shaped.builders()
    writers: dict[str, SplitWriter] = {}
    try:
        for r in records:
            columns = shaped.values(r)
            if isinstance(columns, Invalid):   # stored before its schema was enforced: never an unparsed row
                report.dropped["invalid_answer"] += 1
                if rejects is not None:
                    rejects.write(r, "invalid_answer")
                continue
            split = "test" if r.seq in promoted else split_of(r.job_id, settings.test_size)
            writer = writers.get(split)
            if writer is None:
                writer = writers[split] = SplitWriter(folder, split, fmt, settings.shard_rows, keep=keep,
                                                      extra=extra_fields, builders=builders)
            if r.reasoning:
                report.reasoning_rows += 1
            if any(m["role"] == "assistant" for m in r.messages):
                report.multi_turn_rows += 1
            row = to_row(with_reasoning(r, settings.reasoning))
            extra = keep_columns(r, keep)
            writer.write({**row, **extra} if JSONL_EXTRAS[fmt] else row, {**table_row(fmt, row), **extra, **columns})
            if r.logprobs is not None:
                report.logprobs_rows += 1
            report.prompt_tokens += r.prompt_tokens or 0
            report.completion_tokens += r.completion_tokens or 0
        if "train" not in writers:  # an empty export is still a valid dataset
            writers["train"] = SplitWriter(folder, "train", fmt, settings.shard_rows, keep=keep, extra=extra_fields,
                                           builders=builders)
    finally:
        for w in writers.values():
            w.close()
    report.without_logprobs = shaped.without_logprobs
    if shaped.without_logprobs:
        report.notes.append(f"{shaped.without_logprobs} rows have no logprobs: the teacher sent none for them "
                            "although teacher.params asked (their logprobs column is null)")
    report.rows = {split: w.rows for split, w in writers.items()}
    release_freed_memory()  # write_hf maps the Arrow files: keep their pages off the last pass's heap
    write_hf(folder, {split: w.arrow for split, w in writers.items()})
