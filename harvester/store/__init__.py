"""The store: the only SQL in the project. SQLite (WAL) by default; any SQLAlchemy URL.

Writes on SQLite take `BEGIN IMMEDIATE`, so several processes can share one file: claims and
ledger updates serialize on the database lock instead of racing. Reads use deferred transactions,
which in WAL mode never block the writers.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import SQLModel

from ..errors import StoreError
from ..export.record import Record
from ..prompts import JobSpec
from . import ledger
from .tables import SCHEMA_VERSION, Attempt, Job, Meta, Response, Run, Usage, UsageTotal

__all__ = ["Store", "ClaimedJob", "AttemptRow", "AnswerRow", "FailureRow", "Job", "Run", "Attempt",
           "Response", "Usage", "Meta", "SCHEMA_VERSION"]

J = Job.__table__
R = Response.__table__
A = Attempt.__table__
RUN = Run.__table__
META = Meta.__table__


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


@dataclass(slots=True)
class FailureRow:
    job_id: str
    error_kind: str
    message: str
    permanent: bool


def _sqlite_path(url: str) -> Path | None:
    u = sa.engine.make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


class Store:
    """A job's queue, answers, attempts and ledger."""

    def __init__(self, url: str) -> None:
        self.url = url
        path = _sqlite_path(url)
        if path is not None:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise StoreError(f"store {path}: cannot create its folder ({e.strerror})") from None
        self.is_sqlite = sa.engine.make_url(url).get_backend_name() == "sqlite"
        self.engine: Engine = sa.create_engine(url, future=True, **({"connect_args": {"timeout": 60}}
                                                                     if self.is_sqlite else {}))
        if self.is_sqlite:
            self._sqlite_setup(self.engine)
        try:
            self._migrate()
        except sa.exc.OperationalError as e:
            raise StoreError(f"store {self.describe()}: cannot open ({e.orig})") from None

    def describe(self) -> str:
        """The URL without a password: safe for messages."""
        return sa.engine.make_url(self.url).render_as_string(hide_password=True)

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
            SQLModel.metadata.create_all(conn, tables=[t.__table__ for t in
                                                       (Meta, Run, Job, Attempt, Response, Usage, UsageTotal)])
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
        if conn.execute(META.update().where(META.c.key == key).values(value=value)).rowcount == 0:
            conn.execute(META.insert().values(key=key, value=value))

    def bind_job(self, name: str) -> None:
        """A store holds one job: refuse to mix two jobs' queues in one file."""
        with self.write() as conn:
            owner = conn.execute(sa.select(META.c.value).where(META.c.key == "job_name")).scalar()
            if owner is None:
                conn.execute(META.insert().values(key="job_name", value=name))
            elif owner != name:
                raise StoreError(f"store {self.describe()} belongs to job {owner!r}, not {name!r}: "
                                 "give each job its own store")

    # --- planning -----------------------------------------------------------------------
    def _insert_ignore(self, table: sa.Table) -> Any:
        if self.is_sqlite:
            from sqlalchemy.dialects.sqlite import insert
        else:
            from sqlalchemy.dialects.postgresql import insert
        return insert(table).on_conflict_do_nothing()

    def plan(self, specs: Iterable[JobSpec], plan_key: str, batch: int = 2000) -> int:
        """Insert the plan's jobs idempotently and mark existing ones as part of it; returns how many were new."""
        new = 0
        rows: list[dict[str, Any]] = []

        def flush() -> None:
            nonlocal new
            with self.write() as conn:
                new += conn.execute(self._insert_ignore(J), rows).rowcount or 0
                conn.execute(J.update().where(J.c.id.in_([r["id"] for r in rows]))
                             .values(plan_key=plan_key, seq=sa.case({r["id"]: r["seq"] for r in rows},
                                                                     value=J.c.id)))
            rows.clear()

        now = time.time()
        for s in specs:
            rows.append({"id": s.id, "prompt_key": s.prompt_key, "plan_key": plan_key, "seq": s.seq,
                         "sample_index": s.sample_index, "request": s.request, "source": s.source,
                         "metadata": s.metadata, "status": "pending", "attempts": 0, "updated_at": now,
                         "permanent": False})
            if len(rows) >= batch:
                flush()
        if rows:
            flush()
        self.set_meta("plan_key", plan_key)
        return new

    # --- runs ---------------------------------------------------------------------------
    def start_run(self, **fields: Any) -> int:
        now = time.time()
        with self.write() as conn:
            return conn.execute(RUN.insert().values(started_at=now, heartbeat_at=now, **fields)).inserted_primary_key[0]

    def end_run(self, run_id: int, **fields: Any) -> None:
        with self.write() as conn:
            conn.execute(RUN.update().where(RUN.c.id == run_id).values(ended_at=time.time(), **fields))

    def reset_retryable_failures(self, plan_key: str) -> int:
        """Give jobs that failed for a transient reason a fresh set of attempts in this run."""
        with self.write() as conn:
            return conn.execute(J.update().where(J.c.plan_key == plan_key, J.c.status == "failed",
                                                 J.c.permanent == sa.false())
                                .values(status="pending", attempts=0, updated_at=time.time())).rowcount

    # --- claiming -----------------------------------------------------------------------
    def claim(self, plan_key: str, owner: str, n: int, lease_seconds: float) -> list[ClaimedJob]:
        """Lease up to n claimable jobs (pending, or leased with an expired lease) in plan order."""
        now = time.time()
        claimable = sa.or_(J.c.status == "pending", sa.and_(J.c.status == "leased", J.c.lease_expires < now))
        pick = sa.select(J.c.id).where(J.c.plan_key == plan_key, claimable).order_by(J.c.seq).limit(n)
        if not self.is_sqlite:
            pick = pick.with_for_update(skip_locked=True)
        stmt = (J.update().where(J.c.id.in_(pick.scalar_subquery()))
                .values(status="leased", lease_owner=owner, lease_expires=now + lease_seconds, updated_at=now)
                .returning(J.c.id, J.c.request, J.c.attempts))
        with self.write() as conn:
            return [ClaimedJob(r.id, r.request, r.attempts) for r in conn.execute(stmt)]

    def release(self, owner: str, job_ids: Iterable[str]) -> None:
        """Hand unsent jobs back to the queue at once (no need to wait for the lease to expire)."""
        ids = list(job_ids)
        if not ids:
            return
        with self.write() as conn:
            conn.execute(J.update().where(J.c.id.in_(ids), J.c.status == "leased", J.c.lease_owner == owner)
                         .values(status="pending", lease_owner=None, lease_expires=None))

    def release_owner(self, owner: str) -> None:
        """Hand back every job this worker still holds (run end, graceful stop)."""
        with self.write() as conn:
            conn.execute(J.update().where(J.c.status == "leased", J.c.lease_owner == owner)
                         .values(status="pending", lease_owner=None, lease_expires=None))

    def renew_leases(self, owner: str, lease_seconds: float, run_id: int | None = None,
                     **run_fields: Any) -> None:
        """The worker's heartbeat: extend its leases; note it (and `run_fields`) on its run."""
        now = time.time()
        with self.write() as conn:
            conn.execute(J.update().where(J.c.status == "leased", J.c.lease_owner == owner)
                         .values(lease_expires=now + lease_seconds))
            if run_id is not None:
                conn.execute(RUN.update().where(RUN.c.id == run_id).values(heartbeat_at=now, **run_fields))

    # --- recording (called by the writer thread, in batches) -----------------------------
    def record(self, attempts: list[AttemptRow], answers: list[AnswerRow], failures: list[FailureRow],
               settlements: list[ledger.Settlement] | None = None) -> None:
        """One transaction: an answer and its ledger settlement are kept, or lost, together."""
        now = time.time()
        with self.write() as conn:
            if settlements:
                ledger.settle(conn, settlements)
            if attempts:
                conn.execute(A.insert(), [_asdict(a) for a in attempts])
                per_job = Counter(a.job_id for a in attempts)
                for job_id, k in per_job.items():
                    conn.execute(J.update().where(J.c.id == job_id).values(attempts=J.c.attempts + k))
            if answers:
                rows = [{**_asdict(a), "created_at": now} for a in answers]
                conn.execute(self._insert_ignore(R), rows)
                conn.execute(J.update().where(J.c.id.in_([a.job_id for a in answers]))
                             .values(status="done", lease_owner=None, lease_expires=None, last_error=None,
                                     error_kind=None, updated_at=now))
            for f in failures:
                conn.execute(J.update().where(J.c.id == f.job_id, J.c.status != "done")
                             .values(status="failed", lease_owner=None, lease_expires=None, last_error=f.message,
                                     error_kind=f.error_kind, permanent=f.permanent, updated_at=now))

    # --- reading ------------------------------------------------------------------------
    def status(self, plan_key: str | None = None) -> dict[str, Any]:
        plan_key = plan_key or self.get_meta("plan_key") or ""
        with self.read() as conn:
            by_state = dict(conn.execute(sa.select(J.c.status, sa.func.count()).where(J.c.plan_key == plan_key)
                                         .group_by(J.c.status)).all())
            other = conn.execute(sa.select(sa.func.count()).where(J.c.plan_key != plan_key)).scalar() or 0
            tokens = conn.execute(sa.select(sa.func.coalesce(sa.func.sum(R.c.prompt_tokens), 0),
                                            sa.func.coalesce(sa.func.sum(R.c.completion_tokens), 0))
                                  .select_from(R.join(J, J.c.id == R.c.job_id))
                                  .where(J.c.plan_key == plan_key)).one()
            attempts = conn.execute(sa.select(sa.func.count(), sa.func.count(A.c.error_kind))).one()
            errors = dict(conn.execute(sa.select(A.c.error_kind, sa.func.count()).where(A.c.error_kind.is_not(None))
                                       .group_by(A.c.error_kind)).all())
            failed = dict(conn.execute(sa.select(J.c.error_kind, sa.func.count())
                                       .where(J.c.plan_key == plan_key, J.c.status == "failed")
                                       .group_by(J.c.error_kind)).all())
            runs = conn.execute(sa.select(RUN).order_by(RUN.c.id.desc()).limit(1)).mappings().first()
        states = {s: by_state.get(s, 0) for s in ("pending", "leased", "done", "failed")}
        return {"jobs": sum(states.values()), **states, "other_plans": other,
                "prompt_tokens": int(tokens[0]), "completion_tokens": int(tokens[1]),
                "requests": attempts[0], "failed_requests": attempts[1],
                "errors_by_kind": errors, "failed_by_kind": failed,
                "last_run": dict(runs) if runs else None}

    def iter_records(self, plan_key: str | None = None, samples: str = "all",
                     batch: int = 2000) -> Iterator[Record]:
        """Answered jobs in plan order, streamed in batches (server-side cursor where there is one)."""
        plan_key = plan_key or self.get_meta("plan_key") or ""
        q = (sa.select(J.c.id, J.c.prompt_key, J.c.seq, J.c.sample_index, J.c.request, J.c.source,
                       J.c.metadata, R.c.content, R.c.finish_reason, R.c.model, R.c.prompt_tokens,
                       R.c.completion_tokens)
             .select_from(J.join(R, R.c.job_id == J.c.id))
             .where(J.c.plan_key == plan_key, J.c.status == "done").order_by(J.c.seq))
        if samples == "first":
            q = q.where(J.c.sample_index == 0)
        with self.engine.connect().execution_options(sqlite_begin="BEGIN", stream_results=True,
                                                     yield_per=batch) as conn:
            with conn.begin():
                for r in conn.execute(q):
                    yield Record(job_id=r.id, prompt_key=r.prompt_key, seq=r.seq, sample_index=r.sample_index,
                                 messages=r.request["messages"], answer=r.content, finish_reason=r.finish_reason,
                                 model=r.model, prompt_tokens=r.prompt_tokens,
                                 completion_tokens=r.completion_tokens, source=r.source,
                                 metadata=r.metadata or {})

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

    def close(self) -> None:
        self.engine.dispose()


def _asdict(obj: Any) -> dict[str, Any]:
    return {k: getattr(obj, k) for k in obj.__slots__}


# Ordered schema migrations: MIGRATIONS[v - 1] upgrades a store from version v to v + 1.
MIGRATIONS: list[Any] = []
