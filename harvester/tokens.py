"""Pure building blocks of the rate limiter (harvester.ratelimit holds the policy):

  * TokenEstimator: offline, conservative prompt-token estimates, calibrated by usage;
  * PacedWindow: one rate dimension (requests/min or tokens/min) as a paced token bucket plus a
    hard 1-second sliding window;
  * parsing of what a teacher API says about its limits: reset durations, Retry-After, and
    billing/quota errors.

No I/O and no tokenizer: everything here runs at ~1,000+ calls/s on the request path.
"""

from __future__ import annotations

import json
import math
import re
import time
from collections import deque
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Mapping

# --------------------------------------------------------------------------- token estimation


def _utf8_len(s: str) -> int:
    return len(s) if s.isascii() else len(s.encode("utf-8"))


class TokenEstimator:
    """Conservative input-token estimate, calibrated by the server's `usage.prompt_tokens`.

    raw = UTF-8 bytes / 3 + per-message overhead (chat templates add a few tokens per turn).
    bytes/3 over-counts for every mainstream tokenizer on English and code (~4 bytes/token), so
    we start safe, then scale by `factor`, learned from observed actual/raw ratios `q`:
        factor = max(decaying peak of q, EWMA(q) * (1 + margin))
    The peak term keeps us above every recently observed ratio; the EWMA term bounds how far the
    peak may decay. A bounded memo (keyed by raw size) keeps a text seen before from being
    estimated below the tokens it actually took (retries re-send the same text).
    """

    PER_MESSAGE = 4
    PER_REQUEST = 3
    _MEMO_MAX = 16384

    def __init__(self, *, margin: float = 0.05, alpha: float = 0.05, peak_decay: float = 0.995,
                 min_factor: float = 0.05, max_factor: float = 8.0) -> None:
        self.factor = 1.0                    # multiplier on raw; 1.0 = plain bytes/3
        self.observations = 0
        self._margin, self._alpha, self._decay = margin, alpha, peak_decay
        self._min, self._max = min_factor, max_factor
        self._ewma = 0.0
        self._peak = 0.0
        self._raw_of: dict[int, float] = {}  # estimate handed out -> its raw size (for observe)
        self._seen: dict[float, int] = {}    # raw size -> largest actual prompt_tokens observed

    def raw(self, messages: list[dict[str, Any]]) -> float:
        n = 0
        for m in messages:
            c = m.get("content") or ""
            n += _utf8_len(c if isinstance(c, str) else str(c)) + _utf8_len(m.get("role") or "")
        return n / 3.0 + self.PER_MESSAGE * len(messages) + self.PER_REQUEST

    def estimate(self, messages: list[dict[str, Any]]) -> int:
        raw = self.raw(messages)
        est = max(1, math.ceil(raw * self.factor), self._seen.get(raw, 0))
        if len(self._raw_of) >= self._MEMO_MAX:
            self._raw_of.clear()
        self._raw_of[est] = raw
        return est

    def observe(self, estimated: int, actual_prompt_tokens: int) -> None:
        if estimated <= 0 or actual_prompt_tokens <= 0:
            return
        raw = self._raw_of.get(estimated)
        if raw is None:                      # not ours (or memo rotated): invert current factor
            raw = estimated / self.factor
        else:
            if len(self._seen) >= self._MEMO_MAX:
                self._seen.clear()
            if actual_prompt_tokens > self._seen.get(raw, 0):
                self._seen[raw] = actual_prompt_tokens
        q = actual_prompt_tokens / raw
        self._ewma = q if self.observations == 0 else self._ewma + self._alpha * (q - self._ewma)
        self._peak = max(q, self._peak * self._decay)
        self.observations += 1
        f = max(self._peak, self._ewma * (1.0 + self._margin))
        self.factor = min(self._max, max(self._min, f))


# --------------------------------------------------------------------------- paced window

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
        self.log: deque[list] = deque()
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

    def take(self, now: float, cost: float) -> list:
        self.level -= cost
        self.wsum += cost
        self.sent += cost
        e = [now, cost, self.sent, True]
        self.log.append(e)
        return e

    def adjust(self, now: float, e: list, amount: float, refund_window: bool = True) -> None:
        """Reconcile an admission to its actual cost: the bucket is refunded or charged; the
        window is charged, but refunded only if `refund_window` (see RateLimiter)."""
        delta = amount - e[1]
        self.refill(now)
        self.level = min(self.cap, self.level - delta)
        if delta > 0 or refund_window:
            e[1] = amount
            if e[3]:
                self.wsum += delta


# --------------------------------------------------------------------------- header parsing

_DUR_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
_DUR_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ms|us|µs|ns|h|m|s)")
_DUR_FULL = re.compile(r"(?:(?:\d+(?:\.\d*)?|\.\d+)(?:ms|us|µs|ns|h|m|s))+")
_reset_cache: dict[str, float | None] = {}   # OpenAI resets repeat ("20ms", "1s"): parse once
_MISSING = object()


