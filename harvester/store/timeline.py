"""The report's SQL: the store's rows aggregated into time buckets (GROUP BY), never read row by row.

Every function returns a few rows per bucket (bucket x run x class at most), so the report's memory
is flat in the number of attempts. Buckets are `floor((t - t0) / width)`; `t0` is the first time seen,
so every offset is >= 0 and SQLite's CAST (which truncates) floors as PostgreSQL's floor() does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from .tables import Attempt, Batch, Job, Response, Run, Usage, table_of

if TYPE_CHECKING:
    from . import Store

A = table_of(Attempt)
R = table_of(Response)
J = table_of(Job)
U = table_of(Usage)
RUN = table_of(Run)
BATCH = table_of(Batch)

# Settled ledger rows, and those counted as lost at their worst case: what the totals' `usd` sums.
SPENT_STATES = ("settled", "lost")


@dataclass(frozen=True, slots=True)
class Buckets:
    t0: float          # epoch seconds of bucket 0's start
    width: float       # seconds per bucket
    count: int

    def start(self, i: int) -> float:
        return self.t0 + i * self.width


def _floor(store: Store, expr: Any) -> Any:
    return sa.cast(expr, sa.Integer) if store.is_sqlite else sa.cast(sa.func.floor(expr), sa.Integer)


def _bucket(store: Store, column: Any, b: Buckets) -> Any:
    return _floor(store, (column - b.t0) / b.width).label("bucket")


def time_span(store: Store, plan_key: str) -> tuple[float, float] | None:
    """The first and last moment the report shows: attempts, answers, ledger rows, runs and batches."""
    with store.read() as conn:
        found = [conn.execute(q).one() for q in (
            sa.select(sa.func.min(A.c.started_at), sa.func.max(A.c.ended_at)),
            sa.select(sa.func.min(R.c.created_at), sa.func.max(R.c.created_at))
            .select_from(R.join(J, J.c.id == R.c.job_id)).where(J.c.plan_key == plan_key),
            sa.select(sa.func.min(U.c.created_at), sa.func.max(U.c.created_at)),
            sa.select(sa.func.min(RUN.c.started_at), sa.func.max(sa.func.coalesce(RUN.c.ended_at, RUN.c.heartbeat_at)))
            .where(RUN.c.plan_key == plan_key),
            sa.select(sa.func.min(BATCH.c.created_at), sa.func.max(BATCH.c.ended_at))
            .where(BATCH.c.plan_key == plan_key))]
    lows = [lo for lo, _ in found if lo is not None]
    highs = [hi for _, hi in found if hi is not None] + lows
    return (min(lows), max(highs)) if lows else None


def attempts(store: Store, b: Buckets) -> list[tuple[int, int, str | None, int, bool]]:
    """(bucket, run id, error class or None for an answer, attempts, retries or not) by when each attempt
    ended. A retry is an attempt whose job had an earlier one (the job index answers it)."""
    earlier = A.alias("earlier")
    retry = sa.exists().where(earlier.c.job_id == A.c.job_id, earlier.c.id < A.c.id).label("retry")
    bucket = _bucket(store, A.c.ended_at, b)
    q = (sa.select(bucket, A.c.run_id, A.c.error_kind, retry, sa.func.count())
         .group_by(bucket, A.c.run_id, A.c.error_kind, retry))
    with store.read() as conn:
        return [(int(k), int(run), kind, int(n), bool(again)) for k, run, kind, again, n in conn.execute(q)]


def latencies(store: Store, b: Buckets, edges: Sequence[float]) -> list[tuple[int, int, int]]:
    """(bucket, latency bin, attempts): bin i holds latencies below edges[i] (and at or above edges[i-1]);
    bin len(edges) the rest."""
    latency = A.c.ended_at - A.c.started_at
    bin_ = sa.case(*[(latency < edge, i) for i, edge in enumerate(edges)], else_=len(edges)).label("bin")
    bucket = _bucket(store, A.c.ended_at, b)
    q = sa.select(bucket, bin_, sa.func.count()).group_by(bucket, bin_)
    with store.read() as conn:
        return [(int(k), int(i), int(n)) for k, i, n in conn.execute(q)]


def answers(store: Store, plan_key: str, b: Buckets) -> list[tuple[int, int, int, int]]:
    """(bucket, answers, prompt tokens, completion tokens) of the plan's answered jobs, by when recorded."""
    bucket = _bucket(store, R.c.created_at, b)
    q = (sa.select(bucket, sa.func.count(), sa.func.coalesce(sa.func.sum(R.c.prompt_tokens), 0),
                   sa.func.coalesce(sa.func.sum(R.c.completion_tokens), 0))
         .select_from(J.join(R, R.c.job_id == J.c.id)).where(J.c.plan_key == plan_key, J.c.status == "done")
         .group_by(bucket))
    with store.read() as conn:
        return [(int(k), int(n), int(pin), int(pout)) for k, n, pin, pout in conn.execute(q)]


def spend(store: Store, b: Buckets) -> list[dict[str, Any]]:
    """The ledger's used amounts by bucket, run and calendar window (the budgets' resets)."""
    bucket = _bucket(store, U.c.created_at, b)
    q = (sa.select(bucket, U.c.run_id, U.c.day, U.c.month, sa.func.count().label("requests"),
                   sa.func.sum(U.c.input_tokens).label("input_tokens"),
                   sa.func.sum(U.c.output_tokens).label("output_tokens"), sa.func.sum(U.c.usd).label("usd"))
         .where(U.c.state.in_(SPENT_STATES)).group_by(bucket, U.c.run_id, U.c.day, U.c.month)
         .order_by(bucket, U.c.run_id))
    with store.read() as conn:
        return [{**dict(r), "bucket": int(r["bucket"])} for r in conn.execute(q).mappings()]


def runs(store: Store) -> list[dict[str, Any]]:
    """Every run, oldest first (a store holds one job: a handful of rows)."""
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(RUN).order_by(RUN.c.id)).mappings()]


def batches(store: Store, plan_key: str) -> list[dict[str, Any]]:
    """The plan's provider batches, oldest first."""
    cols = [BATCH.c[c] for c in ("id", "protocol", "state", "lines", "succeeded", "failed", "outcome",
                                 "created_at", "submitted_at", "ended_at", "collected_at")]
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(*cols).where(BATCH.c.plan_key == plan_key)
                                              .order_by(BATCH.c.id)).mappings()]


def answers_at(store: Store, plan_key: str, seqs: Sequence[int]) -> dict[int, str]:
    """The answers of the plan's jobs at `seqs` (a few examples for the report)."""
    q = (sa.select(J.c.seq, R.c.content).select_from(J.join(R, R.c.job_id == J.c.id))
         .where(J.c.plan_key == plan_key, J.c.seq.in_(list(seqs))))
    with store.read() as conn:
        return {int(seq): content for seq, content in conn.execute(q)}
