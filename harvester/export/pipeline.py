"""Store → steps → files. Every step is a generator over Records; every drop is counted with its reason.

Layout of an export folder (written to a temporary sibling, then swapped in whole):
    train.jsonl / test.jsonl     rows in the chosen trainer format
    hf/                          the same as a `datasets.DatasetDict` (save_to_disk)
    stats.json                   what each step kept and dropped
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets

from ..hashing import content_hash, text_key
from .formats import FORMATS
from .record import Record


@dataclass
class ExportReport:
    out: Path
    format: str
    selected: int = 0
    dropped: Counter[str] = field(default_factory=Counter)   # reason → rows
    rows: dict[str, int] = field(default_factory=dict)          # split → rows written
    steps: list[tuple[str, int, int]] = field(default_factory=list)  # (step, kept, dropped)

    @property
    def kept(self) -> int:
        return sum(self.rows.values())

    def as_dict(self) -> dict[str, Any]:
        return {"out": str(self.out), "format": self.format, "selected": self.selected,
                "dropped": dict(self.dropped), "rows": self.rows,
                "steps": [{"step": s, "kept": k, "dropped": d} for s, k, d in self.steps]}


def exact_dedup(records: Iterable[Record], dropped: Counter[str]) -> Iterator[Record]:
    """Keep the first of every (prompt, answer) pair equal after folding case, space and punctuation."""
    seen: set[bytes] = set()
    for r in records:
        key = bytes.fromhex(text_key(r.prompt_text, r.answer))
        if key in seen:
            dropped["exact_duplicate"] += 1
            continue
        seen.add(key)
        yield r


def split_of(job_id: str, test_size: float) -> str:
    """A stable split: the same job always lands in the same split, whatever else changes."""
    if test_size <= 0:
        return "train"
    bucket = int(content_hash({"split": job_id}, 8), 16) / 0xFFFFFFFF
    return "test" if bucket < test_size else "train"


class _Counted:
    """Counts what passes through, for the per-step table."""

    def __init__(self, records: Iterable[Record]) -> None:
        self.records = records
        self.n = 0

    def __iter__(self) -> Iterator[Record]:
        for r in self.records:
            self.n += 1
            yield r


def run_export(records: Iterable[Record], out: Path, *, fmt: str = "openai", test_size: float = 0.0,
               dedup: bool = True) -> tuple[ExportReport, datasets.DatasetDict]:
    """Stream `records` through the steps into `out` (replaced whole on success)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {sorted(FORMATS)}")
    report = ExportReport(out=out, format=fmt)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        selected = _Counted(records)
        stream: Iterable[Record] = selected
        stages: list[tuple[str, _Counted]] = []
        if dedup:
            stream = _Counted(exact_dedup(stream, report.dropped))
            stages.append(("exact dedup", stream))  # type: ignore[arg-type]
        to_row = FORMATS[fmt]
        files: dict[str, Any] = {}
        try:
            for r in stream:
                split = split_of(r.job_id, test_size)
                if split not in files:
                    files[split] = open(staging / f"{split}.jsonl", "w", encoding="utf-8")
                files[split].write(json.dumps(to_row(r), ensure_ascii=False) + "\n")
                report.rows[split] = report.rows.get(split, 0) + 1
        finally:
            for f in files.values():
                f.close()
        report.selected = selected.n
        before = selected.n
        for name, counted in stages:
            report.steps.append((name, counted.n, before - counted.n))
            before = counted.n
        dataset = _write_hf(staging, report)
        (staging / "stats.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
        _swap_in(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return report, datasets.load_from_disk(str(out / "hf"))


def _write_hf(folder: Path, report: ExportReport) -> datasets.DatasetDict:
    datasets.disable_progress_bars()  # our own table reports the export
    cache = folder / ".cache"
    splits = {}
    for split in sorted(report.rows):
        splits[split] = datasets.Dataset.from_json(str(folder / f"{split}.jsonl"), cache_dir=str(cache))
    if not splits:  # an empty export is still a valid dataset
        (folder / "train.jsonl").touch()
        splits["train"] = datasets.Dataset.from_dict({})
        report.rows["train"] = 0
    dd = datasets.DatasetDict(splits)
    dd.save_to_disk(str(folder / "hf"))
    shutil.rmtree(cache, ignore_errors=True)
    return dd


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
