"""Batch mode: the plan's jobs through the provider's batch API at its batch price, with the
synchronous path's promises (harvester.store.batches says how the store keeps them).

Each round looks at the open batches (an intent not yet created is created, or found at the provider if
a crash came between creating and recording it; an ended batch's results are read line by line), then
submits new batches while claimable jobs remain and fewer than `batch.max_open` are open, then waits
`batch.poll_seconds`. `detach` returns once everything claimable is submitted; a later run (or
`status`) picks the open batches up.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import providers
from .batch_client import BatchClient
from .clock import utc_now
from .config import Job
from .crawler import RunOutcome, input_token_bound
from .errors import ConfigError, FatalError, PermanentError, QuotaExceeded, RetryableError
from .logprobs import pack
from .pricing import TokenUsage
from .providers import anthropic_batch
from .providers.batch import BatchState, LineResult
from .quota import QuotaGuard, prices_for
from .shape import Invalid, check_answer
from .shape_load import model_checks
from .store import Store
from .store import batches as sb
from .store.ledger import Overrun
from .teacher import UNREACHABLE_KINDS
from .wake import sleep_unless_woken
from .workers import dead_after, heartbeat_interval, process_gone

DEADLINE = "cancelled by harvester: batch.deadline passed"


@dataclass
class BatchProgress:
    """A snapshot for progress displays."""

    total: int
    done: int
    failed: int
    open: dict[str, int]                   # open batches by the provider's status word
    lines_open: int                        # lines in open batches
    submitted: int = 0                     # batches this run created
    collected: int = 0                     # batches this run read to the end
    elapsed: float = 0.0
    usd: float = 0.0                       # what the answers read this run cost, at the batch price
    notes: list[str] = field(default_factory=list)


def protocol_for(job: Job) -> str:
    """The batch protocol: the job's choice, else Anthropic's own for Anthropic's API, else OpenAI's."""
    if job.batch.protocol != "auto":
        return job.batch.protocol
    found = providers.identify(job.teacher.provider, job.teacher.base_url)
    return "anthropic" if found is not None and found.name == "anthropic" else "openai"


def check_batch_config(job: Job) -> None:
    """What batch mode cannot send, refused before anything is written or paid."""
    if protocol_for(job) == "anthropic":
        bad = anthropic_batch.unsupported(job.teacher.params)
        if bad:
            raise ConfigError(f"teacher.params: Anthropic's Message Batches take no {', '.join(sorted(bad))}; remove "
                              "them, or set batch.protocol: openai for a server that serves OpenAI's batch API")


def batch_factor(job: Job) -> float:
    """The share of the synchronous price a batch pays: the job's `quota.prices.batch_factor`, else
    the provider's (its room), else 1 (no discount known: budgets stay safe)."""
    price = prices_for(job)   # the job file's quota.prices.batch_factor, else the model's own
    if price is not None and price.batch_factor is not None:
        return price.batch_factor
    found = providers.identify(job.teacher.provider, job.teacher.base_url)
    if found is None and job.quota.prices is None and (priced := providers.price_for(job.teacher.model)):
        found = priced[0]
    return found.batch_factor if found is not None and found.batch_factor else 1.0


