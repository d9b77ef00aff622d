"""Provider batches in the store: what makes batch mode lose nothing and pay nothing twice.

A batch is born in one write transaction: its intent row, its lines' jobs leased to `batch:<id>`
(no worker takes them back; they wait for the batch's results), and the worst case of every line
reserved in the quota ledger at the batch price. Each provider id is recorded right after the step
that made it (upload, create). Results are recorded line by line, each line in the transaction
that settles its reservation; a line whose job is no longer leased to its batch (read before, by
this run or another) changes nothing, so reading results again after a crash is harmless.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from .ledger import Budget, Overrun, Reservation, Settlement, T, amounts, metric_of, settle, window_keys
from .tables import Attempt, Batch, Job, Response, Run, Usage, inserted_id, table_of

if TYPE_CHECKING:
    from ..pricing import Cost
    from . import Store

B = table_of(Batch)
J = table_of(Job)
R = table_of(Response)
A = table_of(Attempt)
U = table_of(Usage)
RUN = table_of(Run)

FOREVER = 1e15          # a batch's lease: until its results are read (or it is abandoned)
OPEN_STATES = ("intent", "uploaded", "submitted", "ended")


def owner_of(batch_id: int) -> str:
    return f"batch:{batch_id}"


@dataclass(frozen=True, slots=True)
class LineCost:
    """A line's worst case, reserved before its batch is created."""

    input_tokens: int
    output_tokens: int
    usd: float


@dataclass(slots=True)
class NewBatch:
    id: int
    tag: str
    lines: list[bytes]                         # each line as the protocol encodes it (custom_id = job id)


@dataclass(slots=True)
class LineOutcome:
    """What to record of one line's result (built by harvester.batches from the provider's words)."""

    job_id: str
    answer: dict[str, Any] | None = None       # the response row's fields, when answered
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    usd: float = 0.0                           # what it cost, at the batch price
    cached_tokens: int = 0
    cost: Cost | None = None                   # its list price and savings (harvester.pricing)
    error_kind: str | None = None
    message: str = ""
    retry: bool = False                        # back to pending (counts an attempt if `attempted`)
    attempted: bool = True                     # False: expired or cancelled before it ran: not an attempt
    permanent: bool = False
    max_attempts: int = 1


def start(store: Store, *, plan_key: str, protocol: str, tag: str, run_id: int, n: int, max_bytes: int,
          encode: Callable[[str, dict[str, Any]], bytes], cost: Callable[[dict[str, Any]], LineCost],
          budgets: list[Budget], day: str, month: str, max_seq: int | None = None) -> NewBatch | Overrun | None:
    """Claim up to `n` of the plan's claimable jobs into a new batch: as many as fit in `max_bytes`
    encoded, and as the budgets allow with each line at its worst case. None: nothing to claim;
    Overrun: not even one line fits a budget."""
    now = time.time()
    keys = window_keys(run_id, day, month)
    windows = sorted(set(keys.values()))
    claimable = sa.or_(J.c.status == "pending", sa.and_(J.c.status == "leased", J.c.lease_expires < now))
    pick = (sa.select(J.c.id, J.c.request).where(J.c.plan_key == plan_key, claimable)
            .order_by(J.c.seq).limit(n))
    if max_seq is not None:
        pick = pick.where(J.c.seq <= max_seq)
    if not store.is_sqlite:
        pick = pick.with_for_update(skip_locked=True)
    with store.write() as conn:
        rows = conn.execute(pick).all()
        if not rows:
            return None
        conn.execute(store._insert_ignore(T), [{"window": k} for k in windows])
        q = sa.select(T).where(T.c.window.in_(windows)).order_by(T.c.window)
        if not store.is_sqlite:
            q = q.with_for_update()
        totals = {r["window"]: r for r in conn.execute(q).mappings()}
        lines: list[bytes] = []
        size = 0
        for r in rows:
            line = encode(r.id, r.request)
            if lines and size + len(line) > max_bytes:
                break
            lines.append(line)
            size += len(line)
        rows = rows[:len(lines)]
        costs = [cost(r.request) for r in rows]
        take = _how_many_fit(costs, budgets, totals, keys)
        if isinstance(take, Overrun):
            return take
        rows, costs, lines = rows[:take], costs[:take], lines[:take]
        bid = inserted_id(conn.execute(B.insert().values(plan_key=plan_key, protocol=protocol, tag=tag,
                                                         state="intent", lines=len(rows), run_id=run_id,
                                                         created_at=now, usd_reserved=sum(c.usd for c in costs))))
        conn.execute(J.update().where(J.c.id.in_([r.id for r in rows]))
                     .values(status="leased", lease_owner=owner_of(bid), lease_expires=FOREVER, updated_at=now))
        conn.execute(U.insert(), [{"run_id": run_id, "job_id": r.id, "day": day, "month": month, "state": "reserved",
                                   "input_reserved": c.input_tokens, "output_reserved": c.output_tokens,
                                   "usd_reserved": c.usd, "created_at": now, "batch_id": bid}
                                  for r, c in zip(rows, costs)])
        conn.execute(T.update().where(T.c.window.in_(windows)).values(
            requests_reserved=T.c.requests_reserved + len(rows),
            input_reserved=T.c.input_reserved + sum(c.input_tokens for c in costs),
            output_reserved=T.c.output_reserved + sum(c.output_tokens for c in costs),
            usd_reserved=T.c.usd_reserved + sum(c.usd for c in costs)))
    return NewBatch(bid, tag, lines)


