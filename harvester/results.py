"""The shapes of what `Harvester.status()`, `quota()`, `estimate()` and `provenance()` return.

TypedDicts, not classes: the values stay plain dicts (indexed as dicts, dumped as they are by the CLI's
`--json`), and a type checker knows their keys. Stdlib only: the store and the quota guard that build
them import it.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class PricesRow(TypedDict):
    """A model's price as reports show it (harvester.quota.prices_row): USD per million tokens."""

    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None      # None: as fresh input
    cache_write_per_mtok: float | None
    batch_factor: float | None               # None: the provider's, else 1
    windows: list[PriceWindowRow]


class PriceWindowRow(TypedDict):
    label: str
    hours_utc: list[str]
    weekdays: list[int] | None               # 0 = Monday; None: every day
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float | None


class EarlierPlans(TypedDict):
    """Earlier plans of the job that hold answers (harvester.plans.earlier_plans)."""

    plans: int
    answers: int
    reused: int          # of their answers, requests of this plan too: not paid again
    last_plan: str
    changes: list[str]   # how the last one differs from this one
    message: str


# --- status ------------------------------------------------------------------------------------

class StoreStatus(TypedDict, total=False):
    """One plan in the store (`Store.status`, which gives every key): jobs by state, tokens, errors, the
    last run, the live workers. Not total: the status of a job never run has none of these keys."""

    jobs: int
    pending: int
    leased: int
    done: int
    failed: int
    other_plans: int                 # jobs of the store's other plans
    prompt_tokens: int
    completion_tokens: int
    truncated: int                   # answers cut by max_tokens
    requests: int                    # attempts, every plan's
    failed_requests: int
    errors_by_kind: dict[str, int]   # failed attempts by error class
    failed_by_kind: dict[str, int]   # failed jobs of the plan by error class
    # The runs table's row as it is (harvester.store.tables.Run), exit_reason a harvester.reasons name;
    # a TypedDict copy of the table's columns would drift from it.
    last_run: dict[str, Any] | None
    # The live workers' run rows and their heartbeat_age; dicts, as harvester.workers reads them.
    workers: list[dict[str, Any]]
    in_batches: int                  # jobs leased to open provider batches (batch mode)
    batches: list[OpenBatch]         # the plan's open provider batches, oldest first


class OpenBatch(TypedDict):
    """A provider batch whose results are not all read yet (harvester.store.batches)."""

    id: int
    provider_id: str | None          # None: recorded, not created yet (or not known to be)
    state: str                       # intent | uploaded | submitted | ended
    provider_status: str | None      # the provider's last word on it
    lines: int
    succeeded: int
    failed: int
    age_s: float


class Status(StoreStatus):
    """`Harvester.status()`: the job, its store and plan, then the store's keys once the store exists
    (`planned` False and nothing else for a job never run)."""

    job: str
    store: str
    planned: bool
    plan_key: str
    merged: NotRequired[int]         # duplicate prompt rows merged into one job at planning
    cost: NotRequired[LedgerCost | None]   # the quota ledger's totals: paid, list price, savings (with budgets)


# --- quota -------------------------------------------------------------------------------------

class BudgetRow(TypedDict):
    """One budget of the `quota` command (harvester.quota.BudgetState)."""

    name: str                        # e.g. tokens_per_day
    limit: float
    used: float
    reserved: float                  # in flight: reserved at its worst case, not yet settled
    resets_at: str
    left: float


class QuotaTotals(TypedDict):
    """The ledger's totals over every window (`total`); its keys are the ones `quota.report` shows."""

    requests: int
    input_tokens: int
    output_tokens: int
    usd: float                       # what was paid
    requests_reserved: int
    cached_tokens: int               # input tokens read from the provider's prompt cache
    usd_list: float                  # the same usage at list price (harvester.pricing)
    saved_cache: float               # what caching, the hour and batches took off it
    saved_hour: float
    saved_batch: float


class QuotaReport(TypedDict):
    budgets: list[BudgetRow]
    prices: PricesRow | None
    total: QuotaTotals
    terms: NotRequired[dict[str, Any]]   # the terms in force (harvester.terms), added by the CLI


