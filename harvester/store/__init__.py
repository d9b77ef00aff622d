"""The store: the only SQL in the project. SQLite (WAL) by default; any SQLAlchemy URL.

Writes on SQLite take `BEGIN IMMEDIATE`, so several processes can share one file: claims and
ledger updates serialize on the database lock instead of racing. Reads use deferred transactions,
which in WAL mode never block the writers.

On PostgreSQL (READ COMMITTED), many workers on many hosts share one store: claims take rows with
`FOR UPDATE SKIP LOCKED`, the ledger locks its window rows, planners insert in id order (no
deadlocks), upserts use `ON CONFLICT`, schema creation holds an advisory lock, export streams through
a server-side cursor, and heartbeats carry the server's clock (so hosts' clocks need not agree).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from ..errors import StoreError
from ..results import ChannelAnswers, Provenance, StoreStatus
from . import batches, ledger
from .rows import JobSpec, Record
from .tables import SCHEMA_VERSION, Attempt, Batch, Job, Meta, Response, Run, Usage, UsageTotal, inserted_id, table_of

__all__ = ["Store", "sqlite_path", "ClaimedJob", "AttemptRow", "AnswerRow", "FailureRow", "Job", "Run", "Attempt",
           "Response", "Usage", "Meta", "SCHEMA_VERSION"]

J = table_of(Job)
R = table_of(Response)
A = table_of(Attempt)
RUN = table_of(Run)
META = table_of(Meta)
BATCH = table_of(Batch)


@dataclass(slots=True)
class ClaimedJob:
    id: str
    request: dict[str, Any]
    attempts: int


@dataclass(slots=True)
class AttemptRow:
    job_id: str
    run_id: int
    started_at: float
    ended_at: float
    http_status: int | None
    error_kind: str | None
    retry_after: float | None
    tokens_reserved: int
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


@dataclass(slots=True)
class AnswerRow:
    job_id: str
    run_id: int
    model: str | None
    content: str
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    raw: dict[str, Any] | None
    reasoning: str | None = None
    logprobs: bytes | None = None      # packed by harvester.logprobs


@dataclass(slots=True)
class FailureRow:
    job_id: str
    error_kind: str
    message: str
    permanent: bool


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL (None for other databases and in-memory SQLite)."""
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class Store:
    """A job's queue, answers, attempts and ledger."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"store {path}: cannot create its folder ({e.strerror})") from None
        u = sa.engine.make_url(url)
        self.is_sqlite = u.get_backend_name() == "sqlite"
        if u.drivername == "postgresql":  # plain postgresql:// means psycopg (3), harvester's driver
            u = u.set(drivername="postgresql+psycopg")
        try:
            self.engine: Engine = sa.create_engine(u, future=True, **({"connect_args": {"timeout": 60}}
                                                                       if self.is_sqlite else {}))
        except ModuleNotFoundError as e:
            raise StoreError(f"store {self.describe()}: its driver ({e.name}) is not installed; for PostgreSQL: "
                             "pip install 'harvester[postgres]'") from None
        if self.is_sqlite:
            self._sqlite_setup(self.engine)
        try:
            self._migrate()
        except sa.exc.OperationalError as e:
            hint = (": another process has held its write lock for over a minute (a stopped or hung harvester? "
                    "`harvester status` lists the workers)") if "locked" in str(e.orig) else ""
            raise StoreError(f"store {self.describe()}: cannot open ({e.orig}){hint}") from None

    def describe(self) -> str:
        """The URL without a password: safe for messages."""
        return self.describe_url(self.url)

    @staticmethod
    def describe_url(url: str) -> str:
        return sa.engine.make_url(url).render_as_string(hide_password=True)

    @staticmethod
    def _sqlite_setup(engine: Engine) -> None:
        @sa.event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            dbapi_conn.isolation_level = None          # we emit BEGIN ourselves
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")   # durable across process crashes in WAL mode
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @sa.event.listens_for(engine, "begin")
        def _on_begin(conn: Connection) -> None:
            conn.exec_driver_sql(conn.get_execution_options().get("sqlite_begin", "BEGIN IMMEDIATE"))

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite)."""
        with self.engine.begin() as conn:
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A consistent read snapshot that never blocks writers."""
        with self.engine.connect().execution_options(sqlite_begin="BEGIN") as conn:
            with conn.begin():
                yield conn

    # --- schema -------------------------------------------------------------------------
    def _migrate(self) -> None:
        with self.write() as conn:
            if not self.is_sqlite:  # concurrent CREATE TABLEs collide: one process at a time
                conn.execute(sa.text("SELECT pg_advisory_xact_lock(7243510394)"))
            SQLModel.metadata.create_all(conn, tables=[table_of(t) for t in
                                                       (Meta, Run, Job, Attempt, Response, Usage, UsageTotal, Batch)])
            found = conn.execute(sa.select(META.c.value).where(META.c.key == "schema_version")).scalar()
            if found is None:
                conn.execute(META.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
                return
            version = int(found)
            if version > SCHEMA_VERSION:
                raise StoreError(f"store {self.describe()} has schema version {version}, newer than this "
                                 f"harvester understands ({SCHEMA_VERSION}): upgrade harvester")
            for step in MIGRATIONS[version - 1:SCHEMA_VERSION - 1]:
                step(conn)
            conn.execute(META.update().where(META.c.key == "schema_version").values(value=str(SCHEMA_VERSION)))

    def get_meta(self, key: str) -> str | None:
        with self.read() as conn:
            return conn.execute(sa.select(META.c.value).where(META.c.key == key)).scalar()

    def set_meta(self, key: str, value: str, conn: Connection | None = None) -> None:
        if conn is None:
            with self.write() as c:
                return self.set_meta(key, value, c)
        stmt = self._insert(META).values(key=key, value=value)
        conn.execute(stmt.on_conflict_do_update(index_elements=[META.c.key], set_={"value": stmt.excluded.value}))

    def bind_job(self, name: str) -> None:
        """A store holds one job: refuse to mix two jobs' queues in one file."""
        with self.write() as conn:
            conn.execute(self._insert_ignore(META).values(key="job_name", value=name))  # first one wins
            owner = conn.execute(sa.select(META.c.value).where(META.c.key == "job_name")).scalar()
            if owner != name:
                raise StoreError(f"store {self.describe()} belongs to job {owner!r}, not {name!r}: "
                                 "give each job its own store")

    # --- planning -----------------------------------------------------------------------
    def _insert(self, table: sa.Table) -> Any:
        """The dialect's INSERT, which has ON CONFLICT."""
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
            return insert(table)
        from sqlalchemy.dialects.postgresql import insert as pg_insert
        return pg_insert(table)

    def _insert_ignore(self, table: sa.Table) -> Any:
        return self._insert(table).on_conflict_do_nothing()

    def _now(self) -> Any:
        """The time as a SQL expression: the server's clock on PostgreSQL, shared by every host."""
        if self.is_sqlite:
            return sa.literal(time.time(), sa.Float)
        return sa.cast(sa.func.extract("epoch", sa.func.clock_timestamp()), sa.Float)

    def plan(self, specs: Iterable[JobSpec], plan_key: str, batch: int = 2000) -> int:
        """Insert the plan's jobs idempotently and mark existing ones as part of it; returns how many were new."""
        new = 0
        rows: list[dict[str, Any]] = []

        def flush() -> None:
            # Concurrent planners touch the same rows: each batch takes them in id order, so two
            # planners wait for each other at worst, and never deadlock.
            nonlocal new
            rows.sort(key=lambda r: r["id"])
            ids = [r["id"] for r in rows]
            with self.write() as conn:
                new += len(conn.execute(self._insert_ignore(J).returning(J.c.id), rows).all())
                if not self.is_sqlite:
                    conn.execute(sa.select(J.c.id).where(J.c.id.in_(ids)).order_by(J.c.id).with_for_update())
                conn.execute(J.update().where(J.c.id.in_(ids))
                             .values(plan_key=plan_key, seq=sa.case({r["id"]: r["seq"] for r in rows},
                                                                     value=J.c.id),
                                     group_seq=sa.case({r["id"]: r["group_seq"] for r in rows}, value=J.c.id)))
            rows.clear()

        now = time.time()
        for s in specs:
            rows.append({"id": s.id, "prompt_key": s.prompt_key, "plan_key": plan_key, "seq": s.seq,
                         "sample_index": s.sample_index, "request": s.request, "source": s.source,
                         "metadata": s.metadata, "group_seq": s.seq if s.group_seq is None else s.group_seq,
                         "status": "pending", "attempts": 0, "updated_at": now,
                         "permanent": False})
            if len(rows) >= batch:
                flush()
        if rows:
            flush()
        self.set_meta("plan_key", plan_key)
        return new

    # --- runs ---------------------------------------------------------------------------
    def start_run(self, **fields: Any) -> int:
        with self.write() as conn:
            return inserted_id(conn.execute(RUN.insert().values(started_at=self._now(), heartbeat_at=self._now(),
                                                                **fields)))

    def end_run(self, run_id: int, **fields: Any) -> None:
        with self.write() as conn:
            conn.execute(RUN.update().where(RUN.c.id == run_id).values(ended_at=self._now(), **fields))

    def reset_retryable_failures(self, plan_key: str) -> int:
        """Give jobs that failed for a transient reason a fresh set of attempts in this run."""
        with self.write() as conn:
            return conn.execute(J.update().where(J.c.plan_key == plan_key, J.c.status == "failed",
                                                 J.c.permanent == sa.false())
                                .values(status="pending", attempts=0, updated_at=time.time())).rowcount

    # --- claiming -----------------------------------------------------------------------
    def claim(self, plan_key: str, owner: str, n: int, lease_seconds: float,
              max_seq: int | None = None) -> list[ClaimedJob]:
        """Lease up to n claimable jobs (pending, or leased with an expired lease) in sending order: plan
        order, jobs sharing a first message together (`group_seq`); only seq <= max_seq with it (a trial
        run on the plan's first jobs)."""
        now = time.time()
        claimable = sa.or_(J.c.status == "pending", sa.and_(J.c.status == "leased", J.c.lease_expires < now))
        pick = (sa.select(J.c.id).where(J.c.plan_key == plan_key, claimable)
                .order_by(J.c.group_seq, J.c.seq).limit(n))   # (ix_job_claim_group; every row has one since v4)
        if max_seq is not None:
            pick = pick.where(J.c.seq <= max_seq)
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (J.update().where(J.c.id.in_(pick.scalar_subquery()))
                .values(status="leased", lease_owner=owner, lease_expires=now + lease_seconds, updated_at=now)
                .returning(J.c.id, J.c.request, J.c.attempts))
        with self.write() as conn:
            return [ClaimedJob(r.id, r.request, r.attempts) for r in conn.execute(stmt)]

    def release_owner(self, owner: str) -> None:
        """Hand back every job this worker still holds (run end, graceful stop)."""
        with self.write() as conn:
            conn.execute(J.update().where(J.c.status == "leased", J.c.lease_owner == owner)
                         .values(status="pending", lease_owner=None, lease_expires=None))

    def take_back_dead(self, plan_key: str, *, dead_after: float, gone: Callable[[dict[str, Any]], bool],
                       exclude_run: int | None = None) -> dict[str, int]:
        """Runs whose worker is dead (not ended, and not heard from for `dead_after` s, or `gone`: its pid
        has exited on this machine) are marked ended, exit reason "crashed"; the plan's jobs leased by
        a run that has ended go back to the queue at once, without waiting for their leases to expire.
        A live worker's leases are never touched. Returns the jobs released, by former owner."""
        with self.write() as conn:
            now = conn.execute(sa.select(self._now())).scalar_one()
            cutoff = now - dead_after
            runs = conn.execute(sa.select(RUN.c.id, RUN.c.owner, RUN.c.origin, RUN.c.heartbeat_at)
                                .where(RUN.c.ended_at.is_(None))).mappings().all()
            for r in runs:
                stale = r["heartbeat_at"] is None or r["heartbeat_at"] < cutoff
                if r["id"] == exclude_run or not (stale or gone(dict(r))):
                    continue
                cond = [RUN.c.id == r["id"], RUN.c.ended_at.is_(None)]
                if stale and not gone(dict(r)):  # a heartbeat since we looked: alive after all
                    cond.append(sa.or_(RUN.c.heartbeat_at.is_(None), RUN.c.heartbeat_at < cutoff))
                conn.execute(RUN.update().where(*cond).values(
                    ended_at=sa.func.coalesce(RUN.c.heartbeat_at, RUN.c.started_at), exit_reason="crashed"))
            # Leases of ended runs are orphans: those just marked crashed, or a run that could not hand
            # them back at its end (e.g. the store was unreachable then).
            orphan = sa.and_(J.c.plan_key == plan_key, J.c.status == "leased",
                             J.c.lease_owner.in_(sa.select(RUN.c.owner).where(RUN.c.ended_at.is_not(None))))
            released: dict[str, int] = dict(conn.execute(
                sa.select(J.c.lease_owner, sa.func.count()).where(orphan).group_by(J.c.lease_owner)).all())
            if released:
                conn.execute(J.update().where(orphan).values(status="pending", lease_owner=None, lease_expires=None))
            return released

    def open_jobs(self, plan_key: str, max_seq: int | None = None) -> tuple[int, int]:
        """(jobs, distinct prompts) of the plan not answered nor failed: what a run may send (only
        seq <= max_seq with it)."""
        q = (sa.select(sa.func.count(), sa.func.count(sa.distinct(J.c.prompt_key)))
             .where(J.c.plan_key == plan_key, J.c.status.in_(("pending", "leased"))))
        if max_seq is not None:
            q = q.where(J.c.seq <= max_seq)
        with self.read() as conn:
            jobs, prompts = conn.execute(q).one()
        return int(jobs), int(prompts)

    def reset_failures(self, plan_key: str) -> int:
        """Every failed job of the plan, permanent ones too, back to pending with fresh attempts
        (`run --retry-failed`)."""
        with self.write() as conn:
            return conn.execute(J.update().where(J.c.plan_key == plan_key, J.c.status == "failed")
                                .values(status="pending", attempts=0, permanent=False, updated_at=time.time())
                                ).rowcount

    # --- workers ------------------------------------------------------------------------
    def heartbeat(self, run_id: int, *, dead_after: float, renew: tuple[str, float, str] | None = None,
                  **run_fields: Any) -> tuple[float, list[dict[str, Any]]]:
        """A worker's heartbeat, in one transaction: note it (and `run_fields`) on its run; extend its
        leases if `renew` = (owner, lease_seconds, plan_key); return the heartbeat's time and the live
        workers of the store (this one included): runs not ended, heard from within `dead_after` s.
        Every worker counted here had registered before this heartbeat's time."""
        with self.write() as conn:
            if renew is not None:
                owner, lease_seconds, plan_key = renew
                conn.execute(J.update().where(J.c.plan_key == plan_key, J.c.status == "leased",
                                              J.c.lease_owner == owner)
                             .values(lease_expires=time.time() + lease_seconds))
            now = conn.execute(RUN.update().where(RUN.c.id == run_id).values(heartbeat_at=self._now(), **run_fields)
                               .returning(RUN.c.heartbeat_at)).scalar_one()
            return now, self._live_workers(conn, now - dead_after, now)

    @staticmethod
    def _live_workers(conn: Connection, since: float, now: float | None = None) -> list[dict[str, Any]]:
        rows = conn.execute(sa.select(RUN.c.id, RUN.c.owner, RUN.c.origin, RUN.c.plan_key, RUN.c.started_at,
                                      RUN.c.heartbeat_at, RUN.c.share, RUN.c.sent, RUN.c.answered,
                                      RUN.c.rate_limited, RUN.c.throughput)
                            .where(RUN.c.ended_at.is_(None), RUN.c.heartbeat_at >= since)
                            .order_by(RUN.c.id)).mappings().all()
        out = [dict(r) for r in rows]
        if now is not None:
            for r in out:
                r["heartbeat_age"] = max(0.0, now - r["heartbeat_at"])
        return out

    def leases_held(self, plan_key: str, exclude_owner: str | None = None,
                    max_seq: int | None = None) -> dict[str, int]:
        """Jobs of the plan leased right now, by owner (only seq <= max_seq with it)."""
        q = (sa.select(J.c.lease_owner, sa.func.count()).where(J.c.plan_key == plan_key, J.c.status == "leased")
             .group_by(J.c.lease_owner))
        if max_seq is not None:
            q = q.where(J.c.seq <= max_seq)
        if exclude_owner is not None:
            q = q.where(J.c.lease_owner != exclude_owner)
        with self.read() as conn:
            return {owner: n for owner, n in conn.execute(q).all()}

    # --- recording (called by the writer thread, in batches) -----------------------------
    def record(self, attempts: list[AttemptRow], answers: list[AnswerRow], failures: list[FailureRow],
               settlements: list[ledger.Settlement] | None = None) -> None:
        """One transaction: an answer and its ledger settlement are kept, or lost, together."""
        now = time.time()
        with self.write() as conn:
            if settlements:
                ledger.settle(conn, settlements)
            if attempts:
                # executemany of one cached statement: a multi-row INSERT ... VALUES is compiled anew for
                # every batch size, which cost more CPU than the rest of the batch (bench_throughput)
                conn.execute(A.insert(), [_asdict(a) for a in attempts])
                by_count: dict[int, list[str]] = {}
                for job_id, k in Counter(a.job_id for a in attempts).items():
                    by_count.setdefault(k, []).append(job_id)
                for k, ids in sorted(by_count.items()):  # usually one statement: one attempt per job
                    conn.execute(J.update().where(J.c.id.in_(sorted(ids))).values(attempts=J.c.attempts + k))
            if answers:
                conn.execute(self._insert_ignore(R), [{**_asdict(a), "created_at": now} for a in answers])
                conn.execute(J.update().where(J.c.id.in_([a.job_id for a in answers]))
                             .values(status="done", lease_owner=None, lease_expires=None, last_error=None,
                                     error_kind=None, updated_at=now))
            for f in failures:
                conn.execute(J.update().where(J.c.id == f.job_id, J.c.status != "done")
                             .values(status="failed", lease_owner=None, lease_expires=None, last_error=f.message,
                                     error_kind=f.error_kind, permanent=f.permanent, updated_at=now))

    # --- reading ------------------------------------------------------------------------
    def status(self, plan_key: str | None = None, dead_after: float = 10.0) -> StoreStatus:
        """Jobs by state, tokens, errors; the last run; the live workers (heard from within `dead_after` s)."""
        plan_key = self._plan_key(plan_key)
        with self.read() as conn:
            now = conn.execute(sa.select(self._now())).scalar_one()
            workers = self._live_workers(conn, now - dead_after, now)
            by_state: dict[str, int] = dict(conn.execute(sa.select(J.c.status, sa.func.count())
                                                         .where(J.c.plan_key == plan_key).group_by(J.c.status)).all())
            other = conn.execute(sa.select(sa.func.count()).where(J.c.plan_key != plan_key)).scalar() or 0
            tokens = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(R.c.prompt_tokens), 0),
                                            sa.func.coalesce(sa.func.sum(R.c.completion_tokens), 0))
                                  .select_from(R.join(J, J.c.id == R.c.job_id))
                                  .where(J.c.plan_key == plan_key)).one()
            truncated = conn.execute(sa.select(sa.func.count()).select_from(R.join(J, J.c.id == R.c.job_id))
                                     .where(J.c.plan_key == plan_key, R.c.finish_reason == "length")).scalar() or 0
            attempts = conn.execute(sa.select(sa.func.count(), sa.func.count(A.c.error_kind))).one()
            errors: dict[str, int] = dict(conn.execute(
                sa.select(A.c.error_kind, sa.func.count()).where(A.c.error_kind.is_not(None))
                .group_by(A.c.error_kind)).all())
            failed: dict[str, int] = dict(conn.execute(
                sa.select(J.c.error_kind, sa.func.count()).where(J.c.plan_key == plan_key, J.c.status == "failed")
                .group_by(J.c.error_kind)).all())
            runs = conn.execute(sa.select(RUN).order_by(RUN.c.id.desc()).limit(1)).mappings().first()
            in_batches = conn.execute(sa.select(sa.func.count()).where(
                J.c.plan_key == plan_key, J.c.status == "leased", J.c.lease_owner.like("batch:%"))).scalar() or 0
            open_batches = conn.execute(sa.select(BATCH).where(BATCH.c.plan_key == plan_key,
                                                               BATCH.c.state.in_(batches.OPEN_STATES))
                                        .order_by(BATCH.c.id)).mappings().all()
        pending, leased, done, failed_jobs = (by_state.get(s, 0) for s in ("pending", "leased", "done", "failed"))
        return {"jobs": pending + leased + done + failed_jobs, "pending": pending, "leased": leased, "done": done,
                "failed": failed_jobs, "other_plans": other,
                "prompt_tokens": int(tokens[0]), "completion_tokens": int(tokens[1]), "truncated": int(truncated),
                "requests": attempts[0], "failed_requests": attempts[1],
                "errors_by_kind": errors, "failed_by_kind": failed,
                "last_run": dict(runs) if runs else None, "workers": workers, "in_batches": in_batches,
                "batches": [{"id": b["id"], "provider_id": b["provider_id"], "state": b["state"],
                             "provider_status": b["provider_status"], "lines": b["lines"], "succeeded": b["succeeded"],
                             "failed": b["failed"], "age_s": round(now - b["created_at"], 1)} for b in open_batches]}

    def _plan_key(self, plan_key: str | None) -> str:
        """The plan asked for, else the store's current one."""
        return plan_key or self.get_meta("plan_key") or ""

    def count_jobs(self, plan_key: str) -> int:
        with self.read() as conn:
            return conn.execute(sa.select(sa.func.count()).where(J.c.plan_key == plan_key)).scalar() or 0

    def job_states(self, ids: list[str]) -> dict[str, tuple[str, bool, str]]:
        """(status, permanent, plan_key) of those of `ids` the store holds, whatever their plan."""
        out: dict[str, tuple[str, bool, str]] = {}
        with self.read() as conn:
            for i in range(0, len(ids), 500):
                q = sa.select(J.c.id, J.c.status, J.c.permanent, J.c.plan_key).where(J.c.id.in_(ids[i:i + 500]))
                out.update({r.id: (r.status, bool(r.permanent), r.plan_key) for r in conn.execute(q)})
        return out

    def plans_with_answers(self, exclude: str) -> list[dict[str, Any]]:
        """Other plans of this store that hold answers, the most recently run first."""
        with self.read() as conn:
            counts = conn.execute(sa.select(J.c.plan_key, sa.func.count())
                                  .where(J.c.status == "done", J.c.plan_key != exclude).group_by(J.c.plan_key)).all()
            last_run: dict[str, int] = dict(conn.execute(
                sa.select(RUN.c.plan_key, sa.func.max(RUN.c.id)).group_by(RUN.c.plan_key)).all())
        plans = [{"plan_key": k, "answers": n, "last_run": last_run.get(k)} for k, n in counts]
        return sorted(plans, key=lambda p: p["last_run"] or 0, reverse=True)

    def seq_cutoff(self, plan_key: str, n: int) -> int | None:
        """The seq of the plan's n-th job in plan order (None: the plan has no more than n jobs)."""
        with self.read() as conn:
            return conn.execute(sa.select(J.c.seq).where(J.c.plan_key == plan_key).order_by(J.c.seq)
                                .offset(n - 1).limit(1)).scalar() if n > 0 else None

    def count_states(self, plan_key: str, max_seq: int | None = None) -> dict[str, int]:
        """The plan's jobs by state (only seq <= max_seq with it)."""
        q = sa.select(J.c.status, sa.func.count()).where(J.c.plan_key == plan_key).group_by(J.c.status)
        if max_seq is not None:
            q = q.where(J.c.seq <= max_seq)
        with self.read() as conn:
            found: dict[str, int] = dict(conn.execute(q).all())
        return {s: found.get(s, 0) for s in ("pending", "leased", "done", "failed")}

    def last_limiter(self) -> dict[str, Any] | None:
        """The limiter snapshot of the last run that recorded one (limits in force, and their source)."""
        with self.read() as conn:
            return conn.execute(sa.select(RUN.c.limiter).where(RUN.c.limiter.is_not(None))
                                .order_by(RUN.c.id.desc()).limit(1)).scalar()

    def iter_records(self, plan_key: str | None = None, samples: str = "all", batch: int = 2000,
                     seqs: tuple[int, int] | None = None) -> Iterator[Record]:
        """Answered jobs in plan order (only lo <= seq < hi with `seqs`), streamed in batches
        (server-side cursor where there is one)."""
        plan_key = self._plan_key(plan_key)
        q = (sa.select(J.c.id, J.c.prompt_key, J.c.seq, J.c.sample_index, J.c.request, J.c.source,
                       R.c.content, R.c.finish_reason, R.c.model, R.c.prompt_tokens, R.c.completion_tokens,
                       R.c.reasoning, J.c["metadata"], R.c.logprobs)
             .select_from(J.join(R, R.c.job_id == J.c.id))
             .where(J.c.plan_key == plan_key, J.c.status == "done").order_by(J.c.seq))
        if samples == "first":
            q = q.where(J.c.sample_index == 0)
        if seqs is not None:
            q = q.where(J.c.seq >= seqs[0], J.c.seq < seqs[1])
        with self.engine.connect().execution_options(sqlite_begin="BEGIN", stream_results=True,
                                                     yield_per=batch) as conn:
            with conn.begin():
                for (job_id, prompt_key, seq, sample_index, request, source, content, finish_reason, model,
                     prompt_tokens, completion_tokens, reasoning, metadata, logprobs) in conn.execute(q):
                    yield Record(job_id, prompt_key, seq, sample_index, request["messages"], content, finish_reason,
                                 model, prompt_tokens, completion_tokens, source, metadata or {},
                                 reasoning=reasoning, shape=request.get("shape"), logprobs=logprobs)

    def answered_seqs(self, plan_key: str | None = None) -> tuple[int, int, int]:
        """(answered jobs, lowest seq, highest seq) of the plan: how to cut it into slices."""
        plan_key = self._plan_key(plan_key)
        with self.read() as conn:
            n, lo, hi = conn.execute(sa.select(sa.func.count(), sa.func.min(J.c.seq), sa.func.max(J.c.seq))
                                     .where(J.c.plan_key == plan_key, J.c.status == "done")).one()
        return int(n), int(lo or 0), int(hi or 0)

    def iter_pending_messages(self, plan_key: str, batch: int = 2000) -> Iterator[list[dict[str, str]]]:
        """The messages of every job of the plan not yet answered (for the dry run's estimate)."""
        q = (sa.select(J.c.request).where(J.c.plan_key == plan_key, J.c.status != "done",
                                          sa.not_(sa.and_(J.c.status == "failed", J.c.permanent == sa.true())))
             .order_by(J.c.seq))
        with self.engine.connect().execution_options(sqlite_begin="BEGIN", stream_results=True,
                                                     yield_per=batch) as conn:
            with conn.begin():
                for (request,) in conn.execute(q):
                    yield request["messages"]

    def provenance(self, plan_key: str | None = None) -> Provenance:
        """What a dataset card says of where its rows came from: runs, dates, models, terms, usage, and
        the answers by channel (`sync`, `batch`: read from a provider batch, its `raw` naming the batch)."""
        plan_key = self._plan_key(plan_key)
        with self.read() as conn:
            runs = conn.execute(sa.select(sa.func.count(), sa.func.min(RUN.c.started_at), sa.func.max(RUN.c.ended_at))
                                .where(RUN.c.plan_key == plan_key)).one()
            terms = conn.execute(sa.select(RUN.c.terms).where(RUN.c.plan_key == plan_key)
                                 .order_by(RUN.c.id.desc()).limit(1)).scalar()
            # one pass over the plan's answers, driven by the job index (not a scan of every response)
            # grouped by the label: PostgreSQL takes a repeated expression with its own bound parameters
            # for another expression
            channel = _channel().label("channel")
            per_model = conn.execute(sa.select(R.c.model, channel, sa.func.count(), sa.func.min(R.c.created_at),
                                               sa.func.max(R.c.created_at),
                                               sa.func.coalesce(sa.func.sum(R.c.prompt_tokens), 0),
                                               sa.func.coalesce(sa.func.sum(R.c.completion_tokens), 0),
                                               sa.func.coalesce(sa.func.sum(R.c.raw["cached_tokens"].as_integer()), 0))
                                     .select_from(J.join(R, R.c.job_id == J.c.id))
                                     .where(J.c.plan_key == plan_key, J.c.status == "done")
                                     .group_by(R.c.model, channel)).all()
            models = sorted({m for m, *_ in per_model if m is not None})
            channels: dict[str, ChannelAnswers] = {c: {"answers": 0, "prompt_tokens": 0, "completion_tokens": 0,
                                                       "cached_tokens": 0} for c in ("sync", "batch")}
            for _, name, n, _, _, pin, pout, cached in per_model:
                got = channels[name]
                got["answers"] += n
                got["prompt_tokens"] += int(pin)
                got["completion_tokens"] += int(pout)
                got["cached_tokens"] += int(cached)
            requests = conn.execute(sa.select(sa.func.count()).select_from(A)).scalar() or 0
        return {"runs": runs[0], "first_run_started": runs[1], "last_run_ended": runs[2], "terms": terms,
                "answers": sum(c["answers"] for c in channels.values()),
                "first_answer": min((r[3] for r in per_model), default=None),
                "last_answer": max((r[4] for r in per_model), default=None),
                "prompt_tokens": sum(c["prompt_tokens"] for c in channels.values()),
                "completion_tokens": sum(c["completion_tokens"] for c in channels.values()),
                "models_reported": models, "requests": requests, "channels": channels}

    def close(self) -> None:
        self.engine.dispose()


