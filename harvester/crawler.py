"""The async loop that joins the rooms: claim jobs, wait for the quota and the limiter, ask the
teacher, retry what is transient, record every attempt and answer through the writer, stop cleanly.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_random_exponential

from .clock import utc_now
from .config import MAX_IN_FLIGHT, Job
from .errors import (
    ConfigError,
    FatalError,
    InvalidAnswer,
    PermanentError,
    QuotaExceeded,
    RetryableError,
    TeacherError,
)
from .hashing import content_hash
from .logprobs import pack, wanted
from .outage import OutageWatch, RejectionWatch
from .providers import CANCELLED, UNKNOWN_ERROR
from .ratelimit import Permit, RateLimiter
from .schedule import RunSchedule
from .shape import Invalid, check_answer
from .shape_load import model_checks
from .store import AnswerRow, AttemptRow, ClaimedJob, FailureRow, Store
from .store.writer import StoreWriter
from .teacher import Reply, Teacher
from .tokens import TokenEstimator
from .wake import sleep_unless_woken
from .workers import Membership, dead_after, process_gone, worker_id  # noqa: F401 - worker_id: re-exported


class QuotaGate(Protocol):
    """What the crawler needs of the quota guard (harvester.quota.QuotaGuard)."""

    def reserve(self, job_id: str, input_tokens: int, output_tokens: int) -> Any: ...
    def settlement(self, reservation: Any, prompt_tokens: int | None, completion_tokens: int | None, *,
                   cached_tokens: int = 0, cache_write_tokens: int = 0, sent: bool = True,
                   billed_unknown: bool = False) -> Any: ...


@dataclass
class Progress:
    """A snapshot for progress displays; `total` counts the plan's jobs."""

    total: int
    done: int
    failed: int
    in_flight: int
    sent: int
    answered: int
    rate_limited: int
    prompt_tokens: int
    completion_tokens: int
    elapsed: float
    requests_per_min: float                 # attempts sent, failed ones included: not throughput
    eta_seconds: float | None
    limiter: dict[str, Any] = field(default_factory=dict)
    answers_per_min: float = 0.0    # throughput: answers, not attempts (failed ones do not count)
    truncated: int = 0              # answers cut by max_tokens (finish_reason "length") this run


@dataclass
class RunOutcome:
    reason: str                     # why the run ended: a harvester.reasons name (its exit code, meaning)
    message: str = ""
    sent: int = 0
    answered: int = 0
    failed: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    quota: QuotaExceeded | None = None
    fatal: FatalError | None = None
    notes: list[str] = field(default_factory=list)   # said once each, after the run (e.g. no logprobs came)


def input_token_bound(messages: list[dict[str, Any]]) -> int:
    """A hard upper bound on a request's input tokens: byte-level tokenizers never use more than one
    token per UTF-8 byte, plus each chat template's few tokens per message. The quota reserves this,
    so that no tokenizer can make a run overspend."""
    return 8 + sum(8 + len(str(m.get("content", "")).encode("utf-8")) for m in messages)


class _Stop(Exception):
    """Raised inside a job's task when the run stops before the job was sent."""


class _Slot:
    """One attempt's hold on the limiter and the quota (Crawler._slot), and how the attempt ended."""

    def __init__(self, permit: Permit) -> None:
        self.permit = permit
        self.reserved = False                   # the quota holds `reservation`: settle it
        self.reservation: Any = None
        self.reserving: asyncio.Future[Any] | None = None  # cancelled while reserving: the thread goes on
        self.result: Reply | BaseException | None = None   # the teacher's reply or error; None: never sent