# --- estimate ----------------------------------------------------------------------------------

class WorstCase(TypedDict):
    """One attempt per pending job at its hard input bound + max_tokens."""

    input_tokens: int
    output_tokens: int | None        # None: no max_tokens, no bound
    usd: float | None                # None: no prices, or no bound


class Expected(TypedDict):
    """From the answers so far: calibrated input estimate, mean completion tokens."""

    input_tokens: int
    output_tokens: int
    usd: float | None                # what they are expected to cost: cached as so far, at the hour they are sent
    usd_list: float | None           # the same tokens at list price (harvester.pricing)
    cached_share: float              # of input tokens, served from the prompt cache so far
    from_answers: int


class BudgetFit(TypedDict):
    budget: str
    worst_case: float
    left: float
    fits: bool


class Duration(TypedDict):
    seconds: float | None            # None: unknown (no limit known)
    text: str
    bound_by: str | None             # the limit that decides, and where it comes from


class Estimate(TypedDict):
    """The dry run (harvester.estimate.dry_run)."""

    jobs: int
    rows: int
    merged: int
    plan_key: str
    pending_requests: int
    answered: int
    worst: WorstCase
    expected: Expected | None
    prices: PricesRow | None
    budgets: list[BudgetFit]
    duration: Duration
    earlier: EarlierPlans | None
    terms: dict[str, Any]            # the terms in force (harvester.terms)
    problems: list[str]              # why `run` would refuse or stop
    exit_code: int                   # the code `run` would end with: 0, 2 or 3
    note: str
    mode: str                        # teacher.mode: what the budgets were checked at (sync or batch)
    batch_factor: float              # the share of the synchronous price a batch pays (harvester.batches)


# --- provenance (the dataset card and stats.json) ----------------------------------------------

class ChannelAnswers(TypedDict):
    """The plan's answers that came one way: `sync` (the chat endpoint) or `batch` (a provider batch)."""

    answers: int
    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int                   # of prompt_tokens, read from the provider's prompt cache
    usd: NotRequired[float]              # what they cost (a batch at batch_factor of the price); with prices
    usd_at_sync_price: NotRequired[float]  # what they would have cost synchronously


class ProvenanceCost(TypedDict):
    input_per_mtok: float
    output_per_mtok: float
    batch_factor: float                  # the share of the synchronous price a batch pays (harvester.batches)
    usd: float                           # every answer at the price its channel paid
    usd_at_sync_price: float             # every answer at the synchronous price
    saved_usd: float                     # what batch mode saved
    ledger_usd: float                    # the quota ledger's total: failed attempts too, when budgets are set
    cached_input_per_mtok: float | None
    cached_tokens: int
    usd_list: float                      # every answer at list price (no cache, the day's highest rates, sync)
    saved_cache_usd: float               # what the prompt cache took off that
    ledger: LedgerCost | None            # the quota ledger's figures (hour by hour), when budgets are set


class LedgerCost(TypedDict):
    """The quota ledger's totals: paid, at list price, and what caching, the hour and batches saved."""

    cached_tokens: int
    usd: float
    usd_list: float
    saved_cache: float
    saved_hour: float
    saved_batch: float


class Provenance(TypedDict):
    """Where a plan's answers came from (`Store.provenance`); `Harvester.provenance()` adds `cost`, which
    `stats.json` holds and the dataset card reads."""

    runs: int
    first_run_started: float | None
    last_run_ended: float | None
    terms: dict[str, Any] | None         # the last run's terms (harvester.terms)
    answers: int
    first_answer: float | None
    last_answer: float | None
    prompt_tokens: int
    completion_tokens: int
    models_reported: list[str]
    requests: int                        # attempts, every plan's
    channels: dict[str, ChannelAnswers]  # sync, batch
    cost: NotRequired[ProvenanceCost | None]   # None: no prices known (counts only)


__all__ = ["PricesRow", "PriceWindowRow", "LedgerCost", "EarlierPlans", "StoreStatus", "Status", "BudgetRow",
           "QuotaTotals", "QuotaReport", "WorstCase", "Expected", "BudgetFit", "Duration", "Estimate",
           "ChannelAnswers", "ProvenanceCost", "Provenance"]