def parse_reset(value: str, now_wall: float | None = None) -> float | None:
    """Seconds until a rate-limit window resets, or None if unparseable.

    Accepts Go-style durations (OpenAI: "1s", "6m0s", "20ms", "1h2m3.5s"), bare seconds ("0.5"),
    epoch seconds (> 1e9) and RFC 3339 timestamps (Anthropic); the last two are relative to
    `now_wall` (default: time.time()). Negative results clamp to 0.
    """
    v = value.strip()
    hit = _reset_cache.get(v, _MISSING)
    if hit is not _MISSING:
        return hit  # type: ignore[return-value]
    secs: float | None = None
    absolute = False
    try:
        secs = float(v)
        if secs > 1e9:                      # an epoch timestamp, not a duration
            absolute = True
    except ValueError:
        if _DUR_FULL.fullmatch(v):
            secs = sum(float(n) * _DUR_UNITS[u] for n, u in _DUR_PART.findall(v))
        elif len(v) >= 19 and v[4] == "-" and ("T" in v or "t" in v or " " in v):
            try:
                secs = datetime.fromisoformat(v.replace("Z", "+00:00").replace("z", "+00:00")).timestamp()
                absolute = True
            except ValueError:
                secs = None
    if secs is None or math.isnan(secs) or math.isinf(secs):
        return None
    if absolute:
        return max(0.0, secs - (time.time() if now_wall is None else now_wall))
    if len(_reset_cache) > 1024:
        _reset_cache.clear()
    _reset_cache[v] = max(0.0, secs)
    return max(0.0, secs)


def lower_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """A plain dict with lower-case keys (httpx.Headers.items() already yields lower-case keys)."""
    return {k.lower(): v for k, v in headers.items()}


def parse_retry_after(headers: Mapping[str, str], now_wall: float | None = None) -> float | None:
    """Seconds to wait from `retry-after-ms`, or `retry-after` (seconds or HTTP-date); None if absent."""
    h = headers if isinstance(headers, dict) and all(k.islower() for k in headers) else lower_headers(headers)
    ms = h.get("retry-after-ms")
    if ms is not None:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    ra = h.get("retry-after")
    if ra is None:
        return None
    ra = ra.strip()
    try:
        return max(0.0, float(ra))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(ra).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now_wall is None else now_wall))


# Billing / quota exhaustion: retrying cannot help, the run must stop. Per-minute "quota" wording
# (e.g. Google's RESOURCE_EXHAUSTED for requests per minute) is deliberately NOT matched.
_QUOTA_MARKERS = (
    "insufficient_quota", "exceeded your current quota", "check your plan and billing",
    "billing_hard_limit", "billing_not_active", "billing hard limit", "spend limit", "spending limit",
    "api usage limit", "credit balance is too low", "insufficient balance", "insufficient_balance",
    "insufficient credits", "insufficient_credits", "out of credits", "payment required",
)
_LONG_WINDOW = ("per day", "per-day", "perday", "daily", "(rpd)", "(tpd)", "_per_day",
                "per month", "monthly")
# A 429 that names a short window or says when to retry is a rate limit, even in quota words:
# Gemini's OpenAI-compatible endpoint answers a per-minute limit with OpenAI's own "You exceeded your
# current quota, please check your plan and billing details", a PerMinute quota id and a retry delay.
_SHORT_WINDOW = ("per minute", "perminute", "per_minute", "per min ", "per second", "persecond",
                 "retry in", "retrydelay", "try again in")


def _body_text(body: str | dict | list) -> str:
    """An error body as lower-case text, to look for words in."""
    return (body if isinstance(body, str) else json.dumps(body, default=str)).lower()


def is_quota_exhausted(status: int, body: str | dict | list | None) -> bool:
    """True if a 429/403 (or 402, or a 400 about credits) means billing or quota is exhausted."""
    if status == 402:
        return True
    if status not in (400, 403, 429) or body is None:
        return False
    text = _body_text(body)
    if status != 400 and ("quota" in text or "limit" in text) and any(m in text for m in _LONG_WINDOW):
        return True
    if status == 429 and any(m in text for m in _SHORT_WINDOW):
        return False
    return any(m in text for m in _QUOTA_MARKERS)


_BODY_DELAY = re.compile(r'"retrydelay":\s*"(\d+(?:\.\d+)?)s"|(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s)\b')


def retry_delay_in_body(body: str | dict | list | None) -> float | None:
    """Seconds to wait when an error body says so and the headers do not, the first one stated:
    "Please retry in 36.2s" / "try again in 20ms" in a message, or Google's RetryInfo `"retryDelay": "36s"`."""
    if body is None:
        return None
    m = _BODY_DELAY.search(_body_text(body))
    if m is None:
        return None
    if m.group(1) is not None:
        return float(m.group(1))
    return float(m.group(2)) / (1000.0 if m.group(3) == "ms" else 1.0)
