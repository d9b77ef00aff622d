"""Progress and summaries for people: rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from .crawler import Progress as RunProgress


def _limits_text(snapshot: dict[str, Any]) -> str:
    limits = snapshot.get("limits") or {}
    parts = []
    for name, info in limits.items():
        if isinstance(info, dict) and info.get("value") is not None:
            parts.append(f"{name}={info['value']:g} ({info.get('source', '?')})")
    return ", ".join(parts)


class ProgressDisplay:
    """Call with each progress snapshot; `close()` at the end."""

    def __init__(self, stream: TextIO | None = None, plain_interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.plain_interval = plain_interval
        self._last_plain = 0.0
        self._bar: Progress | None = None
        self._task: Any = None
        self._latest: RunProgress | None = None

    def __call__(self, p: RunProgress) -> None:
        self._latest = p
        if self.tty:
            self._rich(p)
        elif time.monotonic() - self._last_plain >= self.plain_interval:
            self._plain(p)

    def _plain(self, p: RunProgress) -> None:
        self._last_plain = time.monotonic()
        eta = f"{p.eta_seconds:.0f}s" if p.eta_seconds is not None else "-"
        limits = _limits_text(p.limiter)
        print(f"[{p.elapsed:7.1f}s] done {p.done}/{p.total}  failed {p.failed}  in flight {p.in_flight}  "
              f"{p.answers_per_min:.0f} answers/min  429s {p.rate_limited}  tokens {p.prompt_tokens}+"
              f"{p.completion_tokens}  eta {eta}" + (f"  limits {limits}" if limits else ""),
              file=self.stream, flush=True)

    def _rich(self, p: RunProgress) -> None:
        if self._bar is None:
            self._bar = Progress(TextColumn("[bold]harvest"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[info]}"), TimeRemainingColumn(),
                                 console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._task = self._bar.add_task("harvest", total=p.total, info="")
        info = (f"failed {p.failed} · in flight {p.in_flight} · {p.answers_per_min:.0f} answers/min · "
                f"429s {p.rate_limited}")
        limits = _limits_text(p.limiter)
        if limits:
            info += f" · {limits}"
        self._bar.update(self._task, completed=p.done + p.failed, total=p.total, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._latest is not None and not self.tty:
            self._plain(self._latest)  # the final figures, whatever the interval


def status_table(status: dict[str, Any]) -> Table:
    table = Table(title=f"job {status['job']}  ({status['store']})", show_header=False)
    if not status.get("planned", True):
        table.add_row("not planned yet", "this job file's prompts have not been planned in this store: "
                                         "`harvester run` plans and sends them")
        return table
    labels = {"other_plans": "jobs of other plans (earlier versions of this job file, in this store)",
              "requests": "requests (all plans)", "failed_requests": "failed requests (all plans)"}
    for key in ("jobs", "pending", "leased", "done", "failed", "other_plans", "requests", "failed_requests",
                "prompt_tokens", "completion_tokens"):
        table.add_row(labels.get(key, key.replace("_", " ")), str(status.get(key, 0)))
    for title, key in (("errors by class (requests)", "errors_by_kind"), ("failed jobs by class", "failed_by_kind")):
        for kind, n in sorted(status.get(key, {}).items()):
            table.add_row(f"{title}: {kind}", str(n))
    run = status.get("last_run")
    if run:
        table.add_row("last run", f"#{run['id']} {run.get('exit_reason') or 'running'}; sent {run.get('sent', 0)}, "
                                  f"429s {run.get('rate_limited', 0)}")
        limits = _limits_text(run.get("limiter") or {})
        if limits:
            table.add_row("limits in force", limits)
    workers = status.get("workers")
    if workers is not None:
        table.add_row("live workers", str(len(workers)))
    for w in workers or []:
        host, _, pid = (w.get("owner") or "").rpartition(":")[0].rpartition(":")
        share = f"share {w['share']:.0%}" if w.get("share") is not None else "share -"
        table.add_row(f"  worker #{w['id']} {host} pid {pid}",
                      f"{share} · {w.get('throughput') or 0:,.0f} answers/min · sent {w.get('sent', 0)}, "
                      f"answered {w.get('answered', 0)}, 429s {w.get('rate_limited', 0)} · "
                      f"heard from {w.get('heartbeat_age', 0):.1f}s ago")
    return table


def export_table(report: Any) -> Table:
    table = Table(title=f"export → {report.out}  (format {report.format})")
    table.add_column("step")
    table.add_column("kept", justify="right")
    table.add_column("dropped", justify="right")
    table.add_row("selected (answered)", str(report.selected), "")
    for step, kept, dropped in report.steps:
        table.add_row(step, str(kept), str(dropped))
    for reason, n in sorted(report.dropped.items()):
        table.add_row(f"  dropped: {reason}", "", str(n))
    if report.near_dup_clusters:
        table.add_row("  near-duplicate clusters", str(report.near_dup_clusters), "")
    for name, n in sorted(report.decontamination.items()):
        table.add_row(f"  eval set hit: {name}", "", str(n))
    for split, n in sorted(report.rows.items()):
        table.add_row(f"written: {split}", str(n), "")
    if report.reasoning_rows:
        how = "in <think> tags" if report.reasoning == "think" else "dropped"
        table.add_row(f"  with a reasoning trace ({how})", str(report.reasoning_rows), "")
    table.caption = "rejected rows and their reasons: rejected.jsonl; provenance: README.md" + \
        (f"; first pass in {report.workers} processes" if report.workers > 1 else "")
    return table


# The fix for each drop reason, said as the job file's keys
_FIXES = {
    "truncated": "answers hit max_tokens: raise teacher.params.max_tokens and rerun, "
                 "or keep them with export.filters.truncated: false",
    "empty": "the teacher sent empty answers: check its model and params, or keep them with export.filters.empty: false",
    "too_short": "lower export.filters.min_tokens (or set it to null)",
    "too_long": "raise export.filters.max_tokens (or set it to null)",
    "placeholder": "keep them with export.filters.placeholder: false",
    "list_numbering": "keep them with export.filters.list_numbering: false",
    "refusal": "check the refusal phrases (export.filters.refusal_phrases), or keep them with "
               "export.filters.refusal: false",
    "repetition_ngram": "raise export.filters.max_repeated_share, or set export.filters.repetition: false",
    "repetition_char": "set export.filters.repetition: false to keep them",
    "repetition_line": "set export.filters.repetition: false to keep them",
    "prompt_echo": "keep them with export.filters.prompt_echo: false",
    "exact_duplicate": "the teacher gave the same answers: sample with teacher.params.temperature above 0, ask "
                       "for fewer prompts[].samples, or set export.dedup.exact: false",
    "near_duplicate": "raise export.dedup.threshold (now treating similar answers as one), or set "
                      "export.dedup.near: false",
}


def export_hint(report: Any) -> str | None:
    """One line when the export dropped most of what it selected: the reason that dropped most, and
    the fix (None when most rows were kept)."""
    dropped = sum(report.dropped.values())
    if not report.selected or dropped * 2 <= report.selected:
        return None
    reason, n = max(sorted(report.dropped.items()), key=lambda item: item[1])
    fix = _FIXES.get(reason) or ("rows share n-grams with an eval set: check export.decontaminate"
                                 if reason.startswith("contaminated") else "see rejected.jsonl")
    return f"{dropped} of {report.selected} rows dropped, {n} as {reason}: {fix}"


def _fmt(value: Any, usd: bool = False) -> str:
    if value is None:
        return "-"
    return f"${value:,.4f}" if usd else f"{value:,.0f}"


def quota_table(report: dict[str, Any]) -> Table:
    table = Table(title="quota")
    for col in ("budget", "used", "reserved", "left", "limit", "next reset"):
        table.add_column(col, justify="left" if col in ("budget", "next reset") else "right")
    for b in report["budgets"]:
        usd = b["name"].startswith("usd")
        table.add_row(b["name"], _fmt(b["used"], usd), _fmt(b["reserved"], usd), _fmt(b["left"], usd),
                      _fmt(b["limit"], usd), b["resets_at"])
    if not report["budgets"]:
        table.add_row("(no budgets set)", "", "", "", "", "")
    t = report["total"]
    table.caption = (f"all runs: {t['requests']:,} requests, {t['input_tokens']:,} in + {t['output_tokens']:,} out "
                     f"tokens, ${t['usd']:,.4f}")
    terms = report.get("terms")
    if terms:
        table.caption += (f"\nterms: {terms.get('provider') or 'unknown provider'}: training use "
                          f"{terms.get('training_use')}" + (f" ({terms['terms_url']})" if terms.get("terms_url") else "")
                          + (f"; acknowledged: {terms['acknowledgement']}" if terms.get("acknowledgement") else ""))
    return table


def estimate_table(est: dict[str, Any]) -> Table:
    table = Table(title=f"dry run: {est['pending_requests']:,} of {est['jobs']:,} jobs pending")
    for col in ("", "input tokens", "output tokens", "cost"):
        table.add_column(col, justify="right" if col else "left")
    w = est["worst"]
    table.add_row("worst case", _fmt(w["input_tokens"]), _fmt(w["output_tokens"]), _fmt(w["usd"], True))
    e = est["expected"]
    if e:
        table.add_row(f"expected (from {e['from_answers']} answers)", _fmt(e["input_tokens"]),
                      _fmt(e["output_tokens"]), _fmt(e["usd"], True))
    else:
        table.add_row("expected", "needs some answers first", "", "")
    table.caption = est["note"] + ("" if est["prices"] else "; no prices known for this model (set quota.prices)")
    return table
