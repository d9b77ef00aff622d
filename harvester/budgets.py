"""The quota's vocabulary: what a budget counts (its metric) and over which span (its window).

Every budget is a metric × a window, named `<metric>_per_<window>` (`<metric>_total` for the job's
whole life): the job file's `quota.*` fields, the quota guard's budgets and the ledger's sums all
follow from the two lists below. Stdlib only: `config` builds its fields from it.
"""

from __future__ import annotations

# Each metric with the type of its limits (whole counts; dollars as decimals), in the order the job
# file's fields, `harvester quota` and its errors list them.
METRICS: dict[str, type] = {"requests": int, "input_tokens": int, "output_tokens": int, "tokens": int,
                            "usd": float}

# run: this run; day and month: UTC calendar spans; total: the job's whole life.
WINDOWS: tuple[str, ...] = ("run", "day", "month", "total")


def budget_name(metric: str, window: str) -> str:
    return f"{metric}_total" if window == "total" else f"{metric}_per_{window}"


# Every budget name → (metric, window), metric by metric.
BUDGETS: dict[str, tuple[str, str]] = {budget_name(m, w): (m, w) for m in METRICS for w in WINDOWS}

__all__ = ["METRICS", "WINDOWS", "BUDGETS", "budget_name"]