class Crawler:
    def __init__(self, job: Job, store: Store, teacher: Teacher, *, plan_key: str, run_id: int,
                 owner: str, limiter: RateLimiter | None = None, quota: QuotaGate | None = None,
                 estimator: TokenEstimator | None = None, total: int = 0, done_before: int = 0,
                 failed_before: int = 0, max_seq: int | None = None, schedule: RunSchedule | None = None,
                 no_wait: bool = False, on_wait: Callable[[str], None] | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.job = job
        self.store = store
        self.teacher = teacher
        self.plan_key = plan_key
        self.run_id = run_id
        self.owner = owner
        limits = job.teacher.limits
        self.limiter = limiter or RateLimiter(rpm=limits.rpm, tpm=limits.tpm, input_tpm=limits.input_tpm,
                                              output_tpm=limits.output_tpm, max_concurrency=limits.max_concurrency,
                                              ceiling=MAX_IN_FLIGHT)
        self.quota = quota
        self.estimator = estimator or TokenEstimator()
        self.max_tokens = job.teacher.max_tokens or 4096  # tpm reservation when the job sets none
        self.writer = StoreWriter(store)
        self.total, self.done, self.failed = total, done_before, failed_before
        self.sent = self.answered = self.rate_limited = self.in_flight = self.truncated = 0
        self.max_seq = max_seq               # a trial (`run --limit N`): only the plan's jobs up to this seq
        self.schedule, self.no_wait, self.on_wait, self.clock = schedule, no_wait, on_wait, clock
        self.waiting_until: str | None = None   # outside the schedule: when it opens, as told
        self.prompt_tokens = self.completion_tokens = 0
        self.errors: Counter[str] = Counter()
        self.without_logprobs = 0            # answers to a request for logprobs that carried none
        self.models = model_checks(job)      # Pydantic response models validate answers too
        self.outage = OutageWatch(job.retry.outage_after)
        self.rejections = RejectionWatch(0, 0)  # armed in run(), with the number of jobs it may send
        self.started = time.monotonic()
        self._stopping = False
        self._stop_reason: RunOutcome | None = None
        self.crash: BaseException | None = None
        self._wake = asyncio.Event()
        self._gate = asyncio.Lock()          # FIFO: one waiter polls the limiter at a time
        self._sending: set[asyncio.Task[Any]] = set()
        self.membership = Membership(store, run_id=run_id, owner=owner, plan_key=plan_key,
                                     lease_seconds=job.lease_seconds, limiter=self.limiter,
                                     figures=self._figures, on_ended=self._taken_for_dead)

    # --- public -------------------------------------------------------------------------
    def stop(self, reason: str = "interrupted", message: str = "") -> None:
        """Send nothing new; let what is in flight finish and be recorded."""
        if not self._stopping:
            self._stopping = True
            self._stop_reason = self._stop_reason or RunOutcome(reason, message)
        self._wake.set()

    def cancel_sending(self) -> None:
        """Cancel the requests in flight: stopping no longer waits for their answers (their attempts
        are recorded as errors, their quota reservations kept as possibly billed)."""
        for task in list(self._sending):
            task.cancel()

    def progress(self) -> Progress:
        elapsed = time.monotonic() - self.started
        rpm = self.sent / elapsed * 60 if elapsed > 0 else 0.0
        left = self.total - self.done - self.failed
        rate = self.answered / elapsed if elapsed > 0 else 0.0
        return Progress(self.total, self.done, self.failed, self.in_flight, self.sent, self.answered,
                        self.rate_limited, self.prompt_tokens, self.completion_tokens, elapsed, rpm,
                        left / rate if rate > 0 and left > 0 else None, self.limiter.snapshot(),
                        answers_per_min=rate * 60, truncated=self.truncated)

    async def run(self, on_progress: Callable[[Progress], None] | None = None,
                  progress_interval: float = 0.5) -> RunOutcome:
        tasks: set[asyncio.Task[Any]] = set()
        heartbeat: asyncio.Task[Any] | None = None
        ticker = asyncio.create_task(self._tick(on_progress, progress_interval)) if on_progress else None
        try:
            await self._take_back()  # a crashed run's jobs, at once and first (they come first in the plan)
            self.rejections = RejectionWatch(*await asyncio.to_thread(self.store.open_jobs, self.plan_key,
                                                                               self.max_seq))
            self.teacher.warm()  # not between the limiter's first admissions and the wire
            await self.membership.join(stopping=lambda: self._stopping, pause=self._pause)
            heartbeat = asyncio.create_task(self.membership.heartbeat())
            room = asyncio.Event()   # set when a job's task ends: one wake-up, whatever is in flight

            def ended(task: asyncio.Task[Any]) -> None:
                tasks.discard(task)
                room.set()

            while not self._stopping:
                room.clear()
                # Claimed ahead: twice what may be in flight now (the limiter's cap follows the limits
                # and the latency), so that no job waits on the store, and no more: memory does not
                # grow with the plan.
                prefetch = max(16, 2 * (self.limiter.concurrency_cap or MAX_IN_FLIGHT))
                if len(tasks) <= prefetch // 2:  # top up in batches: one claim per prefetch/2 jobs
                    batch = await asyncio.to_thread(self.store.claim, self.plan_key, self.owner,
                                                    prefetch - len(tasks), self.job.lease_seconds, self.max_seq)
                    for claimed in batch:
                        task = asyncio.create_task(self._process(claimed))
                        tasks.add(task)
                        task.add_done_callback(ended)
                    if not batch and not tasks:
                        # Nothing to claim; take back the jobs of dead workers, and stay while live
                        # ones hold jobs that may come back.
                        held = await asyncio.to_thread(self.store.leases_held, self.plan_key, self.owner,
                                                       self.max_seq)
                        if not held:
                            break
                        if await self._take_back():
                            continue
                        if not self.membership.peers.may_hand_back(held):
                            break
                        await self._pause(1.0)
                        continue
                if tasks:
                    # Wait for room, but not forever: leases of others may expire meanwhile. (Not
                    # asyncio.wait(tasks): it hooks every task at each call, O(in flight) per answer.)
                    try:
                        await asyncio.wait_for(room.wait(), timeout=1.0)
                    except TimeoutError:
                        pass
            if tasks:
                waiting = [t for t in tasks if t not in self._sending]
                for t in waiting:
                    t.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
            if not self.rejections.tripped:  # no verdict came: the errors held back are their prompts'
                for job_id, e in self.rejections.release():
                    self._fail(job_id, e, permanent=True)
        finally:
            if heartbeat is not None:
                heartbeat.cancel()
            if ticker is not None:
                ticker.cancel()
            try:
                self.writer.close()
            finally:  # hand back the leases even if the writer could not finish
                await asyncio.to_thread(self.store.release_owner, self.owner)
        if on_progress:
            on_progress(self.progress())
        if self.crash is not None:
            raise self.crash
        outcome = self._stop_reason or await self._finished()
        outcome.sent, outcome.answered, outcome.failed = self.sent, self.answered, self.failed
        outcome.errors = self.errors
        if self.without_logprobs:
            outcome.notes.append(f"{self.without_logprobs} answers came without logprobs although teacher.params asks "
                                 f"for them: {self.job.teacher.base_url} may not return them for "
                                 f"{self.job.teacher.model}")
        return outcome

    # --- one job ------------------------------------------------------------------------
    async def _process(self, claimed: ClaimedJob) -> None:
        request = claimed.request
        est_in = self.estimator.estimate(request["messages"])
        worst_in = max(est_in, input_token_bound(request["messages"]))
        attempts = max(1, self.job.retry.max_attempts - claimed.attempts)
        # While the teacher looks down, a job does not give up: it backs off until the teacher answers
        # again or the run stops as "unavailable" with the job still pending (harvester.outage).
        give_up = stop_after_attempt(attempts)
        transient = retry_if_exception_type(RetryableError)
        invalid = 0   # answers not of the job's response schema, each paid: asked again retry.invalid_answers times

        def again(state: RetryCallState) -> bool:
            nonlocal invalid
            e = state.outcome.exception() if state.outcome else None
            if isinstance(e, InvalidAnswer):
                invalid += 1
                return invalid <= self.job.retry.invalid_answers
            return transient(state)
        retrying = AsyncRetrying(stop=lambda state: give_up(state) and not self.outage.suspect(), wait=self._wait,
                                 retry=again, reraise=True)
        try:
            async for attempt in retrying:
                with attempt:
                    reply = await self._attempt(claimed.id, request, est_in, worst_in)
        except _Stop:
            return
        except asyncio.CancelledError:
            return  # the run is stopping; the job's lease is released at the end of the run
        except RetryableError as e:
            self._fail(claimed.id, e, permanent=False)
            return
        except PermanentError as e:
            if not e.about_prompt and self.rejections.rejected(claimed.id, content_hash(request["messages"]),
                                                                e.status, e):
                if self.rejections.tripped:
                    self._misconfigured()
                return  # held back: failed once an answer shows it was the prompt, else left pending
            self._fail(claimed.id, e, permanent=True)
            return
        except FatalError as e:
            self._fatal(e)
            return
        except QuotaExceeded as e:
            self._stop_reason = self._stop_reason or RunOutcome("quota", str(e), quota=e)
            self.stop("quota", str(e))
            return
        except ConfigError as e:  # a budget no request can ever fit: rerunning later would not help
            self._stop_reason = self._stop_reason or RunOutcome("config", str(e))
            self.stop("config", str(e))
            return
        except Exception as e:  # a bug or a broken store: stop the run, then re-raise from run()
            self._stop_reason = RunOutcome("error", f"{type(e).__name__}: {e}")
            self.crash = e
            self.stop("error")
            return
        for job_id, error in self.rejections.answered():  # the teacher answers: those were the prompts' errors
            self._fail(job_id, error, permanent=True)
        if reply.logprobs is None and wanted(request["params"]) is not None:
            self.without_logprobs += 1
        self.writer.put(AnswerRow(claimed.id, self.run_id, reply.model, reply.content, reply.finish_reason,
                                  reply.prompt_tokens, reply.completion_tokens, reply.latency, reply.raw,
                                  reply.reasoning, pack(reply.logprobs) if reply.logprobs is not None else None))
        self.done += 1
        if reply.finish_reason == "length":
            self.truncated += 1

    async def _attempt(self, job_id: str, request: dict[str, Any], est_in: int, worst_in: int) -> Reply:
        if self._stopping:
            raise _Stop
        async with self._slot(job_id, est_in, worst_in) as slot:
            task = asyncio.current_task()
            assert task is not None
            self._sending.add(task)
            self.in_flight += 1
            self.sent += 1
            started = time.time()
            try:
                reply = await self.teacher.complete(request)
                slot.result = reply
            except BaseException as e:
                slot.result = e
                if isinstance(e, TeacherError):
                    if e.feedback is not None and e.feedback.outcome == "rate_limited":
                        self.rate_limited += 1
                        self.outage.heard_from()
                    elif isinstance(e, RetryableError):
                        self._teacher_failed(job_id, e)
                    else:
                        self.outage.answered()  # a 4xx is an answer about the prompt: the teacher is up
                    self.errors[e.kind] += 1
                    self._record_attempt(job_id, started, e.status, e.kind, e.retry_after, slot.permit)
                raise
            finally:
                self.in_flight -= 1
                self._sending.discard(task)
                self._wake.set()
            self.outage.answered()
            if reply.prompt_tokens is not None:
                self.estimator.observe(est_in, reply.prompt_tokens)
            self.prompt_tokens += reply.prompt_tokens or 0
            self.completion_tokens += reply.completion_tokens or 0
            # paid and settled like any answer; recorded as an attempt of its kind when not of its schema
            verdict = check_answer(request["shape"], reply.content, reply.finish_reason, self.models) \
                if "shape" in request else None
            bad = verdict if isinstance(verdict, Invalid) else None
            self._record_attempt(job_id, started, reply.status, bad.kind if bad else None, None, slot.permit, reply)
            if bad is not None:
                self.errors[bad.kind] += 1
                raise InvalidAnswer(bad.message, kind=bad.kind, feedback=reply.feedback, about_prompt=True)
            self.answered += 1
            return reply

    @asynccontextmanager
    async def _slot(self, job_id: str, est_in: int, worst_in: int) -> AsyncIterator[_Slot]:
        """Admission of one attempt: a permit from the limiter, then the quota's reservation. However the
        attempt ends, leaving the slot completes the permit and settles the reservation, once each, from
        `slot.result` (set by the attempt once the request is sent)."""
        slot = _Slot(await self._acquire(est_in))
        try:
            # Reserve after the limiter admits the request, so that reservations are requests about to be
            # sent: a budget is then used to its end rather than held by requests still queueing.
            quota = self.quota
            if quota is not None:
                reserving = asyncio.ensure_future(asyncio.to_thread(quota.reserve, job_id, worst_in,
                                                                    self.max_tokens))
                try:
                    slot.reservation = await asyncio.shield(reserving)
                except asyncio.CancelledError:
                    slot.reserving = reserving
                    raise
                slot.reserved = True
                if self._stopping:
                    raise _Stop
            yield slot
        finally:
            self._release(slot.permit, slot.result)
            if slot.reserving is not None:
                # Cancelling the await does not stop the thread, which commits the reservation anyway: on
                # a cancel (a stopping run cancels tasks not yet sending), wait for it and release it, or
                # it would stay reserved for good (an ended run's reservations are never expired).
                try:
                    self.writer.put(self._settlement(await slot.reserving, None))
                except Exception:  # noqa: BLE001 - not reserved (e.g. QuotaExceeded): nothing to release
                    pass
            elif slot.reserved:
                self.writer.put(self._settlement(slot.reservation, slot.result))

    def _release(self, permit: Permit, result: Reply | BaseException | None) -> None:
        """Hand the permit back to the limiter with what the attempt says of the teacher's limits, as
        parsed by the provider room: the one place that completes permits. `result` None: never sent
        (the limiter refunds it all)."""
        if result is None:
            feedback = CANCELLED
        elif isinstance(result, TeacherError):
            feedback = result.feedback or UNKNOWN_ERROR
        elif isinstance(result, BaseException):  # a bug, or a cancel while sending
            feedback = UNKNOWN_ERROR
        else:
            feedback = result.feedback
        self.limiter.complete(permit, feedback)

    def _settlement(self, reservation: Any, result: Reply | BaseException | None) -> Any:
        """The quota's settlement of a reservation, from how its attempt ended (`_release`'s `result`)."""
        assert self.quota is not None
        if result is None:  # never sent: release it all
            return self.quota.settlement(reservation, None, None, sent=False)
        if isinstance(result, TeacherError):  # no status: the request may have been billed, keep its worst case
            return self.quota.settlement(reservation, None, None, billed_unknown=result.status is None)
        if isinstance(result, BaseException):
            return self.quota.settlement(reservation, None, None, billed_unknown=True)
        return self.quota.settlement(reservation, result.prompt_tokens, result.completion_tokens,
                                     cached_tokens=result.raw.get("cached_tokens", 0),
                                     cache_write_tokens=result.raw.get("cache_write_tokens", 0),
                                     billed_unknown=result.prompt_tokens is None and result.completion_tokens is None)

    async def _acquire(self, est_in: int) -> Permit:
        async with self._gate:
            while True:
                if self._stopping:
                    raise _Stop
                if self.schedule is not None and not await self._inside_schedule():
                    continue
                got = self.limiter.try_acquire(est_in, self.max_tokens)
                if isinstance(got, Permit):
                    return got
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=got)
                except TimeoutError:
                    pass

    async def _inside_schedule(self) -> bool:
        """True inside the schedule's window. Outside it nothing is sent (what is in flight finishes):
        with --no-wait the run stops ("closed"), else this waits a while (until it opens, a minute at
        most, or a wake-up) and returns False, to be asked again."""
        assert self.schedule is not None
        now = self.clock()
        if self.schedule.open(now):
            self.waiting_until = None
            return True
        opens = self.schedule.next_open(now)
        when = self.schedule.describe(opens, now) if opens else "no time within a week"
        if self.no_wait:
            self.stop("closed", f"the schedule's window closed: nothing more was sent (what was in flight "
                      f"finished); it opens again at {when}: rerun then, or without --no-wait to wait for it")
            raise _Stop
        if self.waiting_until != when:
            self.waiting_until = when
            if self.on_wait is not None:
                self.on_wait(f"waiting until {when}")
        seconds = (opens - now).total_seconds() if opens else 60.0
        await self._pause(max(0.05, min(60.0, seconds)))
        return False

    def _record_attempt(self, job_id: str, started: float, status: int | None, kind: str | None,
                        retry_after: float | None, permit: Permit, reply: Reply | None = None) -> None:
        self.writer.put(AttemptRow(job_id, self.run_id, started, time.time(), status, kind, retry_after,
                                   permit.tokens, reply.prompt_tokens if reply else None,
                                   reply.completion_tokens if reply else None))

    def _wait(self, state: RetryCallState) -> float:
        """Exponential backoff with full jitter, never shorter than the server's retry-after. The
        limiter already paces the whole run, so a retry need not wait long to be polite; full jitter
        spreads retries out instead of bunching them."""
        base = wait_random_exponential(multiplier=self.job.retry.initial_wait, max=self.job.retry.max_wait)(state)
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, InvalidAnswer):   # the teacher is fine: ask again at once
            return 0.0
        retry_after = getattr(exc, "retry_after", None)
        return max(base, retry_after) if retry_after else base

    def _fail(self, job_id: str, e: TeacherError, *, permanent: bool) -> None:
        self.failed += 1
        self.writer.put(FailureRow(job_id, e.kind, self.teacher.scrub(str(e)), permanent))

    def _teacher_failed(self, job_id: str, e: TeacherError) -> None:
        now = time.monotonic()
        self.outage.failed(now, job_id, e.kind, status=e.status, message=self.teacher.scrub(str(e)))
        if self.outage.down(now) and not self._stopping:
            self._stop_reason = RunOutcome("unavailable", self.outage.describe(now))
            self.stop("unavailable")

    def _misconfigured(self) -> None:
        w = self.rejections
        hint = {404: "teacher.base_url (most servers want its path to end in /v1, e.g. http://host:8000/v1) "
                     "and teacher.model",
                405: "teacher.base_url (its path: most servers want it to end in /v1)",
                422: "teacher.params (a parameter the server does not know, or a value it refuses) and teacher.model",
                400: "teacher.model and teacher.params"}.get(w.status or 0,
                                                             "teacher.base_url, teacher.model and teacher.params")
        message = (f"the teacher at {self.job.teacher.base_url} rejected every request, answering none: "
                   f"{w.message} ({w.count} requests in a row, {len(w.prompts)} different "
                   f"prompt{'s' if len(w.prompts) > 1 else ''}). That is the job file, not the prompts: "
                   f"check {hint}. Nothing was recorded as failed; the jobs are still pending: fix the job file "
                   "and rerun")
        if self._stop_reason is None:
            self._stop_reason = RunOutcome("misconfigured", self.teacher.scrub(message))
        self.stop("misconfigured")

    def _fatal(self, e: FatalError) -> None:
        if self._stop_reason is None or self._stop_reason.reason != "fatal":
            self._stop_reason = RunOutcome("fatal", self.teacher.scrub(str(e)), fatal=e)
        self.stop("fatal")

    async def _finished(self) -> RunOutcome:
        """"done" only if every job of the plan is answered or failed with its reason recorded; jobs
        still pending or leased (by a worker that is neither live nor known dead) make it "incomplete"."""
        counts = await asyncio.to_thread(self.store.count_states, self.plan_key, self.max_seq)
        left = counts["pending"] + counts["leased"]
        if not left:
            return RunOutcome("done")
        held = f", {counts['leased']} leased by another worker" if counts["leased"] else ""
        return RunOutcome("incomplete", f"{left} of {sum(counts.values())} jobs have no answer yet "
                          f"({counts['pending']} pending{held}); rerun to finish them (a lease of a worker that "
                          f"cannot be reached expires after lease_seconds = {self.job.lease_seconds:g} s)")

    async def _take_back(self) -> int:
        """Hand the jobs leased by dead workers back to the queue (harvester.store.take_back_dead)."""
        released = await asyncio.to_thread(self.store.take_back_dead, self.plan_key,
                                           dead_after=dead_after(self.job.lease_seconds), gone=process_gone,
                                           exclude_run=self.run_id)
        return sum(released.values())

    # --- background ---------------------------------------------------------------------
    def _figures(self) -> dict[str, int]:
        """What each heartbeat notes on our run (harvester.workers.Membership)."""
        return {"sent": self.sent, "answered": self.answered, "rate_limited": self.rate_limited}

    def _taken_for_dead(self) -> None:
        """Our run was ended by another worker that took us for dead (no heartbeat for dead_after s: this
        process was stopped, or cut off from the store) and took back our jobs: stop."""
        if not self._stopping:
            self._stop_reason = RunOutcome("error", "another worker found this one silent for over "
                                           f"{self.membership.dead_after:.0f} s and took back its jobs; "
                                           "stopped: rerun to resume")
            self.stop("error")

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run is asked to stop."""
        if not self._stopping:
            await sleep_unless_woken(self._wake, seconds)

    async def _tick(self, on_progress: Callable[[Progress], None], interval: float) -> None:
        while True:
            on_progress(self.progress())
            await asyncio.sleep(interval)