def _channel() -> Any:
    """"batch" for an answer read from a provider batch (its raw JSON names the batch), else "sync"."""
    return sa.case((R.c.raw["batch"].as_string().is_not(None), "batch"), else_="sync")


def _asdict(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


def _v1_reasoning(conn: Connection) -> None:
    """v1 -> v2: answers keep the teacher's reasoning trace (DeepSeek's reasoning_content, vLLM's...)."""
    conn.execute(sa.text("ALTER TABLE response ADD COLUMN reasoning TEXT"))


def _v2_batches(conn: Connection) -> None:
    """v2 -> v3: provider batches (their table is created with the others); ledger rows name theirs."""
    conn.execute(sa.text("ALTER TABLE usage ADD COLUMN batch_id INTEGER"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_usage_batch_id ON usage (batch_id)"))


def _v3_logprobs(conn: Connection) -> None:
    """v3 -> v4: answers keep the teacher's token logprobs, packed (harvester.logprobs)."""
    blob = "BYTEA" if conn.dialect.name == "postgresql" else "BLOB"
    conn.execute(sa.text(f"ALTER TABLE response ADD COLUMN logprobs {blob}"))


def _v4_prices(conn: Connection) -> None:
    """v4 -> v5: the ledger keeps list price and savings (cache, hour, batch) beside what was paid; jobs
    keep the order they are sent in (`group_seq`, harvester.cacheorder)."""
    for table in ("usage", "usagetotal"):
        conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN cached_tokens INTEGER NOT NULL DEFAULT 0"))
        for column in ("usd_list", "saved_cache", "saved_hour", "saved_batch"):
            conn.execute(sa.text(f"ALTER TABLE {table} ADD COLUMN {column} FLOAT NOT NULL DEFAULT 0"))
        conn.execute(sa.text(f"UPDATE {table} SET usd_list = usd"))   # before v5 every cost was a list price
    conn.execute(sa.text("ALTER TABLE job ADD COLUMN group_seq INTEGER"))
    conn.execute(sa.text("UPDATE job SET group_seq = seq"))
    conn.execute(sa.text("CREATE INDEX IF NOT EXISTS ix_job_claim_group ON job (plan_key, status, group_seq, seq)"))


# Ordered schema migrations: MIGRATIONS[v - 1] upgrades a store from version v to v + 1.
MIGRATIONS: list[Any] = [_v1_reasoning, _v2_batches, _v3_logprobs, _v4_prices]
