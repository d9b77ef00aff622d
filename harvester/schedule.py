"""When a run may send (`schedule:` in the job file): is a time inside, and when does that change.

Pure: a schedule and a time in, answers out; the crawler and the API ask it with their clock.
`off_peak` is the hours at the lowest rates of the model's price (harvester.pricing), so a table's
peak hours need stating once, in its provider's module.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .config import Schedule
from .errors import ConfigError
from .hours import Span, next_change
from .pricing import rates_at
from .providers.base import ModelPrice


@dataclass(frozen=True, slots=True)
class RunSchedule:
    spans: tuple[Span, ...]            # open inside any of them; () with `cheapest`
    cheapest: ModelPrice | None = None  # off_peak: open while this price is at its lowest input rate
    label: str = "schedule"

    def open(self, when: datetime) -> bool:
        if self.cheapest is not None:
            floor = min(r.input for r in (self.cheapest.rates, *(w.rates for w in self.cheapest.windows)))
            return rates_at(self.cheapest, when)[0].input <= floor
        return any(s.contains(when) for s in self.spans)

    def next_open(self, when: datetime) -> datetime | None:
        """When it opens next (`when` itself if open now; None: never within a week)."""
        return when if self.open(when) else next_change(self.open, when)

    def closes(self, when: datetime) -> datetime | None:
        """When the window open at `when` closes (None: never within a week)."""
        return next_change(self.open, when) if self.open(when) else when

    def describe(self, at: datetime, now: datetime) -> str:
        """`16:30 UTC (off-peak)`; another day's weekday and date first."""
        day = "" if at.date() == now.date() else at.strftime("%a %Y-%m-%d ")
        return f"{day}{at:%H:%M} UTC ({self.label})"


def run_schedule(cfg: Schedule | None, price: ModelPrice | None, model: str) -> RunSchedule | None:
    """The job file's schedule, checked: off_peak needs a price with cheaper hours."""
    if cfg is None:
        return None
    if not cfg.off_peak:
        return RunSchedule(cfg.spans(), label="schedule.hours_utc" if cfg.hours_utc else "schedule.weekdays")
    if price is None or len({r.input for r in (price.rates, *(w.rates for w in price.windows))}) < 2:
        raise ConfigError(f"schedule.off_peak: the price of model {model!r} has no cheaper hours (its provider's "
                          "table states none, nor does quota.prices.windows); give schedule.hours_utc instead")
    return RunSchedule((), cheapest=price, label="off-peak")


__all__ = ["RunSchedule", "run_schedule"]