class BatchRunner:
    def __init__(self, job: Job, store: Store, client: BatchClient, *, plan_key: str, run_id: int,
                 guard: QuotaGuard | None, max_seq: int | None = None, detach: bool = False,
                 on_progress: Callable[[BatchProgress], None] | None = None) -> None:
        self.job, self.store, self.client = job, store, client
        self.plan_key, self.run_id, self.guard, self.max_seq = plan_key, run_id, guard, max_seq
        self.detach, self.on_progress = detach, on_progress
        self.factor = batch_factor(job)
        self.max_requests = min(job.batch.max_requests or client.limits.max_requests, client.limits.max_requests)
        self.max_tokens = job.teacher.max_tokens or 4096
        self.models = model_checks(job)      # Pydantic response models validate answers too
        self.answered = self.line_failures = self.submitted = self.collected = 0
        self.usd = 0.0
        self.notes: list[str] = []
        self.started = time.monotonic()
        self._stopping = False
        self._stop_reason: RunOutcome | None = None
        self._wake = asyncio.Event()
        self._last_seen: tuple[Any, ...] = ()
        self._failing_since: float | None = None
        self._never_reached = False
        self.late = False        # a batch passed batch.deadline: submit no more, finish synchronously

    # --- public -------------------------------------------------------------------------
    def stop(self, reason: str = "interrupted", message: str = "") -> None:
        """Submit nothing new; what is open at the provider stays open, for a later run to read."""
        if not self._stopping:
            self._stopping = True
            self._stop_reason = self._stop_reason or RunOutcome(reason, message)
        self._wake.set()

    async def run(self) -> RunOutcome:
        beating = asyncio.create_task(self._heartbeat())
        try:
            while not self._stopping:
                await asyncio.to_thread(self.store.take_back_dead, self.plan_key,
                                        dead_after=dead_after(self.job.lease_seconds), gone=process_gone,
                                        exclude_run=self.run_id)
                await self._guarded(self._look())
                if self._stopping:
                    break
                await self._guarded(self._submit())
                if self._stopping:
                    break
                open_now = await asyncio.to_thread(sb.open_batches, self.store, self.plan_key)
                await self._report(open_now)
                if self.late and not open_now:   # the batches past their deadline are read: the rest goes sync
                    return RunOutcome("deadline", answered=self.answered, failed=self.line_failures)
                if self.detach and not await self._claimable():
                    return RunOutcome("detached", f"{len(open_now)} batches open at the provider; `harvester run` "
                                      "or `harvester status` later reads what they answered", answered=self.answered)
                if not open_now and not await self._claimable():
                    break
                await self._pause(self.job.batch.poll_seconds)
        finally:
            beating.cancel()
            await self.client.aclose()
        if self._never_reached:   # no request left this machine: what it recorded goes back to the queue
            for row in await asyncio.to_thread(sb.open_batches, self.store, self.plan_key):
                if row["run_id"] == self.run_id and row["provider_id"] is None and row["input_file_id"] is None:
                    await asyncio.to_thread(sb.release, self.store, row["id"], "abandoned",
                                            detail="never sent: the batch API was never reached")
        outcome = self._stop_reason or await self._finished()
        outcome.answered, outcome.failed = self.answered, self.line_failures
        return outcome

    async def _heartbeat(self) -> None:
        """Keep this run live in the store, as a crawler does (harvester.workers): a silent one is taken for
        dead, and the batches it recorded but had not created yet would be created by another run."""
        every, dead = heartbeat_interval(self.job.lease_seconds), dead_after(self.job.lease_seconds)
        while True:
            try:
                _, workers = await asyncio.to_thread(self.store.heartbeat, self.run_id, dead_after=dead,
                                                     answered=self.answered)
            except Exception:  # noqa: BLE001 - the store is unreachable: try again at the next beat
                workers = None
            if workers is not None and not any(w["id"] == self.run_id for w in workers) and not self._stopping:
                self.stop("error", f"another worker found this one silent for over {dead:.0f} s and took it "
                          "for dead; stopped: rerun to resume")
            await asyncio.sleep(every)

    # --- one round ------------------------------------------------------------------------
    async def _guarded(self, step: Any) -> None:
        """A failed call to the batch API: transient ones wait for the next round, the others stop."""
        try:
            await step
        except RetryableError as e:
            self._api_failed(e)
        except FatalError as e:
            self.stop("fatal", str(e))
        except PermanentError as e:
            self.stop("misconfigured", f"the teacher refused the batch: {e}. Nothing was lost: the jobs are "
                      "pending again; fix the job file and rerun")
        except QuotaExceeded as e:
            self.stop("quota", str(e))

    def _api_failed(self, e: RetryableError) -> None:
        """A transient failure of the batch API: wait for the next round, unless the teacher was never
        reached (a wrong base_url: stop at once, nothing was sent) or has answered nothing for
        retry.outage_after seconds (down: stop, exit 4, to resume later)."""
        last, now = self.client.last_ok, time.monotonic()
        if self._failing_since is None or (last is not None and last > self._failing_since):
            self._failing_since = now            # the first failure since the API last answered
        silent = now - self._failing_since
        outage_after = self.job.retry.outage_after
        if last is None and e.kind in UNREACHABLE_KINDS:
            self._never_reached = True
            self.stop("unavailable", f"the teacher's batch API was never reached: {e}. Nothing was sent; check "
                      "teacher.base_url and rerun")
        elif outage_after is not None and silent > outage_after:
            self.stop("unavailable", f"the teacher's batch API has failed for {silent:.0f} s: {e}; "
                      "rerun later to resume (open batches stay open at the provider)")
        else:
            self._note(f"the batch API failed, trying again in {self.job.batch.poll_seconds:g} s: {e}")

    async def _look(self) -> None:
        for row in await asyncio.to_thread(sb.open_batches, self.store, self.plan_key):
            if self._stopping:
                return
            if row["provider_id"] is None:
                if await asyncio.to_thread(self._adopt, row):
                    await self._send(row)
                continue
            state = await self.client.retrieve(row["provider_id"])
            if state.status != row["provider_status"]:
                await asyncio.to_thread(sb.update, self.store, row["id"], provider_status=state.status)
            if state.ended:
                await self._collect(row, state)
            elif self._past_deadline(row) and row["detail"] != DEADLINE:
                # Cancelled at the provider, which keeps what it finished; the rest is answered synchronously
                await asyncio.to_thread(sb.update, self.store, row["id"], detail=DEADLINE)
                await self.client.cancel(row["provider_id"])
                self.late = True
                self._note(f"batch {row['provider_id']} passed batch.deadline ({self.job.batch.deadline:g} s): "
                           "cancelled; what it answered is kept, the rest goes synchronously")

    def _adopt(self, row: dict[str, Any]) -> bool:
        """Whether this run may create a batch recorded but not created: its own, or one whose run has
        ended (crashed) and that no other live run adopted first."""
        if row["run_id"] == self.run_id:
            return True
        return sb.adopt(self.store, row["id"], row["run_id"], self.run_id)

    def _past_deadline(self, row: dict[str, Any]) -> bool:
        deadline = self.job.batch.deadline
        return deadline is not None and row["submitted_at"] is not None and time.time() > row["submitted_at"] + deadline

    async def _submit(self) -> None:
        while not self._stopping and not self.late:
            n_open = len(await asyncio.to_thread(sb.open_batches, self.store, self.plan_key))
            if n_open >= self.job.batch.max_open:
                return
            now = utc_now()
            tag = f"harvester-{uuid.uuid4().hex[:20]}"
            got = await asyncio.to_thread(
                sb.start, self.store, plan_key=self.plan_key, protocol=self.client.protocol, tag=tag,
                run_id=self.run_id, n=self.max_requests, max_bytes=self.client.limits.max_bytes,
                encode=self.client.encode, cost=self._cost, budgets=self.guard.budgets if self.guard else [],
                day=now.strftime("%Y-%m-%d"), month=now.strftime("%Y-%m"), max_seq=self.max_seq)
            if got is None:
                return
            if isinstance(got, Overrun):
                if n_open:     # what the open batches did not use comes back when they are read: wait
                    return
                assert self.guard is not None
                raise self.guard._exceeded(got, now)
            row = {"id": got.id, "tag": tag, "run_id": self.run_id, "input_file_id": None, "lines": len(got.lines),
                   "created_at": time.time()}
            await self._send(row, got.lines)

    async def _send(self, row: dict[str, Any], lines: list[bytes] | None = None) -> None:
        """Upload (OpenAI) and create a recorded batch, each provider id recorded right after its step. A
        batch that may already exist (a crash came between creating it and recording it) is looked for first."""
        bid, tag = row["id"], row["tag"]
        if row.get("input_file_id") is not None or (self.client.protocol == "anthropic" and lines is None):
            found = await self.client.find(tag, row.get("input_file_id"), row["lines"], row["created_at"])
            if found is not None:
                await asyncio.to_thread(sb.update, self.store, bid, state="submitted", provider_id=found.id,
                                        provider_status=found.status, submitted_at=time.time())
                self._note(f"found batch {found.id} at the provider, created before a stop: not created again")
                return
        if lines is None:
            lines = [self.client.encode(job_id, request)
                     for job_id, request in await asyncio.to_thread(sb.lines_of, self.store, bid)]
            if not lines:
                await asyncio.to_thread(sb.release, self.store, bid, "abandoned")
                return
        input_ref = row.get("input_file_id")
        try:
            if input_ref is None and self.client.protocol == "openai":
                input_ref = await self.client.upload(tag, lines)
                await asyncio.to_thread(sb.update, self.store, bid, state="uploaded", input_file_id=input_ref)
            state = await self.client.create(tag, input_ref, lines)
        except PermanentError as e:   # the provider refuses this batch: as sent, it never will take it
            await asyncio.to_thread(sb.release, self.store, bid, "abandoned", detail=str(e)[:500])
            raise
        await asyncio.to_thread(sb.update, self.store, bid, state="submitted", provider_id=state.id,
                                provider_status=state.status, submitted_at=time.time())
        self.submitted += 1

    async def _collect(self, row: dict[str, Any], state: BatchState) -> None:
        """Read an ended batch's results into the store, then close it (lines it did not answer: pending)."""
        await asyncio.to_thread(sb.update, self.store, row["id"], state="ended", ended_at=time.time())
        fatal: LineResult | None = None
        shapes = {job_id: request["shape"] for job_id, request in
                  await asyncio.to_thread(sb.lines_of, self.store, row["id"]) if "shape" in request}
        async for chunk in self.client.results(state):
            outcomes = [self._outcome(line, state, shapes.get(line.custom_id)) for line in chunk]
            fatal = fatal or next((line for line in chunk if line.fate == "fatal"), None)
            answered, other = await asyncio.to_thread(sb.record_lines, self.store, row["id"], self.run_id, outcomes)
            self.answered += answered
            self.line_failures += other
            self.usd += sum(o.usd for o in outcomes if o.answer is not None)
        back = await asyncio.to_thread(sb.release, self.store, row["id"], "collected", outcome=state.outcome,
                                       detail=state.errors or row["detail"])
        self.collected += 1
        if state.outcome == "failed":
            self.stop("misconfigured", f"batch {state.id} failed at the provider: {state.errors or 'no reason given'}; "
                      f"its {back} jobs are pending again: fix the job file and rerun")
        elif state.outcome == "cancelled" and row["detail"] == DEADLINE:
            self.late = True
        elif state.outcome == "cancelled" and not self._stopping:
            self.stop("interrupted", f"batch {state.id} was cancelled at the provider: its answers are kept, its "
                      f"{back} other jobs are pending again; rerun to submit them")
        elif fatal is not None:
            self.stop("fatal", f"the teacher refused a line of batch {state.id} for the whole account: "
                      f"{fatal.kind}: {fatal.detail}")
        elif back:
            self._note(f"batch {state.id} {state.outcome}: {back} lines without an answer go into a later batch")

    # --- lines --------------------------------------------------------------------------
    def _cost(self, request: dict[str, Any]) -> sb.LineCost:
        worst_in = input_token_bound(request["messages"])
        usd = self.guard.cost(worst_in, self.max_tokens) * self.factor if self.guard else 0.0
        return sb.LineCost(worst_in, self.max_tokens, usd)

    def _outcome(self, line: LineResult, state: BatchState, shape: dict[str, Any] | None = None) -> sb.LineOutcome:
        retry = self.job.retry.max_attempts
        if line.fate == "answered" and line.answer is not None:
            a = line.answer
            cached = a.meta.get("cached_tokens", 0)
            usage = TokenUsage(a.prompt_tokens or 0, a.completion_tokens or 0, cached,
                               a.meta.get("cache_write_tokens", 0))
            # priced by the hour its result is read: a batch's lines run at times the provider does not say
            cost = self.guard.priced(usage, self.guard.clock(), self.factor) if self.guard else None
            usd = cost.paid if cost else 0.0
            bad = check_answer(shape, a.content, a.finish_reason, self.models) if shape is not None else None
            if isinstance(bad, Invalid):   # paid, counted as an attempt; a later batch asks again, within the bound
                return sb.LineOutcome(line.custom_id, error_kind=bad.kind, message=bad.message, retry=True,
                                      permanent=True, max_attempts=1 + self.job.retry.invalid_answers,
                                      prompt_tokens=a.prompt_tokens, completion_tokens=a.completion_tokens, usd=usd,
                                      cached_tokens=cached, cost=cost)
            return sb.LineOutcome(line.custom_id, answer={
                "model": a.model, "content": a.content, "finish_reason": a.finish_reason, "reasoning": a.reasoning,
                "prompt_tokens": a.prompt_tokens, "completion_tokens": a.completion_tokens, "latency": 0.0,
                "raw": {**a.meta, "batch": state.id},
                "logprobs": pack(a.logprobs) if a.logprobs is not None else None}, prompt_tokens=a.prompt_tokens,
                completion_tokens=a.completion_tokens, usd=usd, cached_tokens=cached, cost=cost)
        message = f"{line.kind}: {line.detail}" if line.detail else line.kind
        if line.fate in ("expired", "cancelled"):   # never ran: no attempt, no charge; a later batch sends it
            return sb.LineOutcome(line.custom_id, error_kind=line.kind or line.fate, message=message, retry=True,
                                  attempted=False, max_attempts=retry)
        if line.fate == "permanent":
            return sb.LineOutcome(line.custom_id, error_kind=line.kind, message=message, permanent=True)
        # retry, and fatal (the run stops; the job stays pending for the rerun)
        return sb.LineOutcome(line.custom_id, error_kind=line.kind, message=message, retry=True,
                              max_attempts=retry if line.fate == "retry" else retry + 10 ** 6)

    # --- bookkeeping ----------------------------------------------------------------------
    async def _claimable(self) -> int:
        jobs, _ = await asyncio.to_thread(self.store.open_jobs, self.plan_key, self.max_seq)
        held = await asyncio.to_thread(self.store.leases_held, self.plan_key, None, self.max_seq)
        return jobs - sum(held.values())

    async def _finished(self) -> RunOutcome:
        counts = await asyncio.to_thread(self.store.count_states, self.plan_key, self.max_seq)
        left = counts["pending"] + counts["leased"]
        if not left:
            return RunOutcome("done")
        return RunOutcome("incomplete",
                          f"{left} of {sum(counts.values())} jobs have no answer yet; rerun to finish them")

    async def _report(self, open_now: list[dict[str, Any]]) -> None:
        if self.on_progress is None:
            return
        counts = await asyncio.to_thread(self.store.count_states, self.plan_key, self.max_seq)  # off the loop
        by_status: dict[str, int] = {}
        for r in open_now:
            by_status[r["provider_status"] or r["state"]] = by_status.get(r["provider_status"] or r["state"], 0) + 1
        progress = BatchProgress(sum(counts.values()), counts["done"], counts["failed"], by_status,
                                 sum(r["lines"] - r["succeeded"] - r["failed"] for r in open_now),
                                 self.submitted, self.collected, time.monotonic() - self.started, self.usd,
                                 self.notes)
        self.notes = []
        seen = (progress.total, progress.done, progress.failed, tuple(sorted(by_status.items())), progress.lines_open)
        if seen != self._last_seen or progress.notes:   # a line when something changed, not every poll
            self._last_seen = seen
            self.on_progress(progress)

    def _note(self, text: str) -> None:
        self.notes.append(text)

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake up at once when the run is asked to stop."""
        if not self._stopping:
            await sleep_unless_woken(self._wake, seconds)

