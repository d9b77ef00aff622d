"""Progress and summaries for people: rich on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn
from rich.table import Table

from .results import Estimate, QuotaReport, Status
from .units import count_text, duration_text, usd_text

if TYPE_CHECKING:  # the crawler imports the SDK: seconds of start-up a finished job does not need
    from .crawler import Progress as RunProgress


def _limits_text(snapshot: dict[str, Any], sources: bool = True) -> str:
    """`rpm=3,000 (configured), tpm=2,000,000 (headers)`: numbers as numbers, never `2e+06`."""
    limits = snapshot.get("limits") or {}
    parts = []
    for name, info in limits.items():
        if isinstance(info, dict) and info.get("value") is not None:
            parts.append(f"{name}={count_text(info['value'])}" + (f" ({info.get('source', '?')})" if sources else ""))
    return ", ".join(parts) if sources else " ".join(parts)


def _eta_text(p: RunProgress) -> str:
    if p.eta_seconds is not None:
        return f"eta {duration_text(p.eta_seconds)}"
    return "eta 0s" if p.total and p.done + p.failed >= p.total else "eta -"


def _details(p: RunProgress, sources: bool) -> list[str]:
    """The progress's details, most telling first: a narrow terminal drops them from the end."""
    parts = [f"failed {p.failed:,}", f"{p.answers_per_min:,.0f} answers/min", f"in flight {p.in_flight:,}"]
    if p.truncated:
        parts.append(f"truncated {p.truncated:,}")
    parts.append(f"429s {p.rate_limited:,}")
    limits = _limits_text(p.limiter, sources)
    if limits:
        parts.append(limits)
    return parts


