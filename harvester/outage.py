"""Telling a teacher that is down from prompts that fail (pure: outcomes and times in, verdicts out).

Without this, a teacher that goes down at 3 a.m. makes every job of the plan use up its retries and
end "failed", for as long as it takes to work through the whole queue. A few prompts that keep
failing are those prompts' problem; many different prompts failing in a row with nothing answered
in between is the teacher's. While that lasts the teacher is *suspect*: a job does not give up on
its last retry but keeps backing off. When nothing has been answered for `after` seconds, the
teacher is *down*: the run stops (exit 4) with its jobs still pending, to be resumed by a rerun.

Rate limiting (429) is not counted: it is the limiter's business, and says the teacher is up.

A teacher that has not answered once in this run (no HTTP answer of any kind) and fails only at
the connection (refused, DNS, TLS, no connection within the timeout) is not a flaky network: it is
*unreachable*, and the run stops within seconds (`never_span`), not after `after`. Connections dropped
once a request was sent count too, but only over several different jobs: a prompt can crash a server.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

# What harvester.teacher calls a connection that never reached a server (not about any prompt).
UNREACHABLE = frozenset({"connection_refused", "dns", "tls", "connect_timeout", "unreachable"})
DROPPED = "connection"                       # the connection closed without an answer
# A teacher never heard from is unreachable after this many connection failures in a row, spread
# over this many seconds at least (or `after`, if shorter): a server restarting is not stopped for.
NEVER_ATTEMPTS, NEVER_SPAN = 3, 2.0

# A failure streak makes the teacher suspect once it has this many failed attempts, of at least
# DISTINCT_JOBS different jobs (one prompt retried many times is that prompt's problem).
STREAK, DISTINCT_JOBS = 8, 4


@dataclass
class _Streak:
    """Failed attempts in a row: how many, since when, of which kinds, and of which jobs (at most
    `max_jobs` kept: only whether there were that many different ones matters)."""

    max_jobs: int
    count: int = 0
    since: float | None = None           # when the first of them ended
    kinds: Counter[str] = field(default_factory=Counter)
    jobs: set[str] = field(default_factory=set)

    def add(self, now: float, job_id: str, kind: str) -> None:
        self.count += 1
        if self.since is None:
            self.since = now
        self.kinds[kind] += 1
        if len(self.jobs) < self.max_jobs:
            self.jobs.add(job_id)

    def clear(self) -> None:
        self.count, self.since = 0, None
        self.kinds.clear()
        self.jobs.clear()


class OutageWatch:
    """Failed and answered attempts, in the order they end. `after=None` never suspects."""

    def __init__(self, after: float | None, *, streak: int = STREAK, distinct_jobs: int = DISTINCT_JOBS,
                 never_attempts: int = NEVER_ATTEMPTS, never_span: float = NEVER_SPAN) -> None:
        self.after = after
        self.streak = streak
        self.distinct_jobs = distinct_jobs
        self.never_attempts = never_attempts
        self.never_span = never_span if after is None else min(never_span, after)
        self.heard = False                   # any HTTP answer (even an error status) in this run
        self._silent = _Streak(distinct_jobs)  # connection failures in a row, while never heard from
        self.last_message = ""
        self._streak = _Streak(distinct_jobs)  # failed attempts since the last answer

    @property
    def failures(self) -> int:
        """Failed attempts since the last answer."""
        return self._streak.count

    def heard_from(self) -> None:
        """The server answered something (a 429): it is reachable; says nothing of being up."""
        self.heard = True

    def answered(self) -> None:
        self.heard = True
        self._streak.clear()

    def failed(self, now: float, job_id: str, kind: str, *, status: int | None = None, message: str = "") -> None:
        """A failed attempt; `status` is the HTTP status if the server answered at all."""
        if status is not None:
            self.heard = True
        elif not self.heard and (kind in UNREACHABLE or kind == DROPPED):
            self._silent.add(now, job_id, kind)
            self.last_message = message or self.last_message or kind
        self._streak.add(now, job_id, kind)

    def _only_unreachable(self) -> bool:
        return not self.heard and self._silent.count > 0 and set(self._silent.kinds) <= UNREACHABLE

    def suspect(self) -> bool:
        """Many different jobs failed in a row, or the teacher was never reached: do not let a job give
        up on the teacher now."""
        if self.after is None:
            return False
        return self._long_streak() or self._only_unreachable()

    def _long_streak(self) -> bool:
        return self._streak.count >= self.streak and len(self._streak.jobs) >= self.distinct_jobs

    def unreachable(self, now: float) -> bool:
        """Never heard from, and only connection failures for `never_span` seconds: stop the run now."""
        silent = self._silent
        return (self.after is not None and not self.heard and silent.count >= self.never_attempts
                and silent.since is not None and now - silent.since >= self.never_span
                and (self._only_unreachable() or len(silent.jobs) >= self.distinct_jobs))

    def down(self, now: float) -> bool:
        """Suspect, and nothing answered for `after` seconds; or unreachable: stop the run."""
        if self.unreachable(now):
            return True
        since = self._streak.since
        return self._long_streak() and self.after is not None and since is not None and now - since >= self.after

    def describe(self, now: float) -> str:
        if self.unreachable(now):
            silent = self._silent
            span = now - silent.since if silent.since is not None else 0.0
            kind = silent.kinds.most_common(1)[0][0]
            hint = {"dns": "is teacher.base_url's host name right?",
                    "tls": "does teacher.base_url's scheme (http or https) match the server, and is its "
                           "certificate valid?",
                    DROPPED: "is teacher.base_url a chat-completions server, and is a proxy in the way?"
                    }.get(kind, "is it running, and is teacher.base_url right?")
            return (f"the teacher never answered: {self.last_message} ({silent.count} attempts in {span:.1f} s); "
                    f"{hint} Stopped with the jobs pending: rerun to resume")
        kinds = ", ".join(f"{k} x{n}" for k, n in self._streak.kinds.most_common())
        waited = now - self._streak.since if self._streak.since is not None else 0.0
        return (f"the teacher answered nothing for {waited:.0f} s while {self._streak.count} attempts failed "
                f"({kinds}); it looks down: stopped with the unanswered jobs pending, rerun later to resume")


# A run is misconfigured when, before its first answer, this many permanent errors in a row share one
# HTTP status, on at least this many different prompts (or all the run has, if it has fewer). Five:
# enough that a few bad prompts at the head of a plan are not taken for a wrong job file, and few
# enough that at most max_concurrency requests are spent finding out. Errors that name the prompt
# (too long, filtered) never count (harvester.teacher marks them `about_prompt`).
REJECT_STREAK, REJECT_PROMPTS = 5, 3


class RejectionWatch:
    """Permanent errors (4xx) before the first answer of a run, held back instead of recorded as
    failed until it is clear whose fault they are: an answer says the prompts' (each is then recorded
    as failed), and the same status on many different prompts says the job file's (base_url, model,
    params): the run stops as misconfigured, its jobs still pending. After an answer, a permanent
    error is one prompt's, recorded at once. Pure: outcomes in, verdicts out."""

    def __init__(self, jobs: int, prompts: int, *, streak: int = REJECT_STREAK,
                 distinct_prompts: int = REJECT_PROMPTS) -> None:
        self.need = min(streak, jobs)
        self.need_prompts = min(distinct_prompts, prompts)
        self.armed = self.need > 0           # until the first answer
        self.tripped = False
        self.status: int | None = None       # of the current streak
        self.count = 0
        self.message = ""
        self.prompts: set[str] = set()          # of the current streak (at most need_prompts kept)
        self._held: list[tuple[str, Any]] = []

    def rejected(self, job_id: str, prompt: str, status: int | None, error: Any) -> bool:
        """A permanent error on `job_id`; True if it is held back (not to be recorded as failed now)."""
        if not self.armed:
            return False
        self._held.append((job_id, error))
        if status != self.status:
            self.status, self.count, self.prompts = status, 0, set()
        self.count += 1
        self.message = str(error)
        if len(self.prompts) < max(self.need, self.need_prompts):
            self.prompts.add(prompt)
        if self.count >= self.need and len(self.prompts) >= self.need_prompts:
            self.tripped = True
        return True

    def answered(self) -> list[tuple[str, Any]]:
        """An answer: the errors held back were their prompts'; returns them (to record as failed)."""
        if self.tripped:
            return []                        # the verdict stands: those jobs stay pending
        self.armed = False
        return self.release()

    def release(self) -> list[tuple[str, Any]]:
        """The errors held back, once and for all (at an answer, or at the end of a run not tripped)."""
        held, self._held = self._held, []
        return held
