"""The dry run: what `run` would send, cost and take, and whether it would refuse, writing nothing.

It reads the job file's specs (not the store's plan: the job file may have been edited since) and
looks their ids up in the store, if there is one: a dry run never plans, never creates a SQLite
file, and never moves the store's current plan, so `status` and `export` of other job files sharing
the store see what they saw before.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any

from . import pricing
from .batches import batch_factor
from .config import Job
from .crawler import input_token_bound
from .plans import META_PREFIX, PlanReader, decode, earlier_plans
from .providers import ModelPrice
from .quota import check_quota_config, never_fits, prices_row, report, request_cost
from .results import BudgetFit, Duration, EarlierPlans, Estimate, Expected, WorstCase
from .schedule import run_schedule
from .store import Store, ledger
from .terms import check_terms
from .tokens import TokenEstimator
from .units import count_text, duration_text, usd_text

BATCH = 2000


def dry_run(job: Job, store: Store | None, *, clock: Callable[[], datetime]) -> Estimate:
    """The estimate, with `exit_code` the code `run` would end with (0, 2 or 3) and `problems` saying why."""
    terms = check_terms(job.teacher)           # raises as `run` does (exit 2)
    budgets, prices = check_quota_config(job)  # idem
    max_out = job.teacher.max_tokens
    reader = PlanReader(job, distinct=True)
    estimator = TokenEstimator()
    pending = answered_here = 0
    worst_in = raw_in = 0.0
    biggest_in = 0                              # the largest single request's input bound
    reused: Counter[str] = Counter()            # answered jobs of this plan, by the plan that holds them
    batch: list[Any] = []

    def flush() -> None:
        nonlocal pending, answered_here, worst_in, raw_in, biggest_in
        states = store.job_states([s.id for s in batch]) if store is not None else {}
        for spec in batch:
            st = states.get(spec.id)
            if st is not None and (st[0] == "done" or (st[0] == "failed" and st[1])):
                if st[0] == "done":
                    answered_here += 1
                    reused[st[2]] += 1
                continue                         # answered, or failed for good: run sends neither
            messages = spec.request["messages"]
            bound = input_token_bound(messages)
            pending += 1
            worst_in += bound
            biggest_in = max(biggest_in, bound)
            raw_in += estimator.raw(messages)
        batch.clear()

    for spec in reader:
        batch.append(spec)
        if len(batch) >= BATCH:
            flush()
    flush()
    plan_key = reader.key
    description = reader.description(reader.jobs)

    # Expected figures from answers so far: this plan's, else the most recent earlier plan's.
    earlier: EarlierPlans | None = None
    stats = None
    last_limiter = None
    if store is not None:
        others = store.plans_with_answers(exclude=plan_key)
        descriptions = {p["plan_key"]: decode(store.get_meta(META_PREFIX + p["plan_key"])) for p in others[:1]}
        shared = sum(n for k, n in reused.items() if k != plan_key)
        earlier = earlier_plans(others, description, descriptions, reused=shared)
        stats = _answer_stats(store, plan_key, estimator) or (
            _answer_stats(store, others[0]["plan_key"], estimator) if others else None)
        last_limiter = store.last_limiter()
    expected: Expected | None = None
    if stats is not None:
        ratio, mean_out, n = stats
        exp_in, exp_out = raw_in * ratio, pending * mean_out
        share = _cached_share(store, plan_key, others[0]["plan_key"] if others else None) if store else 0.0
        expected = {"input_tokens": round(exp_in), "output_tokens": round(exp_out),
                    "usd": _expected_usd(job, prices, exp_in, exp_out, share, clock()),
                    "usd_list": request_cost(prices, exp_in, exp_out) if prices else None,
                    "cached_share": share, "from_answers": n}
    worst_out = pending * max_out if max_out is not None else None
    worst: WorstCase = {"input_tokens": int(worst_in), "output_tokens": worst_out,
                        "usd": request_cost(prices, worst_in, worst_out) if prices and worst_out is not None else None}

    problems: list[str] = []
    exit_code = 0
    # A budget no pending request fits in: `run` stops there as a config error (exit 2).
    if budgets and pending:
        problem = never_fits(budgets, prices, biggest_in, max_out or 0)
        if problem:
            problems.append(problem)
            exit_code = 2
    budget_rows: list[BudgetFit] = []
    factor = batch_factor(job)
    if budgets:
        rooms = report(job, store, clock=clock)["budgets"]
        # a batch reserves its lines at the batch price (harvester.store.batches)
        price_share = factor if job.teacher.mode == "batch" else 1.0
        need = ledger.amounts(pending, worst["input_tokens"], worst_out or 0, (worst["usd"] or 0.0) * price_share)
        for b, room in zip(budgets, rooms):
            want, left = need[b.metric], room["left"]
            fmt = usd_text if b.metric == "usd" else count_text
            row: BudgetFit = {"budget": b.name, "worst_case": want, "left": left, "fits": want <= left + 1e-9}
            budget_rows.append(row)
            if not row["fits"]:
                per = want / pending if pending else 0
                upto = int(left // per) if per else 0
                problems.append(f"the worst case of the {pending:,} pending requests ({fmt(want)}) exceeds "
                                f"quota.{b.name} by {fmt(want - left)} ({fmt(left)} left, resets "
                                f"{room['resets_at']}): a run would stop there, after about {upto:,} "
                                f"request{'s' if upto != 1 else ''} (exit 3)")
                exit_code = exit_code or 3
    duration = _duration(job, pending, expected, worst, last_limiter)
    return {"jobs": reader.jobs, "rows": reader.rows, "merged": max(0, reader.rows - reader.jobs),
            "plan_key": plan_key, "pending_requests": pending, "answered": answered_here,
            "worst": worst, "expected": expected, "prices": prices_row(prices),
            "budgets": budget_rows, "duration": duration, "earlier": earlier,
            "terms": terms.model_dump(mode="json"), "problems": problems, "exit_code": exit_code,
            "note": "worst case counts one attempt per pending job; retries of billed failures add to it",
            "mode": job.teacher.mode, "batch_factor": factor}


def _cached_share(store: Store, plan_key: str, earlier: str | None) -> float:
    """The share of input tokens the provider's cache served so far: this plan's answers, else the last plan's."""
    for key in (plan_key, earlier):
        if key is None:
            continue
        channels = store.provenance(key)["channels"].values()
        prompt = sum(c["prompt_tokens"] for c in channels)
        if prompt:
            return sum(c["cached_tokens"] for c in channels) / prompt
    return 0.0


