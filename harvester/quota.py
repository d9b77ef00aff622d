"""The terms-of-service quota guard: budgets that a run never exceeds, across runs and processes.

Before each request (every attempt, retries included) the guard reserves its worst case in the
ledger: estimated input tokens + max_tokens, priced at the input and output rates. After the answer
it settles the actual usage and releases the rest. A request whose outcome is unknown (a timeout, a
dropped connection, a worker killed mid-flight) stays charged at its worst case: it may have been billed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from . import providers
from .budgets import BUDGETS
from .config import Job, Prices
from .errors import ConfigError, QuotaExceeded
from .results import BudgetRow, PricesRow, QuotaReport, QuotaTotals
from .store import Store, ledger
from .store.ledger import Budget, Overrun, Reservation, Settlement
from .units import count_text, usd_text

# The input bound of the shortest possible request (one empty message; harvester.crawler.input_token_bound):
# a budget below this plus max_tokens can never admit a request.
MIN_INPUT_BOUND = 16

def prices_for(job: Job) -> Prices | None:
    """The job file's `quota.prices`, else the built-in list price of its model (harvester.providers)."""
    if job.quota.prices is not None:
        return job.quota.prices
    found = providers.price_for(job.teacher.model)
    if found is None:
        return None
    _, (pin, pout) = found
    return Prices(input_per_mtok=pin, output_per_mtok=pout)


def parse_budgets(job: Job) -> list[Budget]:
    return [Budget(name, *BUDGETS[name], float(limit)) for name, limit in job.quota.budgets().items()]


def utc_now() -> datetime:
    return datetime.now(UTC)


def resets_at(window: str, now: datetime) -> str:
    if window == "day":
        return (now.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)).isoformat()
    if window == "month":
        first = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return (first + timedelta(days=32)).replace(day=1).isoformat()
    return "the next run" if window == "run" else "never (raise the budget)"


@dataclass
class BudgetState:
    name: str
    limit: float
    used: float
    reserved: float
    resets_at: str

    @property
    def left(self) -> float:
        return max(0.0, self.limit - self.used - self.reserved)


def check_quota_config(job: Job) -> tuple[list[Budget], Prices | None]:
    """The job's budgets and prices; raises the quota's config errors (before a run writes anything)."""
    budgets, prices = parse_budgets(job), prices_for(job)
    if budgets and job.teacher.max_tokens is None:
        raise ConfigError("teacher.params.max_tokens: a quota needs max_tokens to bound each request's "
                          "cost; set it rather than let harvester guess")
    if any(b.metric == "usd" for b in budgets) and prices is None:
        raise ConfigError(f"quota.prices: no built-in prices for model {job.teacher.model!r}; give "
                          "input_per_mtok and output_per_mtok")
    if budgets:  # before anything is written: a budget that not even the shortest request fits
        problem = never_fits(budgets, prices, MIN_INPUT_BOUND, job.teacher.max_tokens or 0, shortest=True)
        if problem:
            raise ConfigError(problem)
    return budgets, prices


def request_cost(prices: Prices | None, input_tokens: float, output_tokens: float) -> float:
    if prices is None:
        return 0.0
    return (input_tokens * prices.input_per_mtok + output_tokens * prices.output_per_mtok) / 1e6


def never_fits(budgets: list[Budget], prices: Prices | None, input_tokens: int, output_tokens: int, *,
               shortest: bool = False) -> str | None:
    """The message for the first budget smaller than one request's worst case (`input_tokens` bound +
    `output_tokens` = max_tokens), or None. Such a budget admits nothing, in any window: it is a
    configuration error (exit 2), not a quota reached ("rerun later" would never help)."""
    what = "the shortest request's" if shortest else "one request's"
    for b in budgets:
        cost = request_cost(prices, input_tokens, output_tokens)
        want = ledger.amounts(1, input_tokens, output_tokens, cost)[b.metric]
        if want <= b.limit + 1e-9:
            continue
        tokens = f"an input bound of {input_tokens:,} + max_tokens {output_tokens:,}"
        worst = {"requests": "1 request", "input_tokens": f"{input_tokens:,} input tokens",
                 "output_tokens": f"max_tokens {output_tokens:,}", "tokens": f"{want:,} tokens: {tokens}",
                 "usd": f"{usd_text(want)}: {tokens} tokens at quota.prices"}[b.metric]
        fix = {"input_tokens": "raise it or shorten the prompts",
               "output_tokens": "raise it or lower teacher.params.max_tokens"}.get(
            b.metric, "raise it or lower teacher.params.max_tokens")
        limit = usd_text(b.limit) if b.metric == "usd" else count_text(b.limit)
        return (f"quota.{b.name} is {limit}, smaller than {what} worst case ({worst}): no request can "
                f"ever fit in it; {fix}")
    return None


