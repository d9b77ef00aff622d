"""Store → steps → files. Steps are generators over Records yielding (record, drop reason or None);
every drop is counted with its reason and written to `rejected.jsonl`.

Pass 1 streams the answered rows through the quality filters, exact dedup and decontamination, and
adds the survivors to the near-dup index. Pass 2 streams the store again, keeps pass 1's survivors,
drops near-duplicates (each verified by exact Jaccard), splits by a stable hash of the job id and
writes every file. Near-duplicates are removed before the split, so none straddles train and test.
The folder is written to a temporary sibling and swapped in whole.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Export
from ..errors import ConfigError
from .decontam import Decontaminator, apply_decontam, load_eval_texts
from .dedup import ExactDedup, NearDupConfig, NearDupIndex, apply_exact_dedup, apply_near_dup, record_text
from .filters import DEFAULT_REFUSAL_PHRASES, FilterConfig, apply_filters
from .formats import FORMATS
from .record import Record
from .writers import SplitWriter, write_hf, write_llamafactory_info

Step = Callable[[Iterable[Record]], Iterator[tuple[Record, "str | None"]]]


@dataclass
class ExportReport:
    out: Path
    format: str
    selected: int = 0
    dropped: Counter[str] = field(default_factory=Counter)          # reason → rows
    rows: dict[str, int] = field(default_factory=dict)                # split → rows written
    steps: list[tuple[str, int, int]] = field(default_factory=list)   # (step, kept, dropped)
    near_dup_clusters: int = 0
    decontamination: dict[str, int] = field(default_factory=dict)     # eval set → rows dropped
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llamafactory: bool = False

    @property
    def kept(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "format": self.format, "selected": self.selected,
                "dropped": dict(self.dropped), "rows": self.rows,
                "steps": [{"step": s, "kept": k, "dropped": d} for s, k, d in self.steps],
                "near_dup_clusters": self.near_dup_clusters, "decontamination": self.decontamination,
                "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


def split_of(job_id: str, test_size: float) -> str:
    """A stable split: the same job always lands in the same split, whatever else changes."""
    if test_size <= 0:
        return "train"
    bucket = int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8, person=b"split").digest()) / 2**64
    return "test" if bucket < test_size else "train"


def filter_config(settings: Export) -> FilterConfig:
    f = settings.filters
    phrases = tuple(f.refusal_phrases) if f.refusal_phrases is not None else DEFAULT_REFUSAL_PHRASES
    return FilterConfig(truncated=f.truncated, empty=f.empty, min_tokens=f.min_tokens, max_tokens=f.max_tokens,
                        refusal=f.refusal, refusal_phrases=phrases, extra_refusal_phrases=tuple(f.extra_refusal_phrases),
                        placeholder=f.placeholder, list_numbering=f.list_numbering, repetition=f.repetition,
                        max_rep_share=f.max_repeated_share, prompt_echo=f.prompt_echo)


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


class _Rejects:
    """Writes dropped rows with their reason, and counts what each step let through."""

    def __init__(self, path: Path) -> None:
        self.file = open(path, "w", encoding="utf-8")

    def keep(self, pairs: Iterator[tuple[Record, str | None]], counts: list[int], i: int) -> Iterator[Record]:
        for rec, reason in pairs:
            if reason is None:
                counts[i] += 1
                yield rec
            else:
                self.file.write(json.dumps({"reason": reason, "job_id": rec.job_id, "seq": rec.seq, "source": rec.source,
                                            "messages": rec.messages, "answer": rec.answer,
                                            "finish_reason": rec.finish_reason}, ensure_ascii=False) + "\n")

    def close(self) -> None:
        self.file.close()


def _chain(records: Iterable[Record], steps: list[tuple[str, Step]], rejects: _Rejects,
           counts: list[int]) -> Iterator[Record]:
    stream: Iterable[Record] = records
    for i, (_, step) in enumerate(steps):
        stream = rejects.keep(step(stream), counts, i)
    return iter(stream)


def _counted(records: Iterable[Record], box: list[int]) -> Iterator[Record]:
    for r in records:
        box[0] += 1
        yield r


def run_export(source: Callable[[], Iterable[Record]], out: Path, settings: Export, *,
               fmt: str | None = None, name: str = "dataset",
               card: Callable[[ExportReport], str] | None = None) -> ExportReport:
    """Stream `source()` (called once per pass) through the steps into `out`, replaced whole on success."""
    fmt = fmt or settings.format
    if fmt not in FORMATS:
        raise ConfigError(f"export.format: unknown format {fmt!r}; choose from {', '.join(sorted(FORMATS))}")
    decon = load_decontaminator(settings)  # before anything is written: a bad eval file is a config error
    report = ExportReport(out=out, format=fmt)
    counter = report.dropped
    steps: list[tuple[str, Step]] = []
    if settings.filters.enabled:
        cfg = filter_config(settings)
        steps.append(("quality filters", lambda s: apply_filters(s, cfg, counter)))
    if settings.dedup.exact:
        exact = ExactDedup("prompt+answer")
        steps.append(("exact dedup", lambda s: apply_exact_dedup(s, exact, counter)))
    if decon is not None:
        steps.append(("decontamination", lambda s: apply_decontam(s, decon, counter)))
    near = NearDupIndex(NearDupConfig(threshold=settings.dedup.threshold, fields=settings.dedup.on)) \
        if settings.dedup.near else None

    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    rejects = _Rejects(staging / "rejected.jsonl")
    try:
        selected = [0]
        names = [step_name for step_name, _ in steps]
        counts = [0] * (len(steps) + 1)
        survivors = _chain(_counted(source(), selected), steps, rejects, counts)
        if near is not None:  # pass 1 ends at the index; pass 2 reads the store again
            for rec in survivors:
                near.add(rec.seq, record_text(rec, near.cfg.fields))
            near.finalize()
            survivors = rejects.keep(apply_near_dup(source(), near, counter, skip_unknown=True), counts, len(steps))
            names.append("near-duplicate removal")
        _write_rows(survivors, staging, fmt, settings, report)
        report.selected = selected[0]
        before = report.selected
        for step_name, kept in zip(names, counts):
            report.steps.append((step_name, kept, before - kept))
            before = kept
        if near is not None:
            report.near_dup_clusters = len(near.clusters())
        if decon is not None:
            report.decontamination = dict(decon.hits)
        rejects.close()
        report.llamafactory = write_llamafactory_info(staging, name, fmt, sorted(report.rows))
        (staging / "stats.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        if card is not None:
            (staging / "README.md").write_text(card(report), encoding="utf-8")
        _swap_in(staging, out)
    except BaseException:
        rejects.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    report.out = out
    return report


def _write_rows(records: Iterable[Record], folder: Path, fmt: str, settings: Export, report: ExportReport) -> None:
    to_row = FORMATS[fmt]
    writers: dict[str, SplitWriter] = {}
    try:
        for r in records:
            split = split_of(r.job_id, settings.test_size)
            writer = writers.get(split)
            if writer is None:
                writer = writers[split] = SplitWriter(folder, split, fmt, settings.shard_rows)
            writer.write(to_row(r))
            report.prompt_tokens += r.prompt_tokens or 0
            report.completion_tokens += r.completion_tokens or 0
        if "train" not in writers:  # an empty export is still a valid dataset
            writers["train"] = SplitWriter(folder, "train", fmt, settings.shard_rows)
    finally:
        shards = {split: w.close() for split, w in writers.items()}
    report.rows = {split: w.rows for split, w in writers.items()}
    write_hf(folder, shards)


def _swap_in(staging: Path, out: Path) -> None:
    """Replace `out` by `staging` so readers never see a half-written export."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        out.rename(old)
    staging.rename(out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