def _how_many_fit(costs: list[LineCost], budgets: list[Budget], totals: dict[str, Any],
                  keys: dict[str, str]) -> int | Overrun:
    """The longest prefix of `costs` every budget has room for; Overrun if not even the first fits."""
    take = len(costs)
    for b in budgets:
        row = totals[keys[b.window]]
        used, held = metric_of(row, b.metric, False), metric_of(row, b.metric, True)
        room = b.limit - used - held + 1e-9
        total = 0.0
        for i, c in enumerate(costs[:take]):
            total += amounts(1, c.input_tokens, c.output_tokens, c.usd)[b.metric]
            if total > room:
                if i == 0:
                    return Overrun(b, used, held)
                take = i
                break
    return take


def update(store: Store, batch_id: int, **fields: Any) -> None:
    """Record what a step made (input_file_id, provider_id, state, provider_status, ...)."""
    with store.write() as conn:
        conn.execute(B.update().where(B.c.id == batch_id).values(**fields))


def adopt(store: Store, batch_id: int, from_run: int, to_run: int) -> bool:
    """Take over a batch recorded by a run that has ended (crashed before creating it): True for the
    one run that takes it; never while that run lives."""
    with store.write() as conn:
        ended = conn.execute(sa.select(RUN.c.ended_at).where(RUN.c.id == from_run)).scalar()
        if ended is None:
            return False
        return bool(conn.execute(B.update().where(B.c.id == batch_id, B.c.run_id == from_run)
                                 .values(run_id=to_run)).rowcount)


def lines_of(store: Store, batch_id: int) -> list[tuple[str, dict[str, Any]]]:
    """The (job id, request) of a batch's lines still waiting for it, in plan order."""
    with store.read() as conn:
        return [(r.id, r.request) for r in conn.execute(
            sa.select(J.c.id, J.c.request).where(J.c.status == "leased", J.c.lease_owner == owner_of(batch_id))
            .order_by(J.c.seq))]


def open_batches(store: Store, plan_key: str) -> list[dict[str, Any]]:
    """The plan's batches whose results are not all read yet, oldest first."""
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(B).where(B.c.plan_key == plan_key,
                                                                 B.c.state.in_(OPEN_STATES)).order_by(B.c.id))
                .mappings()]


def all_batches(store: Store, plan_key: str) -> list[dict[str, Any]]:
    with store.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(B).where(B.c.plan_key == plan_key).order_by(B.c.id))
                .mappings()]


