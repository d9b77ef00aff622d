"""One rate dimension of the limiter: requests or tokens per minute, paced and capped per second.

Pure: no I/O; `now` is always an argument.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

# A log entry: [time, amount, units sent up to and including it, still in the window]. A plain list,
# mutated in place: this runs twice per request per dimension.
Entry = list[Any]

BURST_S = 0.1   # bucket depth, in seconds of rate


class PacedWindow:
    """One rate dimension, in units (requests or tokens) per minute.

    * A token bucket refilled continuously at pace x limit/60 per second and holding at most
      BURST_S seconds' worth: admission is smooth, yet a caller that wakes late can catch up.
    * A hard sliding-window log: no window of 1 s ever holds more than floor(limit/60) units.
      Providers enforce per-minute limits per second; this is the guarantee that matters, the
      bucket keeps the stream smooth and a hair under the limit (room for network jitter).
    Log entries are [t, amount, units sent up to and including it, still in the window].
    """

    __slots__ = ("config", "header", "learned", "limit", "source", "rate", "cap", "level", "last",
                 "blocked_until", "log", "wsum", "wmax", "wlen", "sent")

    def __init__(self, config: float | None, now: float, start: float = math.inf) -> None:
        self.config = config if config else None
        self.header: float | None = None
        self.learned: float | None = None
        self.limit: float | None = None
        self.source: str | None = None
        self.rate, self.cap, self.level, self.last = 0.0, 1.0, start, now   # start: clamped to cap
        self.blocked_until = -math.inf   # set by headers saying "nothing remains until reset"
        self.log: deque[Entry] = deque()
        self.wsum, self.wmax, self.wlen, self.sent = 0.0, 1.0, 1.0, 0.0

    def resolve(self) -> bool:
        """The limit in force: the lower of config and headers (the server wins when lower), else learned."""
        c, h = self.config, self.header
        if h is not None and (c is None or h < c):
            self.limit, self.source = h, "headers"
        elif c is not None:
            self.limit, self.source = c, "config"
        else:
            self.limit, self.source = self.learned, ("learned" if self.learned is not None else None)
        return self.limit is not None

    def set_rate(self, factor: float, pace: float, now: float) -> None:
        self.refill(now)
        assert self.limit is not None, "set_rate() on a dimension with no limit in force"
        per_s = self.limit * factor / 60.0
        self.rate = per_s * pace
        self.cap = max(1.0, self.rate * BURST_S)
        self.level = min(self.level, self.cap)
        if per_s >= 1.0:
            self.wlen, self.wmax = 1.0, float(math.floor(per_s + 1e-9))
        else:  # slower than 1/s: one unit per 1/per_s seconds
            self.wlen, self.wmax = 1.0 / per_s, 1.0

    def refill(self, now: float) -> None:
        if now > self.last:
            self.level = min(self.cap, self.level + (now - self.last) * self.rate)
            self.last = now

    def wait(self, now: float, cost: float) -> float:
        """0 if `cost` may go now, else seconds to wait."""
        self.refill(now)
        w = self.blocked_until - now
        need = cost if cost < self.cap else self.cap   # oversized requests go when full, into debt
        if self.level < need - 1e-9:
            w = max(w, (need - self.level) / self.rate)
        log, cutoff = self.log, now - self.wlen
        while log and log[0][0] <= cutoff:
            e = log.popleft()
            e[3] = False
            self.wsum -= e[1]
        if self.wsum > 0 and self.wsum + cost > self.wmax:
            excess = min(self.wsum, self.wsum + cost - self.wmax)  # oversized: the window must empty
            freed = 0.0
            for e in log:
                freed += e[1]
                if freed >= excess:
                    w = max(w, e[0] + self.wlen - now, 1e-6)
                    break
        return w if w > 0 else 0.0

    def take(self, now: float, cost: float) -> Entry:
        self.level -= cost
        self.wsum += cost
        self.sent += cost
        e = [now, cost, self.sent, True]
        self.log.append(e)
        return e

    def adjust(self, now: float, e: Entry, amount: float, refund_window: bool = True) -> None:
        """Reconcile an admission to its actual cost: the bucket is refunded or charged; the
        window is charged, but refunded only if `refund_window` (see RateLimiter)."""
        delta = amount - e[1]
        self.refill(now)
        self.level = min(self.cap, self.level - delta)
        if delta > 0 or refund_window:
            e[1] = amount
            if e[3]:
                self.wsum += delta
