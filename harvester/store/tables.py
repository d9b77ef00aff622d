"""The store's tables (sqlmodel). Times are UTC epoch seconds (float)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Column, Index, LargeBinary, Table
from sqlalchemy import inspect as sa_inspect
from sqlalchemy.engine import CursorResult
from sqlmodel import Field, SQLModel

SCHEMA_VERSION = 5


class Meta(SQLModel, table=True):
    """Key/value facts about the store: schema version, job name, current plan key."""

    key: str = Field(primary_key=True)
    value: str


class Run(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_name: str
    owner: str                                   # worker id: host:pid:random
    started_at: float
    ended_at: float | None = None
    heartbeat_at: float | None = None
    exit_reason: str | None = None               # a harvester.reasons name; None: not ended
    version: str
    config_hash: str
    plan_key: str = ""
    terms: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))
    sent: int = 0                                # requests this run sent
    answered: int = 0
    rate_limited: int = 0                        # 429s this run received
    limiter: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # limits in force, sources
    # A live worker = a run not ended whose heartbeat is recent (harvester.crawler.dead_after).
    origin: str = ""                             # boot id + pid namespace (Linux), else host: where `owner`'s pid lives
    share: float | None = None                   # its share of the teacher's limits (1 / live workers)
    throughput: float | None = None              # answers/min over the last ~30 s


class Job(SQLModel, table=True):
    id: str = Field(primary_key=True)            # hash(messages, model, params, sample index)
    prompt_key: str = Field(index=True)          # hash(messages): the samples of one prompt
    plan_key: str                                # which plan (job file + prompts) it belongs to
    seq: int                                     # position in the plan: export order
    # (v4) the order jobs are sent in: the seq of the first job of the plan with the same first message
    # (harvester.cacheorder), so that those sharing a long prefix go together; else its own seq
    group_seq: int | None = None
    sample_index: int = 0
    request: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    source: str = ""
    meta: dict[str, Any] = Field(default_factory=dict, sa_column=Column("metadata", JSON))
    status: str = "pending"                      # pending | leased | done | failed
    attempts: int = 0
    lease_owner: str | None = None
    lease_expires: float | None = None
    last_error: str | None = None
    error_kind: str | None = None                # e.g. http_400; "permanent:" prefix is not retried
    permanent: bool = False
    updated_at: float = 0.0

    __table_args__ = (Index("ix_job_claim", "plan_key", "status", "seq"),
                      Index("ix_job_claim_group", "plan_key", "status", "group_seq", "seq"))


class Attempt(SQLModel, table=True):
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(index=True)
    run_id: int
    started_at: float
    ended_at: float
    http_status: int | None = None
    error_kind: str | None = None                # None = success
    retry_after: float | None = None
    tokens_reserved: int = 0
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


class Response(SQLModel, table=True):
    job_id: str = Field(primary_key=True)
    run_id: int
    model: str | None = None                     # as the teacher reported it
    content: str
    reasoning: str | None = None                 # the reasoning trace, where the teacher returns one (v2)
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency: float
    created_at: float
    raw: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON))  # id, system_fingerprint...
    # the answer's tokens, logprobs and top-k, packed (harvester.logprobs), when the job asked for them (v4)
    logprobs: bytes | None = Field(default=None, sa_column=Column(LargeBinary))


class Usage(SQLModel, table=True):
    """The quota ledger: one row per request, reserved at its worst case before the send and
    settled with the actual usage after it. The windows it was charged to are kept on the row."""

    id: int | None = Field(default=None, primary_key=True)
    run_id: int = Field(index=True)
    job_id: str | None = None
    day: str                                     # UTC "YYYY-MM-DD" of the reservation
    month: str                                   # UTC "YYYY-MM"
    state: str = Field(default="reserved", index=True)  # reserved | settled | lost (worker died)
    input_reserved: int = 0
    output_reserved: int = 0
    usd_reserved: float = 0.0
    input_tokens: int = 0                        # actual, once settled
    output_tokens: int = 0
    usd: float = 0.0
    created_at: float = 0.0
    batch_id: int | None = Field(default=None, index=True)  # a provider batch's line (v3): settled by
    # whichever run reads its result, never expired as lost with the run that submitted it
    # (v4) what caching saved, and the settled usage at list price with what each saving took off it
    # (harvester.pricing): usd_list - saved_cache - saved_hour - saved_batch = usd
    cached_tokens: int = 0
    usd_list: float = 0.0
    saved_cache: float = 0.0
    saved_hour: float = 0.0
    saved_batch: float = 0.0


class Batch(SQLModel, table=True):
    """A provider batch (v3). Its intent is recorded, its lines leased to it and their worst case reserved,
    all in one transaction before anything is uploaded; each provider id right after the step that made it.
    Its jobs are leased to `batch:<id>` until their results are read."""

    id: int | None = Field(default=None, primary_key=True)
    plan_key: str = Field(index=True)
    protocol: str                                # openai | anthropic
    tag: str = Field(unique=True)                # our name for it at the provider (metadata, file name)
    state: str = Field(default="intent", index=True)  # intent | uploaded | submitted | ended | collected | abandoned
    lines: int = 0
    run_id: int                                  # the run that made it
    input_file_id: str | None = None             # OpenAI: the uploaded input file
    provider_id: str | None = None               # the provider's batch id
    provider_status: str | None = None           # its last status, in the provider's words
    outcome: str | None = None                   # completed | failed | expired | cancelled
    detail: str | None = None                    # the provider's words on a failed or cancelled batch
    succeeded: int = 0                           # lines answered, as read
    failed: int = 0                              # lines errored, expired or cancelled, as read
    usd_reserved: float = 0.0
    created_at: float = 0.0
    submitted_at: float | None = None
    ended_at: float | None = None
    collected_at: float | None = None


class UsageTotal(SQLModel, table=True):
    """Running totals per budget window ("run:7", "day:2026-11-28", "month:2026-11", "total"),
    so a reservation checks its budgets in O(1) whatever the ledger's length."""

    window: str = Field(primary_key=True)
    requests: int = 0                            # used (settled), every attempt counts
    input_tokens: int = 0
    output_tokens: int = 0
    usd: float = 0.0
    requests_reserved: int = 0                   # reserved, not yet settled
    input_reserved: int = 0
    output_reserved: int = 0
    usd_reserved: float = 0.0
    cached_tokens: int = 0                       # (v4) as on the usage rows
    usd_list: float = 0.0
    saved_cache: float = 0.0
    saved_hour: float = 0.0
    saved_batch: float = 0.0


def table_of(model: type[SQLModel]) -> Table:
    """A table model's SQLAlchemy Table, typed: sqlmodel's metaclass sets `__table__` on a `table=True`
    model but does not declare it, so `Model.__table__` has no type. Its mapper's local table is that object."""
    table = sa_inspect(model).local_table
    if not isinstance(table, Table):
        raise TypeError(f"{model.__name__} is not a table model")
    return table


def inserted_id(result: CursorResult[Any]) -> int:
    """The primary key of the row a one-row INSERT wrote."""
    key = result.inserted_primary_key
    if key is None:
        raise RuntimeError("the INSERT reported no primary key")
    return int(key[0])
