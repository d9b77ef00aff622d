"""The quota ledger's SQL: reserve before a send, settle after it, totals per budget window.

A reservation checks every budget and records itself in one write transaction (BEGIN IMMEDIATE on
SQLite; row locks on the window totals elsewhere), so processes sharing a store never overspend.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .tables import Run, Usage, UsageTotal, inserted_id, table_of

if TYPE_CHECKING:
    from ..pricing import Cost
    from . import Store

U = table_of(Usage)
T = table_of(UsageTotal)
RUN = table_of(Run)


@dataclass(frozen=True, slots=True)
class Budget:
    name: str            # e.g. "tokens_per_day"
    metric: str          # requests | input_tokens | output_tokens | tokens | usd (harvester.budgets.METRICS)
    window: str          # run | day | month | total (harvester.budgets.WINDOWS)
    limit: float


@dataclass(slots=True)
class Reservation:
    id: int
    windows: tuple[str, ...]
    input_tokens: int
    output_tokens: int
    usd: float
    at: datetime | None = None   # when it was reserved, right before its send: what prices it


@dataclass(slots=True)
class Settlement:
    reservation: Reservation
    sent: bool           # False: never sent, release it whole
    input_tokens: int
    output_tokens: int
    usd: float           # what was paid
    cached_tokens: int = 0
    cost: Cost | None = None   # list price and savings; None: paid at list price (a worst case kept)


@dataclass(slots=True)
class Overrun:
    budget: Budget
    used: float
    reserved: float


def amounts(requests: float, input_tokens: float, output_tokens: float, usd: float) -> dict[str, float]:
    """What requests count towards each budget metric (harvester.budgets.METRICS; see `metric_of`)."""
    return {"requests": requests, "input_tokens": input_tokens, "output_tokens": output_tokens,
            "tokens": input_tokens + output_tokens, "usd": usd}


def window_keys(run_id: int, day: str, month: str) -> dict[str, str]:
    """Each budget window's key in the totals table (harvester.budgets.WINDOWS)."""
    return {"run": f"run:{run_id}", "day": f"day:{day}", "month": f"month:{month}", "total": "total"}


_RESERVED = {"requests": "requests_reserved", "input_tokens": "input_reserved",
             "output_tokens": "output_reserved", "usd": "usd_reserved"}


def metric_of(row: Any, metric: str, reserved: bool) -> float:
    """A metric's used (or reserved) amount in one window's totals row."""
    if metric == "tokens":
        return metric_of(row, "input_tokens", reserved) + metric_of(row, "output_tokens", reserved)
    return float(row[_RESERVED[metric] if reserved else metric])


def _ensure_windows(store: Store, conn: Connection, keys: list[str]) -> None:
    conn.execute(store._insert_ignore(T), [{"window": k} for k in keys])


def reserve(store: Store, *, run_id: int, job_id: str, day: str, month: str, input_tokens: int,
            output_tokens: int, usd: float, budgets: list[Budget], now: float) -> Reservation | Overrun:
    keys = window_keys(run_id, day, month)
    needed = sorted({keys[b.window] for b in budgets} | set(keys.values()))
    want = amounts(1, input_tokens, output_tokens, usd)
    with store.write() as conn:
        _ensure_windows(store, conn, needed)
        q = sa.select(T).where(T.c.window.in_(needed)).order_by(T.c.window)
        if not store.is_sqlite:
            q = q.with_for_update()
        rows = {r["window"]: r for r in conn.execute(q).mappings()}
        for b in budgets:
            row = rows[keys[b.window]]
            used, held = metric_of(row, b.metric, False), metric_of(row, b.metric, True)
            if used + held + want[b.metric] > b.limit + 1e-9:
                return Overrun(b, used, held)
        conn.execute(T.update().where(T.c.window.in_(needed)).values(
            requests_reserved=T.c.requests_reserved + 1, input_reserved=T.c.input_reserved + input_tokens,
            output_reserved=T.c.output_reserved + output_tokens, usd_reserved=T.c.usd_reserved + usd))
        rid = inserted_id(conn.execute(U.insert().values(run_id=run_id, job_id=job_id, day=day, month=month,
                                                         state="reserved", input_reserved=input_tokens,
                                                         output_reserved=output_tokens, usd_reserved=usd,
                                                         created_at=now)))
    return Reservation(rid, tuple(needed), input_tokens, output_tokens, usd)


