"""What a plan is, in words: its description (model, params, prompt files and their counts), kept in
the store's meta as `plan:<plan_key>` when the plan is planned, and what changed since an earlier plan.

A changed parameter or prompt is a new plan (job ids hash the request), as designed; these
descriptions make that visible before anything is paid again: "the last one differs: max_tokens
256 → 300".
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from .config import Job
from .hashing import canonical_json, content_hash
from .prompts import plan
from .results import EarlierPlans
from .shape_load import shapes_for
from .store.rows import JobSpec

META_PREFIX = "plan:"


class PlanReader:
    """Reads a job file's specs once, and counts on the way what the plan's description needs.

    `distinct=True` yields each job once (the first of duplicate rows) and counts the merged ones in
    memory (8 bytes of id a job); otherwise every spec is yielded (the store merges them)."""

    def __init__(self, job: Job, *, distinct: bool = False) -> None:
        self.job = job
        self.distinct = distinct
        self.counts = [0] * len(job.prompts)
        self.rows = 0                 # job specs read, duplicates included (prompts × samples)
        self.jobs = 0                 # distinct jobs (only with distinct=True)
        self._digest = hashlib.sha256()
        self._content = [hashlib.sha256() for _ in job.prompts]
        self._seen: set[int] = set()
        self.done_reading = False

    def __iter__(self) -> Iterator[JobSpec]:
        current = 0
        for spec in plan(self.job, self.counts):
            while current + 1 < len(self.counts) and self.counts[current + 1] > 0:
                current += 1
            self.rows += 1
            self._digest.update(spec.id.encode())
            if spec.sample_index == 0:
                self._content[current].update(spec.prompt_key.encode())
            if self.distinct:
                short = int(spec.id[:16], 16)
                if short in self._seen:
                    continue
                self._seen.add(short)
                self.jobs += 1
            yield spec
        self.done_reading = True

    @property
    def key(self) -> str:
        """The plan key: the same hash as `Harvester.plan_key()` (of every spec's id, in order)."""
        return self._digest.hexdigest()[:32]

    def description(self, jobs: int) -> dict[str, Any]:
        """The plan in words, once read; `jobs` is the number of distinct jobs."""
        return {"model": self.job.teacher.model, "params": self.job.teacher.params,
                "prompts": [{"path": str(ps.path), "samples": ps.samples, "format": ps.format, "rows": n,
                             "content": c.hexdigest()[:16]}
                            for ps, n, c in zip(self.job.prompts, self.counts, self._content)],
                "rows": self.rows, "jobs": jobs, "merged": max(0, self.rows - jobs), "planned_at": time.time(),
                "schemas": [None if s is None else f"{s.name} ({s.source}, {content_hash(s.schema, 8)})"
                            for s in shapes_for(self.job)]}


def encode(description: dict[str, Any]) -> str:
    return canonical_json(description)


def decode(text: str | None) -> dict[str, Any] | None:
    if not text:
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _value(v: Any) -> str:
    return "unset" if v is _UNSET else json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v


_UNSET = object()


def differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """What changed from plan `old` to plan `new`, e.g. ["max_tokens 256 → 300", "prompts.jsonl 20 → 21 rows"]."""
    out: list[str] = []
    if old.get("model") != new.get("model"):
        out.append(f"model {old.get('model')} → {new.get('model')}")
    op, np_ = old.get("params") or {}, new.get("params") or {}
    for name in sorted(set(op) | set(np_)):
        a, b = op.get(name, _UNSET), np_.get(name, _UNSET)
        if a != b:
            out.append(f"{name} {_value(a)} → {_value(b)}")
    old_schemas, new_schemas = old.get("schemas") or [], new.get("schemas") or []
    if any(old_schemas) or any(new_schemas):
        if old_schemas != new_schemas:
            def said(schemas: list[Any]) -> str:
                return ", ".join(s or "none" for s in schemas) or "none"
            out.append(f"response schema {said(old_schemas)} → {said(new_schemas)}")
    old_sets = {p["path"]: p for p in old.get("prompts") or []}
    new_sets = {p["path"]: p for p in new.get("prompts") or []}
    names = {p: Path(p).name for p in set(old_sets) | set(new_sets)}
    if len(set(names.values())) < len(names):     # two files of one name: show the paths
        names = {p: p for p in names}
    for path, p in new_sets.items():
        before = old_sets.get(path)
        if before is None:
            out.append(f"prompt file added: {names[path]} ({p['rows']:,} prompts)")
            continue
        if before.get("samples") != p.get("samples"):
            out.append(f"{names[path]} samples {before.get('samples')} → {p.get('samples')}")
        if before.get("rows") != p.get("rows"):
            out.append(f"{names[path]} {before.get('rows'):,} → {p.get('rows'):,} prompts")
        elif before.get("content") != p.get("content"):
            out.append(f"{names[path]} edited ({p.get('rows'):,} prompts)")
    for path, p in old_sets.items():
        if path not in new_sets:
            out.append(f"prompt file removed: {names[path]} ({p.get('rows', 0):,} prompts)")
    return out


def earlier_plans(plans: list[dict[str, Any]], current: dict[str, Any] | None,
                  describe: dict[str, dict[str, Any] | None], reused: int = 0) -> EarlierPlans | None:
    """The notice about earlier plans of this job that hold answers: `plans` from
    `Store.plans_with_answers` (most recent first), `describe` their descriptions by key, `reused`
    their answers that this plan shares (same request: not paid again). None if there are none."""
    if not plans:
        return None
    answers = sum(p["answers"] for p in plans)
    last = plans[0]
    old = describe.get(last["plan_key"])
    if old is None or current is None:
        changes: list[str] = []
        what = "the last one was planned by an older harvester (no description kept)"
    else:
        changes = differences(old, current)
        what = "the last one differs: " + ("; ".join(changes) if changes else "in its prompts' order")
    n = len(plans)
    kept = answers - reused
    holds = (f"{n} earlier plan{'s' if n != 1 else ''} of this job hold{'' if n != 1 else 's'} {answers:,} "
             f"answer{'s' if answers != 1 else ''}")
    if reused and not kept:
        message = f"{holds}, all of them requests of this plan too: reused, not paid again; {what}"
    elif reused:
        message = (f"{holds}; {what}; {reused:,} of them {'is a request' if reused == 1 else 'are requests'} of "
                   f"this plan too and reused; the other {kept:,} {'is' if kept == 1 else 'are'} not (a changed "
                   "request is a new job)")
    else:
        message = f"{holds}; {what}; these answers are not reused (a changed request is a new job)"
    return {"plans": n, "answers": answers, "reused": reused, "last_plan": last["plan_key"], "changes": changes,
            "message": message}
