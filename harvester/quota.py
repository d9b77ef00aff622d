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
from datetime import datetime, timedelta
from typing import Any

from . import pricing, providers
from .budgets import BUDGETS
from .clock import utc_now
from .config import Job
from .errors import ConfigError, QuotaExceeded
from .providers import ModelPrice, Rates, RateWindow
from .results import BudgetRow, PricesRow, QuotaReport, QuotaTotals
from .store import Store, ledger
from .store.ledger import Budget, Overrun, Reservation, Settlement
from .units import count_text, usd_text

# The input bound of the shortest possible request (one empty message; harvester.crawler.input_token_bound):
# a budget below this plus max_tokens can never admit a request.
MIN_INPUT_BOUND = 16

def prices_for(job: Job) -> ModelPrice | None:
    """The model's built-in price (harvester.providers), each rate the job file's `quota.prices` gives
    replacing the built-in one. None: no price known."""
    found = providers.price_for(job.teacher.model)
    base = found[1] if found is not None else None
    o = job.quota.prices
    if o is None:
        return base
    if base is None and (o.input_per_mtok is None or o.output_per_mtok is None):
        raise ConfigError(f"quota.prices: no built-in prices for model {job.teacher.model!r}; give "
                          "input_per_mtok and output_per_mtok")
    rates = _rates(o, base.rates if base is not None else None)
    windows = base.windows if base is not None and o.windows is None else tuple(
        RateWindow(w.spans(), _rates(w, rates), w.label) for w in o.windows or [])
    factor = o.batch_factor if o.batch_factor is not None else (base.batch_factor if base is not None else None)
    return ModelPrice(rates, windows, factor)


def _rates(o: Any, base: Rates | None) -> Rates:
    """`o`'s rates (a `quota.prices` or one of its windows), each one it leaves out taken from `base`."""
    def pick(mine: float | None, theirs: float | None) -> float | None:
        return mine if mine is not None else theirs
    fresh = pick(o.input_per_mtok, base.input if base else None)
    output = pick(o.output_per_mtok, base.output if base else None)
    assert fresh is not None and output is not None   # prices_for checks them
    return Rates(fresh, output, pick(o.cached_input_per_mtok, base.cached_input if base else None),
                 pick(o.cache_write_per_mtok, base.cache_write if base else None))


def parse_budgets(job: Job) -> list[Budget]:
    return [Budget(name, *BUDGETS[name], float(limit)) for name, limit in job.quota.budgets().items()]


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


def check_quota_config(job: Job) -> tuple[list[Budget], ModelPrice | None]:
    """The job's budgets and prices; raises the quota's config errors (before a run writes anything)."""
    budgets, prices = parse_budgets(job), prices_for(job)
    if budgets and job.teacher.max_tokens is None:
        raise ConfigError("teacher.params.max_tokens: a quota needs max_tokens to bound each request's "
                          "cost; set it rather than let harvester guess")
    if any(b.metric == "usd" for b in budgets) and prices is None:  # (prices_for raised if quota.prices is short)
        raise ConfigError(f"quota.prices: no built-in prices for model {job.teacher.model!r}; give "
                          "input_per_mtok and output_per_mtok")
    if budgets:  # before anything is written: a budget that not even the shortest request fits
        problem = never_fits(budgets, prices, MIN_INPUT_BOUND, job.teacher.max_tokens or 0, shortest=True)
        if problem:
            raise ConfigError(problem)
    return budgets, prices


def request_cost(prices: ModelPrice | None, input_tokens: float, output_tokens: float) -> float:
    """Tokens at list price: every input token fresh, at the day's highest rates (harvester.pricing)."""
    return 0.0 if prices is None else pricing.worst_usd(prices, input_tokens, output_tokens)


def never_fits(budgets: list[Budget], prices: ModelPrice | None, input_tokens: int, output_tokens: int, *,
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
        got.at = now   # reserved right before the send: the time that prices it
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
                   cached_tokens: int = 0, cache_write_tokens: int = 0, sent: bool = True,
                   billed_unknown: bool = False, batch_factor: float = 1.0) -> Settlement:
        """What to record once the request is over (the writer commits it with the answer): the usage
        the provider reported, priced as in force when the request was reserved (right before its send)."""
        if not sent:
            return Settlement(r, False, 0, 0, 0.0)
        if billed_unknown:
            return Settlement(r, True, r.input_tokens, r.output_tokens, r.usd)
        usage = pricing.TokenUsage(prompt_tokens or 0, completion_tokens or 0, cached_tokens, cache_write_tokens)
        priced = self.priced(usage, r.at or self.clock(), batch_factor)
        return Settlement(r, True, usage.input, usage.output, priced.paid, cached_tokens=usage.cached,
                          cost=priced)

    def priced(self, usage: pricing.TokenUsage, when: datetime, batch_factor: float = 1.0) -> pricing.Cost:
        if self.prices is None:
            return pricing.Cost(0.0, 0.0)
        return pricing.cost(self.prices, usage, when, batch_factor=batch_factor)

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


def prices_row(prices: ModelPrice | None) -> PricesRow | None:
    """The prices as a report shows them: the standard rates, and the hours that have others."""
    if prices is None:
        return None
    r = prices.rates
    return {"input_per_mtok": r.input, "output_per_mtok": r.output, "cached_input_per_mtok": r.cached_input,
            "cache_write_per_mtok": r.cache_write, "batch_factor": prices.batch_factor,
            "windows": [{"label": w.label, "hours_utc": [s.text() for s in w.spans],
                         "weekdays": sorted(w.spans[0].weekdays) if w.spans and w.spans[0].weekdays else None,
                         "input_per_mtok": w.rates.input, "output_per_mtok": w.rates.output,
                         "cached_input_per_mtok": w.rates.cached_input} for w in prices.windows]}


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
                          "requests_reserved": totals["requests_reserved"],
                          "cached_tokens": totals["cached_tokens"], "usd_list": _clean(totals["usd_list"]),
                          "saved_cache": _clean(totals["saved_cache"]), "saved_hour": _clean(totals["saved_hour"]),
                          "saved_batch": _clean(totals["saved_batch"])}
    return {"budgets": rows, "prices": prices_row(prices), "total": total}
