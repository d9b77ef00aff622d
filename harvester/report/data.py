"""What a report shows, gathered from the store alone: the same `status`, `quota` and export stats the
commands show (one source: the report calls them), and the store's time buckets for the charts."""

from __future__ import annotations

import json
import time
from typing import TYPE_CHECKING, Any

from ..config import Teacher
from ..store import timeline
from ..terms import resolve_terms
from . import series

if TYPE_CHECKING:
    from ..api import Harvester

EXPORT_META = "export:"       # + plan key: the last export's stats.json, its folder and when (Harvester.export)
EXAMPLE_CHARS = 240           # of a near-duplicate's answer shown as an example
RUN_COLUMNS = ("id", "owner", "started_at", "ended_at", "exit_reason", "sent", "answered", "rate_limited", "share")


def export_record(stats: dict[str, Any], folder: str, at: float) -> str:
    """What the store keeps of an export: its stats.json as written, where, and when."""
    return json.dumps({"stats": stats, "folder": folder, "at": at})


def headline(status: dict[str, Any], quota: dict[str, Any], export: dict[str, Any] | None) -> dict[str, Any]:
    """The numbers the page shows in large type, each read off what `status`, `quota` and stats.json hold."""
    rows = export["stats"]["rows"] if export else None
    return {"answers": status.get("done", 0), "failed": status.get("failed", 0), "jobs": status.get("jobs", 0),
            "requests": status.get("requests", 0),
            "rate_limited": (status.get("errors_by_kind") or {}).get(series.RATE_LIMITED, 0),
            "prompt_tokens": status.get("prompt_tokens", 0), "completion_tokens": status.get("completion_tokens", 0),
            "spend_usd": quota["total"]["usd"], "rows_kept": sum(rows.values()) if rows is not None else None}


def public_teacher(teacher: Teacher) -> dict[str, Any]:
    """The teacher as the page names it: never its key, nor the variable holding it."""
    return {"model": teacher.model, "base_url": teacher.base_url, "mode": teacher.mode,
            "params": teacher.params}


def gather(h: Harvester, *, now: float | None = None) -> dict[str, Any]:
    """Everything the page shows, as plain data: the commands' own figures, then the store's buckets."""
    store = h.store
    status: dict[str, Any] = dict(h.status())
    quota: dict[str, Any] = dict(h.quota())
    quota["terms"] = resolve_terms(h.job.teacher).model_dump(mode="json")
    plan_key = status["plan_key"]
    raw = store.get_meta(EXPORT_META + plan_key)
    export = json.loads(raw) if raw else None
    b = series.buckets_for(timeline.time_span(store, plan_key))
    runs = timeline.runs(store)
    data: dict[str, Any] = {
        "job": h.job.name, "store": status["store"], "plan_key": plan_key,
        "generated_at": time.time() if now is None else now,
        "teacher": public_teacher(h.job.teacher), "terms": quota["terms"],
        "status": status, "quota": quota, "export": export, "headline": headline(status, quota, export),
        "t": [b.start(i) for i in range(b.count)], "width": b.width,
        "attempts": series.attempts_series(timeline.attempts(store, b), b),
        "answers": series.answers_series(timeline.answers(store, plan_key, b), b),
        "latency": series.latency_series(timeline.latencies(store, b, series.LATENCY_EDGES), b),
        "spend": series.budget_series(timeline.spend(store, b), b, quota["budgets"]),
        "limits": series.limit_segments(runs),
        "runs": [{k: r.get(k) for k in RUN_COLUMNS} for r in runs if r["plan_key"] == plan_key],
        "batches": timeline.batches(store, plan_key),
    }
    if export:
        seqs = [s for c in export["stats"].get("clusters") or [] for s in [c["kept"], *c["examples"]]]
        texts = timeline.answers_at(store, plan_key, seqs) if seqs else {}
        data["clusters"] = [{**c, "kept_text": texts.get(c["kept"], "")[:EXAMPLE_CHARS],
                             "example_texts": [texts.get(s, "")[:EXAMPLE_CHARS] for s in c["examples"]]}
                            for c in export["stats"].get("clusters") or []]
    return data
