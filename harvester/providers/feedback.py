"""What a teacher's answer says, parsed once, into a `Feedback` the crawler and the limiter read.

A `Reader` holds every known provider's header names and wording (harvester.providers builds it) and
turns a status, headers and body into a Feedback: the outcome (one status → outcome table), the
verdict on a failure (retry, permanent, or stop the run), Retry-After, and each limit the headers
state, with its window. Pure: stdlib only, no I/O; the wall clock is an argument.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime
from typing import Any, Literal, get_args

from .base import Dimension, LimitHeaders, Provider
from .wording import body_text, error_detail, is_about_prompt

Outcome = Literal["ok", "rate_limited", "overloaded", "timeout", "error", "cancelled"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)
# retry: a transient fault; permanent: this request will never succeed as sent; fatal_auth and
# fatal_billing: no request will (a rejected key, an exhausted account), so the run stops.
Verdict = Literal["retry", "permanent", "fatal_auth", "fatal_billing"]

RETRYABLE_STATUS = frozenset({408, 409, 425, 429})
FATAL_STATUS = frozenset({401, 403})
_OUTCOME_OF_STATUS: dict[int, Outcome] = {429: "rate_limited", 503: "overloaded", 529: "overloaded"}


@dataclass(frozen=True, slots=True)
class LimitHint:
    """One limit as a response's headers state it, for the provider's whole key."""

    dimension: Dimension
    limit: float | None        # per minute when `per_minute`, else per a longer window
    remaining: float | None    # left in the current window as the server counted, at this response
    reset: float | None        # seconds from this response until that window resets
    per_minute: bool = True    # False: a limit per day or longer, not a rate to pace at


@dataclass(frozen=True, slots=True)
class Feedback:
    """What one request came to, as the limiter and the crawler need it; no raw headers."""

    outcome: Outcome
    status: int | None = None
    retry_after: float | None = None          # seconds the server asked us to wait
    limits: tuple[LimitHint, ...] = ()
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    latency: float | None = None
    verdict: Verdict | None = None            # on a failure: what it means for the request and the run
    about_prompt: bool = False                # a permanent error that names the prompt, not the job file
    detail: str = ""                          # the server's error message, short (unscrubbed)


CANCELLED = Feedback("cancelled")   # never sent: the limiter gives everything back
UNKNOWN_ERROR = Feedback("error")   # ended by something other than an answer or a teacher error


def outcome_of(status: int | None, *, timed_out: bool = False) -> Outcome:
    """The status → outcome table: 2xx ok, 429 rate limited, 503/529 overloaded, no status on a
    timeout timed out, anything else an error."""
    if status is None:
        return "timeout" if timed_out else "error"
    if status < 400:
        return "ok"
    return _OUTCOME_OF_STATUS.get(status, "error")


# --------------------------------------------------------------------------- times

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
    """Seconds to wait from `retry-after-ms` (OpenAI's, milliseconds), or the standard `retry-after`
    (seconds or an HTTP date); None if absent."""
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


def longer_than_a_minute(limit: float, remaining: float | None, reset: float | None) -> bool:
    """Whether a `limit` header counts over a window longer than a minute, from its numbers alone (a
    server that sends requests per day beside tokens per minute under the same names). Seen when the
    reset is over a minute away, or, early in the window, when the time to refill what was used implies
    a window of 10 minutes or more: 1 request of 14,400 used and a reset 6 s away is a day. The 2 s
    floor keeps reset times rounded to whole seconds (Anthropic's) from faking a long window."""
    if reset is None:
        return False
    if reset > 60.0:
        return True
    used = limit - remaining if remaining is not None else 0.0
    return reset >= 2.0 and used > 0 and reset * limit / used >= 600.0


def _num(v: str | None) -> float | None:
    try:
        return float(v) if v is not None else None
    except ValueError:
        return None


# --------------------------------------------------------------------------- the reader

class Reader:
    """Reads answers with the knowledge of `providers`; `prefer`'s header names win where they clash
    (Groq's x-ratelimit-limit-requests counts per day; OpenAI's, per minute)."""

    def __init__(self, providers: Iterable[Provider], prefer: Provider | None = None) -> None:
        providers = tuple(providers)
        by_name: dict[str, LimitHeaders] = {}
        for p in providers:          # the first to declare a name reads it (OpenAI's before Groq's)
            for spec in p.headers:
                by_name.setdefault(spec.limit, spec)
        for spec in prefer.headers if prefer else ():
            by_name[spec.limit] = spec
        self.headers: tuple[LimitHeaders, ...] = tuple(by_name.values())
        self.billing_words = tuple(w for p in providers for w in p.billing_words)
        self.rate_words = tuple(w for p in providers for w in p.rate_words)
        self.long_window_words = tuple(w for p in providers for w in p.long_window_words)
        self.delay_patterns = tuple(r for p in providers for r in p.delay_patterns)

    # ------------------------------------------------------------------ the three kinds of end
    def reply(self, status: int, headers: Mapping[str, str], *, prompt_tokens: int | None,
              completion_tokens: int | None, latency: float | None, now_wall: float) -> Feedback:
        """An answer."""
        return Feedback(outcome_of(status), status, limits=self.limits(headers, now_wall),
                        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, latency=latency)

    def failure(self, status: int, headers: Mapping[str, str], body: Any, *, now_wall: float) -> Feedback:
        """An HTTP error: its outcome, its verdict and what its headers and body say."""
        h = lower_headers(headers)
        outcome, verdict = outcome_of(status), self.verdict(status, body)
        retry_after = None
        if verdict == "retry" or outcome != "error":   # a wait asked for (429 and 503 alike, even if fatal)
            retry_after = parse_retry_after(h, now_wall)
            if retry_after is None and verdict == "retry":
                retry_after = self.retry_delay_in_body(body)
        return Feedback(outcome, status, retry_after, self.limits(h, now_wall), verdict=verdict,
                        about_prompt=verdict == "permanent" and is_about_prompt(status, body),
                        detail=error_detail(body))

    @staticmethod
    def transport(*, timed_out: bool) -> Feedback:
        """No answer at all (a timeout, a refused or dropped connection): transient."""
        return Feedback(outcome_of(None, timed_out=timed_out), verdict="retry")

    # ------------------------------------------------------------------ parts
    def verdict(self, status: int, body: Any) -> Verdict:
        if self.is_quota_exhausted(status, body):
            return "fatal_billing"
        if status in FATAL_STATUS:
            return "fatal_auth"
        if status in RETRYABLE_STATUS or status >= 500:
            return "retry"
        return "permanent"

    def limits(self, headers: Mapping[str, str], now_wall: float) -> tuple[LimitHint, ...]:
        """Every limit the headers state, with what remains and when it resets."""
        if not headers:
            return ()
        h = headers if isinstance(headers, dict) else lower_headers(headers)
        out = []
        for spec in self.headers:
            lim, rem = h.get(spec.limit), h.get(spec.remaining)
            if lim is None and rem is None:
                continue
            rst = h.get(spec.reset)
            reset = parse_reset(rst, now_wall) if rst else None
            limit, remaining = _num(lim), _num(rem)
            per_minute = limit is not None and not spec.per_day and not longer_than_a_minute(limit, remaining, reset)
            out.append(LimitHint(spec.dimension, limit, remaining, reset, per_minute))
        return tuple(out)

    def is_quota_exhausted(self, status: int, body: Any) -> bool:
        """True if a 429/403 (or 402, or a 400 about credits) means billing or quota is exhausted.
        Per-minute "quota" wording (Gemini's 429 for requests per minute) is a rate limit."""
        if status == 402:
            return True
        if status not in (400, 403, 429) or body is None:
            return False
        text = body_text(body)
        if status != 400 and ("quota" in text or "limit" in text) and any(w in text for w in self.long_window_words):
            return True
        if status == 429 and any(w in text for w in self.rate_words):
            return False
        return any(w in text for w in self.billing_words)

    def retry_delay_in_body(self, body: Any) -> float | None:
        """Seconds to wait when an error body says so and the headers do not: the first one stated."""
        if body is None:
            return None
        text = body_text(body)
        found = [m for m in (r.search(text) for r in self.delay_patterns) if m is not None]
        if not found:
            return None
        m = min(found, key=lambda m: m.start())
        return float(m.group(1)) / (1000.0 if m.group(2) == "ms" else 1.0)