class ProgressDisplay:
    """Call with each progress snapshot; `close()` at the end.

    On a terminal, one line that fits its width: done/total, the bar and the ETA first, then as many
    details as fit (an 80-column terminal keeps the first few). Elsewhere, a plain line every
    `plain_interval` seconds, in the same order."""

    BAR_MIN, BAR_MAX = 10, 40

    def __init__(self, stream: TextIO | None = None, plain_interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.plain_interval = plain_interval
        self._last_plain = 0.0
        self._bar: Progress | None = None
        self._bar_column: BarColumn | None = None
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
        print(f"[{p.elapsed:7.1f}s] done {p.done:,}/{p.total:,}  {_eta_text(p)}  " + "  ".join(_details(p, True))
              + f"  tokens {p.prompt_tokens:,}+{p.completion_tokens:,}", file=self.stream, flush=True)

    def fit(self, p: RunProgress, width: int) -> tuple[str, int, str, str]:
        """(done/total, bar width, ETA, details) for a line of `width` columns (rich puts one space
        between columns). The details go first, then the bar shrinks to BAR_MIN."""
        head, eta = f"{p.done:,}/{p.total:,}", _eta_text(p)
        room = width - 1 - len(head) - len(eta) - 3   # 3 column gaps; 1 spare: no wrap on the last cell
        bar = max(self.BAR_MIN, min(self.BAR_MAX, room - 30))
        room -= bar
        info = ""
        for part in _details(p, sources=False):
            candidate = f"{info} · {part}" if info else part
            if len(candidate) > room:
                break
            info = candidate
        if not info:  # a very narrow terminal: the bar gives up its room first
            bar = max(self.BAR_MIN, min(self.BAR_MAX, width - 1 - len(head) - len(eta) - 3))
        return head, bar, eta, info

    def _rich(self, p: RunProgress) -> None:
        if self._bar is None:
            console = Console(file=self.stream)
            head, bar, eta, info = self.fit(p, console.width)
            self._bar_column = BarColumn(bar_width=bar)
            self._bar = Progress(TextColumn("{task.fields[head]}"), self._bar_column, TextColumn("{task.fields[eta]}"),
                                 TextColumn("{task.fields[info]}"), console=console, transient=False)
            self._task = self._bar.add_task("harvest", total=p.total, completed=p.done + p.failed, head=head,
                                            eta=eta, info=info)
            self._bar.start()
            return
        head, bar, eta, info = self.fit(p, self._bar.console.width)  # the width may change (a resize)
        assert self._bar_column is not None
        self._bar_column.bar_width = bar
        self._bar.update(self._task, completed=p.done + p.failed, total=p.total, head=head, eta=eta, info=info)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self._latest is not None and not self.tty:
            self._plain(self._latest)  # the final figures, whatever the interval


def status_table(status: Status) -> Table:
    table = Table(title=f"job {status['job']}  ({status['store']})", show_header=False)
    if not status.get("planned", True):
        table.add_row("not planned yet", "this job file's prompts have not been planned in this store: "
                                         "`harvester run` plans and sends them")
        return table
    labels = {"other_plans": "jobs of other plans (earlier versions of this job file, in this store)",
              "requests": "requests (all plans)", "failed_requests": "failed requests (all plans)"}
    # A job in a provider batch is leased to it (`batch:<id>`), not to a worker: shown apart, with its batch.
    in_batches = status.get("in_batches", 0)
    for key in ("jobs", "pending", "leased", "done", "failed", "other_plans", "requests", "failed_requests",
                "prompt_tokens", "completion_tokens"):
        if key == "leased":
            table.add_row("leased by workers", f"{status.get(key, 0) - in_batches:,}")
            if in_batches or status.get("batches"):
                table.add_row("in open batches", f"{in_batches:,}")
            continue
        table.add_row(labels.get(key, key.replace("_", " ")), f"{status.get(key, 0):,}")
    table.add_row("truncated answers (max_tokens ran out)", f"{status.get('truncated', 0):,}")
    if cost := status.get("cost"):
        table.add_row("cost (quota ledger)", spent_text(cost))
    if status.get("merged"):
        table.add_row("duplicate prompt rows merged into one job", f"{status['merged']:,}")
    for title, counts in (("errors by class (requests)", status.get("errors_by_kind", {})),
                          ("failed jobs by class", status.get("failed_by_kind", {}))):
        for kind, n in sorted(counts.items()):
            table.add_row(f"{title}: {kind}", str(n))
    run = status.get("last_run")
    if run:
        table.add_row("last run", f"#{run['id']} {run.get('exit_reason') or 'running'}; sent {run.get('sent', 0)}, "
                                  f"429s {run.get('rate_limited', 0)}")
        limits = _limits_text(run.get("limiter") or {})
        if limits:
            table.add_row("limits in force", limits)
    batches = status.get("batches") or []
    if batches:
        table.add_row("open batches", str(len(batches)))
    for b in batches:
        table.add_row(f"  {b['provider_id'] or '(batch #' + str(b['id']) + ', not created yet)'}",
                      f"{b['provider_status'] or b['state']} · {b['succeeded'] + b['failed']:,}/{b['lines']:,} "
                      "lines done" + (f" ({b['failed']:,} failed)" if b["failed"] else "")
                      + f" · age {duration_text(b['age_s'])}")
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
    "empty": "the teacher sent empty answers: check its model and params, "
             "or keep them with export.filters.empty: false",
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
    return usd_text(value) if usd else f"{value:,.0f}"


def spent_text(t: Mapping[str, Any]) -> str:
    """`paid $0.06 of $0.20 at list price: caching saved $0.14, the hour $0.00, batches $0.00` (ledger totals)."""
    return (f"paid {usd_text(t['usd'])} of {usd_text(t['usd_list'])} at list price "
            f"({t.get('cached_tokens', 0):,} input tokens cached): caching saved {usd_text(t['saved_cache'])}, "
            f"the hour {usd_text(t['saved_hour'])}, batches {usd_text(t['saved_batch'])}")


def quota_table(report: QuotaReport) -> Table:
    t = report["total"]
    spent = f"all runs: {t['requests']:,} requests, {t['input_tokens']:,} in + {t['output_tokens']:,} out tokens"
    if not report["budgets"]:
        # Not a table of zeros: say there is nothing to show, and where budgets are set.
        table = Table(title="quota", show_header=False)
        table.add_row("no budgets set (quota.* in the job file)")
        caption = [spent] if t["requests"] else []
    else:
        table = Table(title="quota")
        for col in ("budget", "used", "reserved", "left", "limit", "next reset"):
            table.add_column(col, justify="left" if col in ("budget", "next reset") else "right")
        for b in report["budgets"]:
            usd = b["name"].startswith("usd")
            table.add_row(b["name"], _fmt(b["used"], usd), _fmt(b["reserved"], usd), _fmt(b["left"], usd),
                          _fmt(b["limit"], usd), b["resets_at"])
        caption = [spent + (f", {usd_text(t['usd'])}" if report.get("prices") else "")]
        if report.get("prices") and t.get("usd_list"):
            caption.append(spent_text(t))
    terms = report.get("terms")
    if terms:
        caption.append(f"terms: {terms.get('provider') or 'unknown provider'}: training use "
                       f"{terms.get('training_use')}" + (f" ({terms['terms_url']})" if terms.get("terms_url") else "")
                       + (f"; acknowledged: {terms['acknowledgement']}" if terms.get("acknowledgement") else ""))
    table.caption = "\n".join(caption) or None
    return table


def estimate_table(est: Estimate) -> Table:
    table = Table(title=f"dry run: {est['pending_requests']:,} of {est['jobs']:,} jobs pending")
    for col in ("", "input tokens", "output tokens", "cost"):
        table.add_column(col, justify="right" if col else "left")
    w = est["worst"]
    table.add_row("worst case (list price)", _fmt(w["input_tokens"]), _fmt(w["output_tokens"]), _fmt(w["usd"], True))
    e = est["expected"]
    if e:
        table.add_row(f"expected at list price (from {e['from_answers']:,} answers)", _fmt(e["input_tokens"]),
                      _fmt(e["output_tokens"]), _fmt(e.get("usd_list"), True))
        table.add_row(f"expected cost ({e.get('cached_share', 0.0):.0%} of input cached, at the hour it is sent)",
                      "", "", _fmt(e["usd"], True))
    else:
        table.add_row("expected", "needs some answers first", "", "")
    f = est.get("batch_factor", 1.0)
    if w["usd"] is not None:   # the same requests through the batch API (teacher.mode: batch)
        table.add_row(f"worst case, batch mode (x {f:g})", "", "", _fmt(w["usd"] * f, True))
        if e and e["usd"] is not None:
            table.add_row(f"expected, batch mode (x {f:g})", "", "", _fmt(e["usd"] * f, True))
    table.caption = est["note"] + ("" if est["prices"] else "; no prices known for this model (set quota.prices)")
    return table


def estimate_lines(est: Estimate) -> list[str]:
    """The dry run's duration and budgets, below its table."""
    d = est.get("duration") or {}
    if d.get("bound_by"):
        lines = [f"duration: {d['text']} (paced by {d['bound_by']})"]
    elif est["pending_requests"]:
        lines = ["duration: unknown (no rpm or tpm known: set teacher.limits, or run once to learn them)"]
    else:
        lines = ["duration: nothing to send"]
    for b in est.get("budgets") or []:
        usd = b["budget"].startswith("usd")
        lines.append(f"budget {b['budget']}: worst case {_fmt(b['worst_case'], usd)}, left {_fmt(b['left'], usd)}: "
                     + ("fits" if b["fits"] else "does not fit"))
    return lines


def plan_lines(plan: Mapping[str, Any]) -> list[str]:
    """What `run` and the dry run say of the plan before anything is sent: duplicate rows merged,
    earlier versions of the job holding answers (and what changed), a trial's limit."""
    lines = []
    if plan.get("merged"):
        n = plan["merged"]
        lines.append(f"plan: {plan['jobs']:,} jobs from {plan['rows']:,} rows; "
                     f"{n:,} duplicate row{'s' if n != 1 else ''} merged (the same request is one job)")
    if plan.get("earlier"):
        lines.append(plan["earlier"]["message"])
    if plan.get("limit"):
        lines.append(f"trial: sending only the first {plan['limit']:,} of the plan's {plan['jobs']:,} jobs (--limit)")
    return lines
