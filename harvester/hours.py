"""Spans of the UTC week: "16:30-00:30" on some weekdays. Stdlib only, pure: price windows
(harvester.providers, `quota.prices.windows`) and run schedules (`schedule:`) are both made of them.

A span that ends before it starts crosses midnight and belongs to the day it starts on
(`16:30-00:30` on Friday runs into Saturday's first half hour); `00:00-00:00` is the whole day.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_SPAN = re.compile(r"\s*(\d{1,2}):(\d{2})\s*-\s*(\d{1,2}):(\d{2})\s*")


@dataclass(frozen=True, slots=True)
class Span:
    start: int                                   # minute of the UTC day, 0..1439
    end: int                                     # may be <= start: crosses midnight
    weekdays: frozenset[int] | None = None       # 0 = Monday; None: every day

    def contains(self, when: datetime) -> bool:
        minute = when.hour * 60 + when.minute
        today, yesterday = when.weekday(), (when.weekday() - 1) % 7
        days = self.weekdays
        if self.start < self.end:
            return self.start <= minute < self.end and (days is None or today in days)
        return ((minute >= self.start and (days is None or today in days))
                or (minute < self.end and (days is None or yesterday in days)))

    def text(self) -> str:
        return f"{self.start // 60:02d}:{self.start % 60:02d}-{self.end // 60:02d}:{self.end % 60:02d}"


def parse_span(text: str, weekdays: frozenset[int] | None = None) -> Span:
    """`"16:30-00:30"` (UTC); raises ValueError with the form it wants."""
    m = _SPAN.fullmatch(text)
    if m is None:
        raise ValueError(f"not a span of hours: {text!r}; write it as HH:MM-HH:MM in UTC, e.g. '16:30-00:30'")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
        raise ValueError(f"not a time of day in {text!r}: hours go from 00 to 23, minutes from 00 to 59")
    return Span(h1 * 60 + m1, (h2 * 60 + m2) % 1440, weekdays)


def parse_weekdays(names: list[str] | None) -> frozenset[int] | None:
    """`["mon", "fri"]` (any case, three letters or whole names) as weekday numbers; None: every day."""
    if names is None:
        return None
    out = set()
    for name in names:
        key = str(name).strip().lower()[:3]
        if key not in DAY_NAMES:
            raise ValueError(f"not a weekday: {name!r}; write mon, tue, wed, thu, fri, sat or sun")
        out.add(DAY_NAMES.index(key))
    return frozenset(out)


def hours(*spans: str, weekdays: str | None = None) -> tuple[Span, ...]:
    """Spans as a provider module writes them: `hours("01:00-04:00", "06:00-10:00", weekdays="mon-fri")`."""
    days = None
    if weekdays is not None:
        first, _, last = weekdays.partition("-")
        a, b = DAY_NAMES.index(first), DAY_NAMES.index(last or first)
        days = frozenset(range(a, b + 1))
    return tuple(parse_span(s, days) for s in spans)


def next_change(inside: Callable[[datetime], bool], now: datetime, horizon_days: int = 8) -> datetime | None:
    """The first minute boundary after `now` at which `inside` changes its answer (None: never within
    the horizon). Every span starts and ends on a whole minute, so a walk over minutes is exact."""
    state = inside(now)
    t = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
    for _ in range(horizon_days * 1440):
        if inside(t) != state:
            return t
        t += timedelta(minutes=1)
    return None

