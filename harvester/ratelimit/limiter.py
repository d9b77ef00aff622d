"""Client-side rate limiter for teacher APIs. Pure: no I/O, no asyncio, no sleeping; the clock is
injected so the crawler, the simulator and the tests all drive the same code.

Dimensions: requests/min, tokens/min, input and output tokens/min, and requests in flight.
A request is admitted only when every dimension allows it. Each rate dimension is a
`PacedWindow` (harvester.ratelimit.window): a bucket paced at 99.5 % of the limit with 0.1 s of burst,
plus a hard guarantee that no 1 s window holds more than limit/60.
Reserve, then reconcile: a permit reserves estimated tokens; `complete` refunds or charges
the difference. What a response said arrives parsed, as a `Feedback` (harvester.providers.feedback):
the limiter knows no header names. Limit sync, the 429 pause and the adaptive controller (for servers
that publish no limits) are described where implemented.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..providers.feedback import OUTCOMES, Feedback, LimitHint
from .window import Entry, PacedWindow

PROBE = 8                 # in-flight cap until the first response (its headers may cut the limits)
CONCURRENCY_HINT = 0.05   # wait hint when only the concurrency cap blocks (callers also wake on release)
DEFAULT_PAUSE = 0.1       # 429 without retry-after or reset: pause 0.1 s, doubling per episode in a row,
MAX_DEFAULT_PAUSE = 5.0   # up to this
# Known limits (config/headers): a 429 / 503 / timeout multiplies a throttle by BETA_HARD, which
# then regrows by RECOVER_PER_S per second (0.7 -> 1 in ~12 s). BETA_SOFT: rising latency.
BETA_HARD, BETA_SOFT, RECOVER_PER_S = 0.7, 0.9, 0.03
# Unknown limits (learned): AIMD on the request rate. Each success adds GAIN req/s, i.e. the rate
# grows by GAIN x 100 % per second: slow start until the first loss, then quick back to near the
# last loss point, careful around it, brisker once clearly past it (the limit moved).
LEARN_START_RPS, LEARN_MIN_RPS, LEARN_BETA = 4.0, 0.05, 0.8
SS_GAIN, NEAR_GAIN, FAR_GAIN, PAST_GAIN = 1.0, 0.2, 0.01, 0.05
# Learned limits: 503s and timeouts mean congestion when they come in bursts (FAULT_BURST of the last
# FAULT_WINDOW outcomes); a server's steady background of faults (say 1 in 100) is not a rate signal.
FAULT_WINDOW, FAULT_BURST = 50, 3
LATENCY_SLACK = 0.05      # seconds of average latency above the unloaded baseline that are noise
# Workers sharing a limit (set_share < 1) each stretch their hard window by this: their requests reach
# the provider with independent delays, so together they need headroom one process's stream does not.
SHARED_JITTER = 0.025
# Known limits, no concurrency set: in flight = rate x average latency (Little's law) x LITTLE_HEADROOM
# (latency varies, and the rate must not starve while it climbs) + LITTLE_SLACK, at most `ceiling`.
LITTLE_HEADROOM, LITTLE_SLACK = 1.5, 8
_NAMES = ("rpm", "tpm", "input_tpm", "output_tpm")
_NO_ENTRIES = (None, None, None, None)
_INDEX = {"requests": 0, "tokens": 1, "input_tokens": 2, "output_tokens": 3}   # LimitHint.dimension → _dims


@dataclass(slots=True, eq=False)
class Permit:
    """What was reserved for one request. Hand it back to `RateLimiter.complete` exactly once."""

    tokens: int                 # input estimate + n * max_tokens
    input_tokens: int
    output_tokens: int
    issued_at: float
    seq: int = 0                # admission number (1-based)
    entries: tuple[Entry | None, ...] = field(default=(), repr=False)  # per dimension (None: not limited)
    done: bool = field(default=False, repr=False)


class RateLimiter:
    """Admission control over every limit at once; see the module docstring.

    `pace` is the fraction of each limit the buckets pace at (0.995 leaves ~5 ms of jitter room
    per second at 50 req/s). `probe` caps requests in flight until the first response arrives
    (its headers may say the configured limits are too high). Refunds of unused tokens go back
    to the buckets, i.e. the long-run pace; the 1 s windows keep counting what was reserved,
    because OpenAI (and the simulator) charge prompt + max_tokens on arrival within the second.
    `refund_window=True` refunds those too, for servers that count only actual usage.
    """

    def __init__(self, *, rpm: float | None = None, tpm: float | None = None,
                 input_tpm: float | None = None, output_tpm: float | None = None,
                 max_concurrency: int | None = None, clock: Callable[[], float] = time.monotonic,
                 pace: float = 0.995, probe: int = PROBE, refund_window: bool = False,
                 ceiling: int | None = None) -> None:
        now = clock()
        self._clock, self._pace, self._refund_window = clock, pace, refund_window
        # Requests start with one in the bucket (no burst at t=0); token buckets start full.
        self._dims = tuple(PacedWindow(v, now, s) for v, s in
                           ((rpm, 1.0), (tpm, math.inf), (input_tpm, math.inf), (output_tpm, math.inf)))
        self._req = self._dims[0]
        self._max_conc = max_concurrency
        self._ceiling = ceiling             # in flight at most when max_concurrency is unset
        self._inflight = self._admitted = self._n429 = 0
        self._counts = dict.fromkeys(OUTCOMES, 0)
        self._paused_until = -math.inf
        self._f = self._f0 = 1.0            # throttle on config/header limits after a 429
        self._f_t0, self._recovering = now, False
        self._epoch = 0                     # seq at the last decrease: older permits are the same episode
        self._strikes = 0                   # decrease episodes since the last success
        self._faults: deque[bool] = deque(maxlen=FAULT_WINDOW)  # recent outcomes: True = 503/timeout
        self._rps, self._loss_rps, self._slow_start = LEARN_START_RPS, 0.0, True   # learned mode (AIMD)
        self._lat: float | None = None      # EWMA of latency (~ the last 20 requests)
        self._lat_base = math.inf           # lowest _lat seen, drifting up slowly: "unloaded" latency
        self._n_lat = 0
        self._x = 0.0                       # completion throughput (req/s), smoothed per second
        self._x_n, self._x_t0 = 0, now
        self._last_busy = -math.inf         # last time the rate (not the cap) held a request back
        self._probing, self._probe = probe > 0, probe
        self._share = 1.0                   # this worker's share of every limit (see set_share)
        self._seeded: float | None = None   # the request rate a previous run learned, started from
        self._apply(now)

    def start_from(self, rpm: float, loss_rpm: float | None = None) -> bool:
        """Start learning from a rate a previous run against the same teacher learned (`rpm`, and the
        rate at its last loss, if it had one) instead of from the slow start. Only where the request
        rate is being learned (no limit configured or sent in headers yet); returns whether it applied."""
        if self._req.source != "learned" or not rpm > 0:
            return False
        now = self._clock()
        self._rps = max(LEARN_MIN_RPS, rpm / 60.0)
        if loss_rpm:   # it had found the limit: probe near it, as after a loss
            self._loss_rps, self._slow_start = loss_rpm / 60.0, False
        self._seeded = self._rps * 60.0
        self._set_learned(now)
        return True

    # ------------------------------------------------------------------ admission
    def try_acquire(self, input_tokens: int, output_tokens: int) -> Permit | float:
        """A Permit (now counted in flight) if every dimension allows the request now; else the
        seconds (> 0) to wait before asking again (CONCURRENCY_HINT if only the cap blocks)."""
        now = self._clock()
        if now < self._paused_until:
            return self._paused_until - now
        if self._recovering:
            self._recover(now)
        if self._cap is not None and self._inflight >= self._cap:
            return CONCURRENCY_HINT
        total = input_tokens + output_tokens
        costs = (1, total, input_tokens, output_tokens)
        wait = 0.0
        for i, d in self._active:
            w = d.wait(now, costs[i])
            if w > wait:
                wait = w
        if wait > 0.0:
            self._last_busy = now
            return max(wait, 1e-6)
        entries: list[Entry | None] = [None, None, None, None]
        for i, d in self._active:
            entries[i] = d.take(now, costs[i])
        self._inflight += 1
        self._admitted += 1
        return Permit(total, input_tokens, output_tokens, now, self._admitted, tuple(entries))

    def complete(self, permit: Permit, feedback: Feedback) -> None:
        """Once per Permit (repeats are ignored), with what the request came to. Releases the slot,
        reconciles tokens (unknown usage keeps the reservation; "cancelled" refunds it all), syncs
        the limits the response stated, pauses on 429, and feeds the adaptive controller."""
        if permit.done:      # exactly once; a second call must not free a slot twice
            return
        permit.done = True
        self._inflight -= 1
        now = self._clock()
        outcome = feedback.outcome
        self._counts[outcome] += 1
        dims, ents = self._dims, permit.entries or _NO_ENTRIES
        if outcome == "cancelled":   # never sent: give everything back
            for d, e in zip(dims, ents):
                if e is not None:
                    d.adjust(now, e, 0.0)
            return
        rw = self._refund_window
        prompt_tokens, completion_tokens = feedback.prompt_tokens, feedback.completion_tokens
        if prompt_tokens is not None and completion_tokens is not None and ents[1] is not None:
            dims[1].adjust(now, ents[1], prompt_tokens + completion_tokens, rw)
        if prompt_tokens is not None and ents[2] is not None:
            dims[2].adjust(now, ents[2], prompt_tokens, rw)
        if completion_tokens is not None and ents[3] is not None:
            dims[3].adjust(now, ents[3], completion_tokens, rw)
        if self._probing:
            self._probing = False
            self._update_cap()
        reset_hint = self._sync(permit, feedback.limits, now) if feedback.limits else None
        if outcome == "rate_limited":
            self._on_429(permit, feedback.retry_after, reset_hint, now)
        elif outcome in ("overloaded", "timeout"):
            if feedback.retry_after is not None:
                self._paused_until = max(self._paused_until, now + feedback.retry_after)
            # Against known limits a 503 or a timeout is the server's fault, not our rate: backing off
            # would only slow the harvest (a 2% 5xx rate would hold it far below the limit). Where the
            # limits are being learned, it is the congestion signal AIMD needs.
            self._faults.append(True)
            if self._req.source == "learned" and sum(self._faults) >= FAULT_BURST:
                self._backoff(permit, now, hard=True)
        elif outcome == "ok":
            self._on_success(permit, feedback.latency, now)

    # ------------------------------------------------------------------ stated limits
    def _sync(self, permit: Permit, limits: tuple[LimitHint, ...], now: float) -> float | None:
        """Take the per-minute limits the server states; never let local budget exceed what it says
        remains, less what we sent after this request (the server had not counted those yet).
        Returns seconds until reset of an exhausted dimension, if any."""
        hint: float | None = None
        relimit = False
        for lh in limits:
            i = _INDEX[lh.dimension]
            d = self._dims[i]
            limit = lh.limit
            if limit is not None and limit > 0 and lh.per_minute and limit != d.header:
                d.header = limit
                relimit = True
            remaining, reset = lh.remaining, lh.reset
            if remaining is None or reset is None or d.limit is None:
                continue
            end = permit.issued_at + reset
            if end <= now:      # that window has rolled over since: stale
                continue
            e = (permit.entries or _NO_ENTRIES)[i]
            budget = remaining - (d.sent - e[2] if e is not None else 0.0)
            if budget < 1.0:
                d.blocked_until = max(d.blocked_until, end)
                hint = max(hint or 0.0, end - now)
            else:
                d.refill(now)
                d.level = min(d.level, budget)
        if relimit:
            self._apply(now)
        return hint

    # ------------------------------------------------------------------ 429, congestion, AIMD
    def _on_429(self, permit: Permit, retry_after: float | None, reset_hint: float | None, now: float) -> None:
        """The whole limiter pauses (every caller), then resumes at a reduced rate."""
        self._n429 += 1
        if permit.seq > self._epoch:
            self._strikes += 1
        wait = retry_after
        if wait is None:
            wait = reset_hint
        if wait is None:
            wait = min(MAX_DEFAULT_PAUSE, DEFAULT_PAUSE * 2.0 ** max(0, self._strikes - 1))
        self._paused_until = max(self._paused_until, now + wait)
        self._backoff(permit, now, hard=True)

    def _backoff(self, permit: Permit, now: float, *, hard: bool) -> None:
        """Multiplicative decrease, once per congestion episode: of the learned rate when the
        limits are unknown, else of a throttle on the known limits that then regrows."""
        if permit.seq <= self._epoch:   # sent before the last decrease: same episode
            return
        self._epoch = self._admitted
        if self._req.source == "learned":
            if hard:
                self._loss_rps = self._rps
            self._rps = max(LEARN_MIN_RPS, self._rps * (LEARN_BETA if hard else BETA_SOFT))
            self._slow_start = False
            self._set_learned(now)
        else:
            if self._recovering:
                self._recover(now)
            self._f = self._f0 = max(0.05, self._f * (BETA_HARD if hard else BETA_SOFT))
            self._f_t0, self._recovering = max(now, self._paused_until), True
            for _, d in self._active:
                self._set_rate(d, self._f, now)

    def _recover(self, now: float) -> None:
        f = min(1.0, self._f0 * math.exp(RECOVER_PER_S * max(0.0, now - self._f_t0)))
        if f >= 1.0 or f - self._f >= 0.005:
            self._f, self._recovering = f, f < 1.0
            for _, d in self._active:
                self._set_rate(d, f, now)

    def _on_success(self, permit: Permit, latency: float | None, now: float) -> None:
        self._strikes = 0
        self._faults.append(False)
        if latency is not None and latency >= 0.0:
            # Single LLM latencies vary a lot; their ~20-sample average does not, unless requests
            # queue at the server (vLLM/Ollama past their batch capacity): then it climbs.
            self._n_lat += 1
            a = max(0.05, 1.0 / self._n_lat)   # a plain mean until the EWMA has 20 samples
            lat = self._lat = latency if self._lat is None else self._lat + a * (latency - self._lat)
            # the minimum of the average, drifting up slowly to adapt to longer answers
            self._lat_base = min(self._lat_base * 1.0002, lat) if self._n_lat > 20 else lat
            if self._n_lat == 1 and self._max_conc is None:   # the first latency: a cap at once
                self._update_cap()
        self._x_n += 1
        if now - self._x_t0 >= 1.0:
            sample = self._x_n / (now - self._x_t0)
            self._x = max(sample, self._x + 0.5 * (sample - self._x))   # no lag on the way up
            self._x_n, self._x_t0 = 0, now
            if self._max_conc is None:   # the cap follows throughput and latency
                self._update_cap()
        if self._req.source != "learned":
            return
        # Latency inflation counts only past an absolute slack: at a few milliseconds (a local teacher,
        # a fast cache) doubling is scheduling noise, not a queue, and would throttle us for nothing.
        avg = self._lat
        inflation = 1.0
        if avg is not None and self._n_lat > 20 and avg - self._lat_base > LATENCY_SLACK:   # queued
            inflation = avg / self._lat_base
        if inflation > 2.0:     # queueing at the server: back off gently
            self._backoff(permit, now, hard=False)
            return
        if now - self._last_busy > 1.0 or inflation > 1.5:
            return  # the rate is not what limits us, or latency is rising: hold
        if self._slow_start:
            g = SS_GAIN
        elif self._rps < 0.9 * self._loss_rps:
            g = NEAR_GAIN
        elif self._rps < 1.05 * self._loss_rps:
            g = FAR_GAIN
        else:
            g = PAST_GAIN
        self._rps += g / self._share   # _rps is the whole pool's rate: grow it as one worker alone would
        self._set_learned(now)

    def _set_learned(self, now: float) -> None:
        if self._req.source == "learned":
            self._req.limit = self._req.learned = self._rps * 60.0
            self._set_rate(self._req, 1.0, now)
            self._update_cap()

    # ------------------------------------------------------------------ bookkeeping
    def _apply(self, now: float) -> None:
        # Learn a request rate only while no limit at all is known (a known tokens/min limit
        # with no requests/min one means: requests are not limited).
        known = any(d.config is not None or d.header is not None for d in self._dims)
        self._req.learned = None if known else self._rps * 60.0
        active = []
        for i, d in enumerate(self._dims):
            if d.resolve():
                self._set_rate(d, 1.0 if d.source == "learned" else self._f, now)
                active.append((i, d))
        self._active = tuple(active)
        self._update_cap()

    def _update_cap(self) -> None:
        cap: int | None
        if self._max_conc is not None:
            cap, src = max(1, math.floor(self._max_conc * self._share + 1e-9)), "config"
        elif self._req.source == "learned":
            # k x throughput x unloaded latency (as BBR): room to grow k-fold per round trip,
            # yet the cap does not grow with queueing delay, so a batch-bound server (vLLM,
            # Ollama) cannot make us pile up requests. k = 2 once latency has started to climb.
            # Latency within LATENCY_SLACK of the baseline counts as noise, so it is room too: a teacher
            # answering in a millisecond would otherwise hold us to a handful in flight.
            gain = 3.0 if self._lat is None or self._lat < 1.5 * self._lat_base else 2.0
            cap = (math.ceil(gain * self._x * (self._lat_base + LATENCY_SLACK)) + 2
                   if self._lat_base < math.inf else 0)
            cap, src = max(self._probe, 4, cap), "learned"
        elif self._lat is not None:
            # Known limits: what the rate needs in flight at the latency seen (Little's law). Without a
            # request rate (tokens only), twice the throughput, which doubles per round trip at most.
            rate = self._req.rate if self._req.limit is not None else 2.0 * self._x
            cap, src = math.ceil(LITTLE_HEADROOM * rate * self._lat) + LITTLE_SLACK, "latency"
        else:
            cap, src = None, None
        if src != "config" and self._ceiling is not None:
            cap = self._ceiling if cap is None else min(cap, self._ceiling)
        if self._probing:
            cap = self._probe if cap is None else min(cap, self._probe)
        self._cap = cap
        self._cap_source: str | None = src

    @property
    def concurrency_cap(self) -> int | None:
        """Requests in flight at most now (None: no cap)."""
        return self._cap

    # ------------------------------------------------------------------ sharing
    def set_share(self, fraction: float) -> None:
        """Take `fraction` (0 < f <= 1) of every limit: workers sharing one teacher (and one key)
        each take 1/N, so that together they stay within the provider's limits.

        Scaled: configured, header-derived and learned request/token rates, and the configured
        concurrency cap (floored, at least 1). Limits stay global figures (a `limit` header is the
        provider's, for the whole key); what this worker may use is `share x limit`. Not scaled:
        `remaining` headers (they already count every worker's usage, so they cap this worker's
        bucket as they are), pauses after a 429 (the server's word, for everyone), and a learned
        concurrency cap (derived from this worker's own throughput, which the share already scales).
        Below 1, the hard window also stretches by SHARED_JITTER (~2.5 % of the rate): N processes'
        requests reach the provider with independent delays, and must not add up to one too many
        in any of its one-second windows.
        """
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"share must be in (0, 1], not {fraction!r}")
        if fraction == self._share:
            return
        now = self._clock()
        if self._recovering:
            self._recover(now)
        self._share = fraction
        for _, d in self._active:
            self._set_rate(d, 1.0 if d.source == "learned" else self._f, now)
        self._update_cap()

    def _set_rate(self, d: PacedWindow, factor: float, now: float) -> None:
        d.set_rate(factor * self._share, self._pace, now)
        if self._share < 1.0:
            d.wlen += SHARED_JITTER

    @property
    def share(self) -> float:
        return self._share

    def snapshot(self) -> dict[str, Any]:
        """What a status display needs: limits in force and their source, pace, in flight, 429s."""
        now = self._clock()
        if self._recovering:
            self._recover(now)
        limits = {n: (None if d.limit is None else
                      {"value": d.limit, "source": d.source, "effective": d.rate * 60.0})
                  for n, d in zip(_NAMES, self._dims)}
        paused = self._paused_until > now
        return {
            "limits": limits,
            "effective_rpm": self._req.rate * 60.0 if self._req.limit is not None else None,
            "throttle": self._f,
            "share": self._share,
            "in_flight": self._inflight,
            "concurrency_cap": self._cap,
            "concurrency_source": self._cap_source,
            "admitted": self._admitted,
            "rate_limited": self._n429,
            "outcomes": dict(self._counts),
            "paused_until": self._paused_until if paused else None,
            "paused_for": self._paused_until - now if paused else 0.0,
            "probing": self._probing,
            "slow_start": self._slow_start and self._req.source == "learned",
            # what the next run against this teacher may start from (see start_from)
            "learned": {"rpm": self._rps * 60.0, "loss_rpm": self._loss_rps * 60.0 or None}
            if self._req.source == "learned" else None,
            "started_from": None if self._seeded is None else {"rpm": self._seeded, "source": "last run"},
        }