def _expected_usd(job: Job, prices: ModelPrice | None, input_tokens: float, output_tokens: float, share: float,
                  now: datetime) -> float | None:
    """What the expected tokens cost synchronously: cached as often as so far, at the rates in force
    when the run would send (now, or when its schedule opens)."""
    if prices is None:
        return None
    schedule = run_schedule(job.schedule, prices, job.teacher.model)
    when = (schedule.next_open(now) if schedule is not None else now) or now
    cached = round(input_tokens * share)
    return pricing.cost(prices, pricing.TokenUsage(round(input_tokens), round(output_tokens), cached), when).paid


def _answer_stats(store: Store, plan_key: str, estimator: TokenEstimator) -> tuple[float, float, int] | None:
    """(real input tokens per estimated one, mean completion tokens, answers) of a plan, if it has answers."""
    done_in = done_out = answered = 0
    done_est = 0.0                                    # estimates are fractional
    for r in store.iter_records(plan_key):
        if r.prompt_tokens is not None:
            done_in += r.prompt_tokens
            done_est += estimator.raw(r.messages)
            done_out += r.completion_tokens or 0
            answered += 1
    if not answered or not done_est:
        return None
    return done_in / done_est, done_out / answered, answered


def _duration(job: Job, pending: int, expected: Expected | None, worst: WorstCase,
              last_limiter: dict[str, Any] | None) -> Duration:
    """How long the pending requests take at the limits (configured, else the last run's): the
    slowest limit decides. Unknown without limits (latency alone says little: it depends on load)."""
    configured = job.teacher.limits
    limits: dict[str, tuple[float, str]] = {}
    for name in ("rpm", "tpm", "input_tpm", "output_tpm"):
        value = getattr(configured, name)
        if value is not None:
            limits[name] = (float(value), "configured")
        else:
            info = ((last_limiter or {}).get("limits") or {}).get(name)
            if isinstance(info, dict) and info.get("value"):
                limits[name] = (float(info["value"]), f"last run ({info.get('source', '?')})")
    if not limits or not pending:
        return {"seconds": 0.0 if not pending else None, "text": duration_text(0.0 if not pending else None),
                "bound_by": None}
    basis = expected or worst
    tin, tout = basis["input_tokens"], basis["output_tokens"] or 0
    need = {"rpm": pending, "tpm": tin + tout, "input_tpm": tin, "output_tpm": tout}
    name, minutes = max(((n, need[n] / v) for n, (v, _) in limits.items()), key=lambda t: t[1])
    value, source = limits[name]
    return {"seconds": minutes * 60.0, "text": f"at least {duration_text(minutes * 60.0)}",
            "bound_by": f"{name} {count_text(value)}, {source}"}