class QuotaGuard:
    """Reserve → send → settle, for one run. `clock` returns an aware UTC datetime (tests fake it)."""

    def __init__(self, job: Job, store: Store, run_id: int, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.job, self.store, self.run_id, self.clock = job, store, run_id, clock
        self.budgets, self.prices = check_quota_config(job)

    @property
    def active(self) -> bool:
        return bool(self.budgets)

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return request_cost(self.prices, input_tokens, output_tokens)

    def reserve(self, job_id: str, input_tokens: int, output_tokens: int) -> Reservation:
        problem = never_fits(self.budgets, self.prices, input_tokens, output_tokens)
        if problem:  # would wait for a reset that never makes room: stop as a config error
            raise ConfigError(problem)
        now = self.clock()
        got = ledger.reserve(self.store, run_id=self.run_id, job_id=job_id, day=now.strftime("%Y-%m-%d"),
                             month=now.strftime("%Y-%m"), input_tokens=input_tokens,
                             output_tokens=output_tokens, usd=self.cost(input_tokens, output_tokens),
                             budgets=self.budgets, now=time.time())
        if isinstance(got, Overrun):
            raise self._exceeded(got, now)
        return got

    def _exceeded(self, o: Overrun, now: datetime) -> QuotaExceeded:
        b = o.budget
        fmt = usd_text if b.metric == "usd" else count_text
        when = resets_at(b.window, now)
        return QuotaExceeded(
            f"quota {b.name} reached: {fmt(o.used)} used + {fmt(o.reserved)} in flight of {fmt(b.limit)}; "
            f"the next request could exceed it. Resets: {when}. Rerun then to resume (nothing is lost).",
            budget=b.name, used=o.used, limit=b.limit, resets_at=when)

    def settlement(self, r: Reservation, prompt_tokens: int | None, completion_tokens: int | None, *,
                   sent: bool = True, billed_unknown: bool = False) -> Settlement:
        """What to record once the request is over (the writer commits it with the answer)."""
        if not sent:
            return Settlement(r, False, 0, 0, 0.0)
        if billed_unknown:
            return Settlement(r, True, r.input_tokens, r.output_tokens, r.usd)
        pin, pout = prompt_tokens or 0, completion_tokens or 0
        return Settlement(r, True, pin, pout, self.cost(pin, pout))

    def states(self) -> list[BudgetState]:
        now = self.clock()
        keys = ledger.window_keys(self.run_id, now.strftime("%Y-%m-%d"), now.strftime("%Y-%m"))
        sums = ledger.totals(self.store, list(keys.values()))
        out = []
        for b in self.budgets:
            row = sums[keys[b.window]]
            out.append(BudgetState(b.name, b.limit, ledger.metric_of(row, b.metric, False),
                                   ledger.metric_of(row, b.metric, True), resets_at(b.window, now)))
        return out


def prices_row(prices: Prices | None) -> PricesRow | None:
    """The prices as a report shows them (`Prices.model_dump()`, typed)."""
    if prices is None:
        return None
    return {"input_per_mtok": prices.input_per_mtok, "output_per_mtok": prices.output_per_mtok}


def _clean(v: float) -> float:
    # float sums of reservations added and released can leave -1e-18: zero, not "-0.0000"
    return 0.0 if abs(v) < 1e-9 else v


def report(job: Job, store: Store | None, *, clock: Callable[[], datetime] = utc_now) -> QuotaReport:
    """Each budget's used / reserved / left / next reset (the `quota` command), plus totals. Without
    a store (a job never run) every budget is whole, and nothing is created."""
    if store is None:
        budgets, prices = check_quota_config(job)
        now = clock()
        states = [BudgetState(b.name, b.limit, 0.0, 0.0, resets_at(b.window, now)) for b in budgets]
        totals: dict[str, Any] = dict.fromkeys(QuotaTotals.__annotations__, 0)
    else:
        guard = QuotaGuard(job, store, run_id=-1, clock=clock)  # run -1: "the next run" starts at zero
        states, prices = guard.states(), guard.prices
        totals = ledger.totals(store, ["total"])["total"]
    rows: list[BudgetRow] = [{"name": s.name, "limit": s.limit, "used": _clean(s.used),
                              "reserved": _clean(s.reserved), "resets_at": s.resets_at, "left": s.left}
                             for s in states]
    total: QuotaTotals = {"requests": totals["requests"], "input_tokens": totals["input_tokens"],
                          "output_tokens": totals["output_tokens"], "usd": _clean(totals["usd"]),
                          "requests_reserved": totals["requests_reserved"]}
    return {"budgets": rows, "prices": prices_row(prices), "total": total}
