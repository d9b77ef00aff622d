"""Pure: the store's bucketed rows (harvester.store.timeline) turned into the series the charts draw.

Plain data in, plain data out; no I/O, no clock. Each series is a list with one value per bucket.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from ..budgets import BUDGETS
from ..store.ledger import amounts
from ..store.timeline import Buckets

# Bucket widths a reader takes in at a glance: whole seconds, minutes, hours, days.
NICE_WIDTHS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)
TARGET_BUCKETS = 120
# Latency bins: geometric from 5 ms to 20 min, 8 per factor of ten (the last bin holds the rest).
LATENCY_EDGES: tuple[float, ...] = tuple(0.005 * 10 ** (i / 8) for i in range(46))
PERCENTILES = (50, 90, 99)
RATE_LIMITED = "http_429"       # harvester.teacher's class of a 429


def buckets_for(span: tuple[float, float] | None, target: int = TARGET_BUCKETS) -> Buckets:
    """About `target` buckets over the span, each a width from NICE_WIDTHS (past a day: whole days)."""
    if span is None:
        return Buckets(0.0, 1.0, 1)
    t0, t1 = span
    wanted = max((t1 - t0) / target, 1e-9)
    width = next((float(w) for w in NICE_WIDTHS if w >= wanted), 86400.0 * math.ceil(wanted / 86400))
    t0 = math.floor(t0 / width) * width if width >= 60 else math.floor(t0)
    return Buckets(t0, width, int((t1 - t0) // width) + 1)


def per_second(counts: Sequence[float], b: Buckets) -> list[float]:
    return [c / b.width for c in counts]


def attempts_series(rows: Iterable[tuple[int, int, str | None, int, bool]], b: Buckets) -> dict[str, Any]:
    """Requests by bucket (in all and per run), answers (attempts without an error), retries, and failed
    attempts by error class."""
    requests, ok, retries = [0] * b.count, [0] * b.count, [0] * b.count
    by_run: dict[int, list[int]] = defaultdict(lambda: [0] * b.count)
    by_kind: dict[str, list[int]] = defaultdict(lambda: [0] * b.count)
    for k, run, kind, n, retry in rows:
        k = min(max(k, 0), b.count - 1)
        requests[k] += n
        by_run[run][k] += n
        if retry:
            retries[k] += n
        if kind is None:
            ok[k] += n
        else:
            by_kind[kind][k] += n
    return {"requests": requests, "ok": ok, "retries": retries, "by_run": dict(sorted(by_run.items())),
            "by_kind": dict(sorted(by_kind.items(), key=lambda kv: (kv[0] != RATE_LIMITED, -sum(kv[1]))))}


def answers_series(rows: Iterable[tuple[int, int, int, int]], b: Buckets) -> dict[str, list[int]]:
    answers, tokens_in, tokens_out = [0] * b.count, [0] * b.count, [0] * b.count
    for k, n, pin, pout in rows:
        k = min(max(k, 0), b.count - 1)
        answers[k] += n
        tokens_in[k] += pin
        tokens_out[k] += pout
    return {"answers": answers, "prompt_tokens": tokens_in, "completion_tokens": tokens_out}


def _bin_value(i: int, edges: Sequence[float]) -> float:
    """A latency bin's representative: the geometric middle of its edges."""
    lo = edges[i - 1] if i > 0 else edges[0] / 10 ** (1 / 8)
    hi = edges[i] if i < len(edges) else edges[-1] * 10 ** (1 / 8)
    return math.sqrt(lo * hi)


def percentile(hist: Sequence[int], q: float, edges: Sequence[float]) -> float | None:
    """The q-th percentile of a latency histogram (to the resolution of its bins); None if empty."""
    total = sum(hist)
    if not total:
        return None
    rank = math.ceil(total * q / 100)
    seen = 0
    for i, n in enumerate(hist):
        seen += n
        if seen >= rank:
            return _bin_value(i, edges)
    return _bin_value(len(hist) - 1, edges)


def latency_series(rows: Iterable[tuple[int, int, int]], b: Buckets,
                   edges: Sequence[float] = LATENCY_EDGES) -> dict[str, Any]:
    """Per bucket p50/p90/p99 (None where nothing ended), and the whole run's histogram."""
    per: dict[int, list[int]] = defaultdict(lambda: [0] * (len(edges) + 1))
    whole = [0] * (len(edges) + 1)
    for k, i, n in rows:
        per[min(max(k, 0), b.count - 1)][i] += n
        whole[i] += n
    series = {f"p{q}": [percentile(per[k], q, edges) if k in per else None for k in range(b.count)]
              for q in PERCENTILES}
    overall = {f"p{q}": percentile(whole, q, edges) for q in PERCENTILES}
    return {**series, "histogram": whole, "edges": list(edges), "overall": overall}


def _window_key(row: dict[str, Any], window: str) -> str:
    return str({"run": f"run:{row['run_id']}", "day": row["day"], "month": row["month"], "total": "total"}[window])


def budget_series(rows: Sequence[dict[str, Any]], b: Buckets, budgets: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Cumulative spend (USD) by bucket, and each budget's use within its current window by bucket, with
    the buckets where a new window began (its resets). `rows` come in bucket order (store.timeline.spend)."""
    usd = [0.0] * b.count
    for r in rows:
        usd[min(max(r["bucket"], 0), b.count - 1)] += float(r["usd"] or 0)
    cumulative = [sum(usd[:i + 1]) for i in range(b.count)]
    out = []
    for budget in budgets:
        metric, window = BUDGETS[budget["name"]]
        used_in: dict[str, float] = defaultdict(float)
        values: list[float] = []
        resets: list[int] = []
        current: str | None = None
        by_bucket: dict[int, list[dict[str, Any]]] = defaultdict(list)
        for r in rows:
            by_bucket[min(max(r["bucket"], 0), b.count - 1)].append(r)
        for k in range(b.count):
            for r in by_bucket.get(k, []):
                key = _window_key(r, window)
                used_in[key] += amounts(r["requests"], r["input_tokens"] or 0, r["output_tokens"] or 0,
                                        float(r["usd"] or 0))[metric]
                if key != current:
                    if current is not None:
                        resets.append(k)
                    current = key
            values.append(used_in[current] if current is not None else 0.0)
        out.append({**budget, "metric": metric, "window": window, "values": values, "resets": resets})
    return {"usd": cumulative, "budgets": out}


def limit_segments(runs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The request limit each run ran under (limiter snapshot: configured, from headers, or learned), as
    requests per second from its start to its end."""
    out = []
    for run in runs:
        rpm = ((run.get("limiter") or {}).get("limits") or {}).get("rpm")
        end = run.get("ended_at") or run.get("heartbeat_at")
        if rpm and end:
            out.append({"run": run["id"], "start": run["started_at"], "end": end, "per_second": rpm["value"] / 60,
                        "source": rpm.get("source") or "configured", "share": run.get("share")})
    return out
