"""The export's own two passes over in-memory rows, for tests of its steps: pass 1 as the product runs
it (`Analyzer.analyze` + `decide`), pass 2 through `pipeline._survivors` (near-dups resolved there)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from harvester.export.analyze import Analyzer, Decisions, decide
from harvester.export.decontam import Decontaminator
from harvester.export.dedup import Fields, NearDupConfig
from harvester.export.filters import FilterConfig
from harvester.export.pipeline import _survivors
from harvester.store.rows import Record


class Rejects:
    """Stands in for the pipeline's rejected.jsonl writer: seq -> (reason, job id of the row kept)."""

    def __init__(self) -> None:
        self.rows: dict[int, tuple[str, str | None]] = {}

    def write(self, rec: Record, reason: str, duplicate_of: str | None = None) -> None:
        self.rows[rec.seq] = (reason, duplicate_of)


def pass1(records: Iterable[Record], *, filters: FilterConfig | None = None, exact: Fields | None = None,
          decontaminator: Decontaminator | None = None, near: NearDupConfig | None = None,
          batch: int = 1024) -> Decisions:
    """Pass 1 with only the given steps on (rows in ascending seq)."""
    a = Analyzer(filters=filters, exact=exact, decontaminator=decontaminator, near=near, batch=batch)
    return decide(a.analyze(records), filters=filters is not None, exact=exact is not None,
                  decontaminate=decontaminator is not None, near=near)


def export_reasons(records: Iterable[Record], **steps: Any) -> tuple[list[str | None], Decisions]:
    """Each row's drop reason after both passes (None: written), in input order, and pass 1's decisions."""
    records = list(records)
    ordered = sorted(records, key=lambda r: r.seq)
    decisions = pass1(ordered, **steps)
    rejects = Rejects()
    written = {r.seq for r in _survivors(ordered, decisions, rejects, Counter())}
    assert written.isdisjoint(rejects.rows) and len(written) + len(rejects.rows) == len(records)
    return [rejects.rows[r.seq][0] if r.seq in rejects.rows else None for r in records], decisions


def counts(reasons: Iterable[str | None]) -> Counter[str]:
    return Counter(r for r in reasons if r is not None)


def near_dup_removals(docs: Iterable[tuple[int, str]], cfg: NearDupConfig = NearDupConfig()) -> dict[int, int]:
    """removed seq -> kept seq, through both passes of the export (each doc is a row's answer)."""
    recs = [Record(job_id=f"j{seq}", prompt_key="p", seq=seq, sample_index=0,
                   messages=[{"role": "user", "content": "Q?"}], answer=text) for seq, text in docs]
    _, decisions = export_reasons(recs, near=cfg)
    assert decisions.near is not None
    return dict(zip(decisions.near.removed, decisions.near.kept_by))