def record_lines(store: Store, batch_id: int, run_id: int, outcomes: Iterable[LineOutcome]) -> tuple[int, int]:
    """Record a chunk of one batch's results in one transaction: each line's answer or fate and the
    settlement of its reservation. Lines already recorded (their job no longer leased to the batch)
    are skipped. Returns (answered, not answered) among the lines recorded now."""
    owner = owner_of(batch_id)
    now = time.time()
    outcomes = list(outcomes)
    answered = other = 0
    with store.write() as conn:
        ids = [o.job_id for o in outcomes]
        # Locked (PostgreSQL): another process reading the same results waits here, then finds them recorded
        held = {r.id: r.attempts for r in conn.execute(_locked(store, sa.select(J.c.id, J.c.attempts).where(
            J.c.id.in_(ids), J.c.status == "leased", J.c.lease_owner == owner)))}
        reservations = _reservations(conn, batch_id, list(held))
        settlements: list[Settlement] = []
        for o in outcomes:
            if o.job_id not in held:
                continue
            held_attempts = held.pop(o.job_id)
            r = reservations.get(o.job_id)
            if r is not None:   # an attempted line counts as a request; one that never ran is released
                settlements.append(Settlement(r, o.attempted, o.prompt_tokens or 0, o.completion_tokens or 0, o.usd,
                                              cached_tokens=o.cached_tokens, cost=o.cost))
            if o.attempted:
                conn.execute(A.insert().values(job_id=o.job_id, run_id=run_id, started_at=now, ended_at=now,
                                               http_status=200 if o.answer is not None else None,
                                               error_kind=o.error_kind, tokens_reserved=r.input_tokens +
                                               r.output_tokens if r else 0, prompt_tokens=o.prompt_tokens,
                                               completion_tokens=o.completion_tokens))
            attempts = held_attempts + (1 if o.attempted else 0)
            if o.answer is not None:
                answered += 1
                conn.execute(store._insert_ignore(R).values(job_id=o.job_id, run_id=run_id, created_at=now,
                                                           **o.answer))
                conn.execute(J.update().where(J.c.id == o.job_id).values(
                    status="done", attempts=attempts, lease_owner=None, lease_expires=None, last_error=None,
                    error_kind=None, updated_at=now))
                continue
            other += 1
            again = o.retry and attempts < o.max_attempts
            conn.execute(J.update().where(J.c.id == o.job_id).values(
                status="pending" if again else "failed", attempts=attempts, lease_owner=None, lease_expires=None,
                last_error=o.message, error_kind=o.error_kind, permanent=o.permanent and not again, updated_at=now))
        settle(conn, settlements)
        conn.execute(B.update().where(B.c.id == batch_id).values(succeeded=B.c.succeeded + answered,
                                                                 failed=B.c.failed + other))
    return answered, other


def release(store: Store, batch_id: int, state: str = "collected", **fields: Any) -> int:
    """Close a batch: its jobs still leased to it (never answered in it) go back to pending, their
    reservations released. Returns how many went back."""
    owner = owner_of(batch_id)
    now = time.time()
    with store.write() as conn:
        left = [r.id for r in conn.execute(_locked(store, sa.select(J.c.id).where(J.c.status == "leased",
                                                                                 J.c.lease_owner == owner)))]
        reservations = _reservations(conn, batch_id, left)
        settle(conn, [Settlement(r, False, 0, 0, 0.0) for r in reservations.values()])
        if left:
            conn.execute(J.update().where(J.c.status == "leased", J.c.lease_owner == owner)
                         .values(status="pending", lease_owner=None, lease_expires=None, updated_at=now))
        conn.execute(B.update().where(B.c.id == batch_id).values(state=state, collected_at=now, **fields))
    return len(left)


def _locked(store: Store, q: sa.Select[Any]) -> sa.Select[Any]:
    """`q` taking row locks where the database has them (SQLite's write transactions are serial)."""
    return q if store.is_sqlite else q.with_for_update()


def _reservations(conn: Connection, batch_id: int, job_ids: list[str]) -> dict[str, Reservation]:
    """The unsettled reservations of a batch's lines, by job id."""
    out: dict[str, Reservation] = {}
    for i in range(0, len(job_ids), 500):
        rows = conn.execute(sa.select(U).where(U.c.batch_id == batch_id, U.c.state == "reserved",
                                               U.c.job_id.in_(job_ids[i:i + 500]))).mappings()
        for r in rows:
            out[r["job_id"]] = Reservation(r["id"], tuple(window_keys(r["run_id"], r["day"], r["month"]).values()),
                                           r["input_reserved"], r["output_reserved"], r["usd_reserved"])
    return out
