"""Telling a teacher that is down from prompts that fail (pure: outcomes and times in, verdicts out).

Without this, a teacher that goes down at 3 a.m. makes every job of the plan use up its retries and
end "failed", for as long as it takes to work through the whole queue. A few prompts that keep
failing are those prompts' problem; many different prompts failing in a row with nothing answered
in between is the teacher's. While that lasts the teacher is *suspect*: a job does not give up on
its last retry but keeps backing off. When nothing has been answered for `after` seconds, the
teacher is *down*: the run stops (exit 4) with its jobs still pending, to be resumed by a rerun.

Rate limiting (429) is not counted: it is the limiter's business, and says the teacher is up.
"""

from __future__ import annotations

from collections import Counter

# A failure streak makes the teacher suspect once it has this many failed attempts, of at least
# DISTINCT_JOBS different jobs (one prompt retried many times is that prompt's problem).
STREAK, DISTINCT_JOBS = 8, 4


class OutageWatch:
    """Failed and answered attempts, in the order they end. `after=None` never suspects."""

    def __init__(self, after: float | None, *, streak: int = STREAK, distinct_jobs: int = DISTINCT_JOBS) -> None:
        self.after = after
        self.streak = streak
        self.distinct_jobs = distinct_jobs
        self.failures = 0                    # failed attempts since the last answer
        self.since: float | None = None      # when the first of them ended
        self.kinds: Counter[str] = Counter()
        self._jobs: set[str] = set()         # jobs failed in the streak (at most distinct_jobs kept)

    def answered(self) -> None:
        self.failures, self.since = 0, None
        self.kinds.clear()
        self._jobs.clear()

    def failed(self, now: float, job_id: str, kind: str) -> None:
        self.failures += 1
        if self.since is None:
            self.since = now
        self.kinds[kind] += 1
        if len(self._jobs) < self.distinct_jobs:
            self._jobs.add(job_id)

    def suspect(self) -> bool:
        """Many different jobs failed in a row: do not let a job give up on the teacher now."""
        return (self.after is not None and self.failures >= self.streak
                and len(self._jobs) >= self.distinct_jobs)

    def down(self, now: float) -> bool:
        """Suspect, and nothing answered for `after` seconds: stop the run."""
        return self.suspect() and self.since is not None and now - self.since >= self.after  # type: ignore[operator]

    def describe(self, now: float) -> str:
        kinds = ", ".join(f"{k} x{n}" for k, n in self.kinds.most_common())
        waited = now - self.since if self.since is not None else 0.0
        return (f"the teacher answered nothing for {waited:.0f} s while {self.failures} attempts failed "
                f"({kinds}); it looks down: stopped with the unanswered jobs pending, rerun later to resume")