def settle(conn: Connection, settlements: list[Settlement]) -> None:
    """Apply settlements inside the caller's transaction (the writer's batch)."""
    deltas: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for s in settlements:
        r = s.reservation
        # Only a reservation still open moves the totals: one already settled (by another process reading
        # the same batch) or counted as lost (its worker taken for dead) must not be counted twice.
        saved = _savings(s)
        moved = conn.execute(U.update().where(U.c.id == r.id, U.c.state == "reserved").values(
            state="settled" if s.sent else "released", input_tokens=s.input_tokens,
            output_tokens=s.output_tokens, usd=s.usd, cached_tokens=s.cached_tokens, **saved)).rowcount
        if not moved:
            continue
        for w in r.windows:
            d = deltas[w]
            d["requests_reserved"] -= 1
            d["input_reserved"] -= r.input_tokens
            d["output_reserved"] -= r.output_tokens
            d["usd_reserved"] -= r.usd
            d["requests"] += 1 if s.sent else 0
            d["input_tokens"] += s.input_tokens
            d["output_tokens"] += s.output_tokens
            d["usd"] += s.usd
            d["cached_tokens"] += s.cached_tokens
            for k, v in saved.items():
                d[k] += v
    for window, d in sorted(deltas.items()):  # in window order, as `reserve` locks them: no deadlocks
        conn.execute(T.update().where(T.c.window == window).values(**{k: T.c[k] + v for k, v in d.items()}))


def _savings(s: Settlement) -> dict[str, float]:
    """A settlement's list price and what caching, the hour and batches saved (the ledger's columns)."""
    c = s.cost
    if c is None:
        return {"usd_list": s.usd, "saved_cache": 0.0, "saved_hour": 0.0, "saved_batch": 0.0}
    return {"usd_list": c.list, "saved_cache": c.saved_cache, "saved_hour": c.saved_hour, "saved_batch": c.saved_batch}


def expire_lost(store: Store, stale_before: float) -> int:
    """Reservations of workers that died (heartbeat older than `stale_before`, never ended, or found
    crashed by another run) may have been billed: count them as used at their worst case. Returns how many."""
    with store.write() as conn:
        dead = sa.select(RUN.c.id).where(sa.or_(RUN.c.ended_at.is_(None), RUN.c.exit_reason == "crashed"),
                                         RUN.c.heartbeat_at < stale_before)
        # (a batch's lines are not the run's: whichever run reads their results settles them)
        q = sa.select(U).where(U.c.state == "reserved", U.c.run_id.in_(dead), U.c.batch_id.is_(None)).order_by(U.c.id)
        if not store.is_sqlite:  # two workers starting at once must not both count the same ones
            q = q.with_for_update()
        rows = conn.execute(q).mappings().all()
        lost = []
        for r in rows:
            res = Reservation(r["id"], tuple(window_keys(r["run_id"], r["day"], r["month"]).values()),
                              r["input_reserved"], r["output_reserved"], r["usd_reserved"])
            lost.append(Settlement(res, True, r["input_reserved"], r["output_reserved"], r["usd_reserved"]))
        settle(conn, lost)
        if lost:
            conn.execute(U.update().where(U.c.id.in_([s.reservation.id for s in lost])).values(state="lost"))
    return len(lost)


def totals(store: Store, windows: list[str]) -> dict[str, dict[str, Any]]:
    """Each window's totals row (`window` and the UsageTotal columns), zeros for a window never charged."""
    with store.read() as conn:
        rows = conn.execute(sa.select(T).where(T.c.window.in_(windows))).mappings().all()
    empty = {c.name: 0 for c in T.columns if c.name != "window"}
    found = {r["window"]: dict(r) for r in rows}
    return {w: found.get(w, {**empty, "window": w}) for w in windows}
