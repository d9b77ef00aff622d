"""The Python API. The CLI calls this and nothing else.

    from harvester import Harvester
    h = Harvester.from_file("jobs/capitals.yaml")
    result = h.run_sync()          # or: await h.run()
    print(h.status())
    ds = h.export()                # a datasets.DatasetDict: train, and test if there is one
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__, cacheorder, loop, plans, pricing, providers, reasons
from .clock import utc_now
from .config import Job, load_job
from .errors import ConfigError, HarvesterError
from .gcpause import frozen_heap
from .hashing import content_hash
from .logprobs import wanted
from .prompts import plan
from .quota import QuotaGuard, check_quota_config, prices_for, request_cost
from .reasons import EXIT_CODES  # re-exported: harvester.api.EXIT_CODES, as it always was
from .results import EarlierPlans, Estimate, LedgerCost, Provenance, QuotaReport, Status, StoreStatus
from .schedule import RunSchedule, run_schedule
from .shape_load import shapes_for
from .store import Store, ledger, sqlite_path
from .terms import check_terms
from .workers import dead_after, origin, process_gone, worker_id

if TYPE_CHECKING:  # slow to import: datasets only for `export`; the SDK (crawler, batches) only to send
    import datasets

    from .batches import BatchProgress, BatchRunner
    from .crawler import Crawler, Progress, RunOutcome
    from .export.pipeline import ExportReport

@dataclass
class PlanSummary:
    plan_key: str
    jobs: int
    new: int
    rows: int = 0                    # job specs read (prompts × samples), duplicate rows included
    merged: int = 0                  # duplicate rows merged into one job (the same request)
    earlier: EarlierPlans | None = None     # earlier plans with answers, and what changed (harvester.plans)
    limit: int | None = None         # a trial run: only the plan's first `limit` jobs are sent


@dataclass
class RunResult:
    reason: str                      # why the run ended: a harvester.reasons name
    message: str
    sent: int                        # requests sent by this run
    answered: int
    failed: int
    errors: dict[str, int]
    status: StoreStatus = field(default_factory=StoreStatus)
    notes: list[str] = field(default_factory=list)   # said once each: e.g. a teacher that sent no logprobs

    @property
    def exit_code(self) -> int:
        return reasons.exit_code(self.reason)


class Harvester:
    """One job: its config, its store, and the verbs run / status / export."""

    def __init__(self, job: Job, *, clock: Callable[[], datetime] | None = None) -> None:
        """`clock` (an aware UTC datetime) decides the quota's day and month; tests fake it."""
        self.job = job
        self.clock = clock or utc_now
        self._store: Store | None = None
        self.last_export: ExportReport | None = None
        self._crawler: Crawler | None = None
        self._plan_key: str | None = None
        self.job_file: Path | None = None     # where the job was read from, if from a file

    @classmethod
    def from_file(cls, path: str | Path) -> Harvester:
        h = cls(load_job(path))
        h.job_file = Path(path)
        return h

    @property
    def store(self) -> Store:
        if self._store is None:
            assert self.job.store is not None
            self._store = Store(self.job.store)
            self._store.bind_job(self.job.name)
        return self._store

    def __enter__(self) -> Harvester:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- plan ---------------------------------------------------------------------------
    def plan_key(self) -> str:
        """The key of this job file's plan: a hash of its jobs' ids, read from its prompt sets. Every
        command acts on this plan, not on whichever plan the store saw last (an edited copy of the job
        file, planned or dry-run since, must not change what `export` or `status` of this one see).
        Writes nothing. Reading 1M prompts takes ~20 s, so the store remembers the key of each
        fingerprint it planned (prompt files' sizes and mtimes, model, params, samples)."""
        if self._plan_key is None:
            known = self.store.get_meta(self._fingerprint_key()) if self.store_exists() else None
            if known is None:
                digest = hashlib.sha256()
                for spec in plan(self.job):
                    digest.update(spec.id.encode())
                known = digest.hexdigest()[:32]
            self._plan_key = known
        return self._plan_key

    def _fingerprint_key(self) -> str:
        files = []
        for prompt_set in self.job.prompts:
            paths = sorted(p for p in prompt_set.path.rglob("*") if p.is_file()) if prompt_set.path.is_dir() \
                else [prompt_set.path]
            for path in paths:
                try:
                    st = path.stat()
                except OSError:
                    return "plan_of:unreadable"      # never stored: the plan is read (and the error named)
                files.append([str(path.resolve()), st.st_size, st.st_mtime_ns])
            files.append([prompt_set.samples, prompt_set.format])
        return "plan_of:" + content_hash({"files": files, "model": self.job.teacher.model,
                                          "params": self.job.teacher.params})

    def store_exists(self) -> bool:
        """False for a SQLite store whose file was never created (nothing was ever planned)."""
        path = sqlite_path(self.job.store or "")
        return path is None or path.exists()

    def plan(self) -> PlanSummary:
        """Read the prompt sets and add their jobs to the store (idempotent: existing jobs stay).
        Keeps the plan's description (`plan:<key>` in meta) and says which earlier plans hold answers."""
        plan_key = self.plan_key()
        meta_key = plans.META_PREFIX + plan_key
        description = plans.decode(self.store.get_meta(meta_key))
        if self.store.get_meta("plan_key") == plan_key and description is not None:
            new = 0
        else:
            reader = plans.PlanReader(self.job)
            new = self.store.plan(cacheorder.grouped(reader, self.job.cache_order), plan_key)
            # A prompt repeated in the files is one job: count what the store holds, not what was read.
            description = reader.description(self.store.count_jobs(plan_key))
            self.store.set_meta(meta_key, plans.encode(description))
        fingerprint = self._fingerprint_key()
        if fingerprint != "plan_of:unreadable":
            self.store.set_meta(fingerprint, plan_key)
        others = self.store.plans_with_answers(exclude=plan_key)
        earlier = plans.earlier_plans(others, description, {p["plan_key"]: plans.decode(
            self.store.get_meta(plans.META_PREFIX + p["plan_key"])) for p in others[:1]})
        return PlanSummary(plan_key, self.store.count_jobs(plan_key), new, rows=description.get("rows", 0),
                           merged=description.get("merged", 0), earlier=earlier)

    # --- run ----------------------------------------------------------------------------
    async def run(self, *, on_progress: Callable[[Progress], None] | None = None,
                  handle_signals: bool = True, retry_failed: bool = False, limit: int | None = None,
                  on_plan: Callable[[PlanSummary], None] | None = None, mode: str | None = None,
                  detach: bool = False, on_batch_progress: Callable[[BatchProgress], None] | None = None,
                  no_wait: bool = False, on_wait: Callable[[str], None] | None = None) -> RunResult:
        """Send every job not yet answered; returns why the run ended (see `RunResult.exit_code`).

        `retry_failed`: send the plan's failed jobs again too, permanent failures included (after
        fixing what made them fail). `limit`: a trial, sending only the plan's first `limit` jobs in
        plan order (the plan stays whole; a later run sends the rest). `on_plan` is told the plan (its
        duplicates merged, its earlier versions) once planned, before anything is sent. `mode` overrides
        `teacher.mode`: "batch" sends through the provider's batch API (harvester.batches), and `detach`
        then returns once everything is submitted. Outside the job's `schedule` nothing is sent: the run
        tells `on_wait` when it opens and waits for it, or with `no_wait` returns at once ("closed"),
        and, when a window closes while it runs, does the same."""
        if limit is not None and limit < 1:
            raise ConfigError(f"--limit: {limit} is not a number of jobs; give 1 or more")
        mode = mode or self.job.teacher.mode
        if mode not in ("sync", "batch"):
            raise ConfigError(f"--mode: {mode!r} is not a mode; give sync or batch")
        terms = check_terms(self.job.teacher)  # before anything is planned or sent
        if mode == "batch":
            from .batches import check_batch_config
            check_batch_config(self.job)
        # Config errors before anything is written: a run refused for bad input leaves the store as it was.
        self.job.teacher.api_key()
        check_quota_config(self.job)
        schedule = run_schedule(self.job.schedule, prices_for(self.job), self.job.teacher.model)
        if schedule is not None and not schedule.open(self.clock()):
            if no_wait:   # before anything is written
                now = self.clock()
                opens = schedule.next_open(now)
                when = schedule.describe(opens, now) if opens else "no time within a week"
                return RunResult("closed", f"outside the schedule: nothing was sent; it opens at {when}: rerun "
                                 "then, or without --no-wait to wait for it", 0, 0, 0, {})
            await self._wait_for(schedule, on_wait)
        summary = self.plan()
        store = self.store
        if retry_failed:
            store.reset_failures(summary.plan_key)
        max_seq = store.seq_cutoff(summary.plan_key, limit) if limit is not None else None
        summary.limit = limit if max_seq is not None else None
        if on_plan is not None:
            on_plan(summary)
        store.reset_retryable_failures(summary.plan_key)
        before = store.count_states(summary.plan_key, max_seq)
        idle = not before["pending"] + before["leased"]
        if not idle:  # the SDK's import takes seconds: done before our run exists, or peers may take us for dead
            from .crawler import Crawler
            from .teacher import Teacher
            teacher = Teacher(self.job.teacher)
        owner = worker_id()
        run_id = store.start_run(job_name=self.job.name, owner=owner, origin=origin(), version=__version__,
                                 config_hash=self.config_hash(), plan_key=summary.plan_key,
                                 terms=terms.model_dump(mode="json"))
        if idle:  # nothing left to send: no teacher, no crawler, not even the SDK's import
            store.end_run(run_id, exit_reason="done", sent=0, answered=0, rate_limited=0)
            return RunResult("done", "", 0, 0, 0, {}, store.status(summary.plan_key))
        try:
            guard = QuotaGuard(self.job, store, run_id, clock=self.clock)
        except BaseException:
            store.end_run(run_id, exit_reason="error")
            await teacher.aclose()
            raise
        if guard.active:
            ledger.expire_lost(store, stale_before=time.time() - self.job.lease_seconds)
        if mode == "batch":
            result = await self._run_batches(summary.plan_key, run_id, guard, max_seq, detach, on_batch_progress,
                                             handle_signals)
            if result.reason != "deadline":
                await teacher.aclose()
                store.end_run(run_id, exit_reason=result.reason, answered=result.answered)
                return result
            # batch.deadline passed: what the batches did not answer is sent now, at the synchronous price
            before = store.count_states(summary.plan_key, max_seq)
        crawler = Crawler(self.job, store, teacher, plan_key=summary.plan_key, run_id=run_id, owner=owner,
                          quota=guard if guard.active else None, total=sum(before.values()),
                          done_before=before["done"], failed_before=before["failed"], max_seq=max_seq,
                          schedule=schedule, no_wait=no_wait, on_wait=on_wait, clock=self.clock)
        self._crawler = crawler
        learned_key = "learned_rate:" + content_hash([self.job.teacher.base_url, self.job.teacher.model])
        if (learned := store.get_meta(learned_key)) is not None:   # the last run's rate, not the slow start
            crawler.limiter.start_from(**json.loads(learned))
        restore = self._install_signals(crawler) if handle_signals else None
        outcome: RunOutcome | None = None
        try:
            with frozen_heap():
                outcome = await crawler.run(on_progress)
        finally:
            if restore:
                restore()
            await teacher.aclose()
            snapshot = crawler.limiter.snapshot()
            store.end_run(run_id, exit_reason=outcome.reason if outcome else "error", sent=crawler.sent,
                          answered=crawler.answered, rate_limited=crawler.rate_limited, limiter=snapshot)
            if snapshot["learned"] and crawler.sent and outcome is not None and outcome.reason != "unavailable":
                store.set_meta(learned_key, json.dumps(snapshot["learned"]))   # not a rate cut by an outage
            self._crawler = None
        return RunResult(outcome.reason, outcome.message, outcome.sent, outcome.answered, outcome.failed,
                         dict(outcome.errors), store.status(summary.plan_key), outcome.notes)

    async def _wait_for(self, schedule: RunSchedule, on_wait: Callable[[str], None] | None) -> None:
        """Sleep until the schedule opens (a minute at a time, by the run's clock), having said until when."""
        now = self.clock()
        opens = schedule.next_open(now)
        if on_wait is not None:
            on_wait(f"waiting until {schedule.describe(opens, now) if opens else 'no time within a week'}")
        while not schedule.open(now := self.clock()):
            opens = schedule.next_open(now)
            await asyncio.sleep(max(0.05, min(60.0, (opens - now).total_seconds() if opens else 60.0)))

    async def _run_batches(self, plan_key: str, run_id: int, guard: QuotaGuard, max_seq: int | None, detach: bool,
                           on_progress: Callable[[BatchProgress], None] | None, handle_signals: bool) -> RunResult:
        from .batch_client import client_for
        from .batches import BatchRunner, protocol_for
        runner = BatchRunner(self.job, self.store, client_for(self.job.teacher, protocol_for(self.job)),
                             plan_key=plan_key, run_id=run_id, guard=guard if guard.active else None, max_seq=max_seq,
                             detach=detach, on_progress=on_progress)
        restore = self._install_signals(runner) if handle_signals else None
        outcome: RunOutcome | None = None
        try:
            outcome = await runner.run()
        except BaseException:
            self.store.end_run(run_id, exit_reason="error", answered=runner.answered)
            raise
        finally:
            if restore:
                restore()
        return RunResult(outcome.reason, outcome.message, 0, outcome.answered, outcome.failed, {},
                         self.store.status(plan_key))

    def run_sync(self, **kwargs: Any) -> RunResult:
        return loop.run(self.run(**kwargs))

    def stop(self) -> None:
        """Ask a running `run()` to stop gracefully (thread-safe from the loop's thread)."""
        if self._crawler is not None:
            self._crawler.stop()

    @staticmethod
    def _install_signals(crawler: Crawler | BatchRunner) -> Callable[[], None] | None:
        from .crawler import Crawler  # loaded already: a crawler or a batch runner is running
        if threading.current_thread() is not threading.main_thread():
            return None
        loop = asyncio.get_running_loop()
        hits = {"n": 0}

        def on_signal() -> None:
            hits["n"] += 1
            crawler.stop("interrupted", "stopped by a signal; rerun to resume")
            if hits["n"] > 1 and isinstance(crawler, Crawler):  # a second Ctrl-C: do not wait for answers in flight
                crawler.cancel_sending()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

        def restore() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return restore

    def config_hash(self) -> str:
        return content_hash(self.job.model_dump(mode="json", exclude={"teacher": {"api_key_env"}}))

    # --- quota ------------------------------------------------------------------------
    def quota(self) -> QuotaReport:
        """Each budget: used, reserved, left, next reset; and the ledger's totals."""
        from .quota import report
        return report(self.job, self.store if self.store_exists() else None, clock=self.clock)

    def estimate(self) -> Estimate:
        """The dry run: requests, tokens, cost and duration of what is still pending, before anything
        is spent, and whether `run` would refuse or stop (`exit_code`, `problems`). Writes nothing.

        `worst` bounds one attempt per pending job (hard input bound + max_tokens); `expected` uses the
        averages observed so far (calibrated input estimate, mean completion tokens), when there are any."""
        from .estimate import dry_run
        est = dry_run(self.job, self.store if self.store_exists() else None, clock=self.clock)
        if self._plan_key is None:
            self._plan_key = est["plan_key"]
        return est

    # --- status and export --------------------------------------------------------------
    def status(self) -> Status:
        """This job file's plan: jobs by state, tokens, errors, runs, live workers. A job never run
        reports `planned: False` and creates no store."""
        plan_key = self.plan_key()
        if not self.store_exists():
            return {"job": self.job.name, "store": Store.describe_url(self.job.store or ""), "planned": False,
                    "plan_key": plan_key}
        s = self.store.status(plan_key, dead_after=dead_after(self.job.lease_seconds))
        s["workers"] = [w for w in s["workers"] if not process_gone(w)]  # killed on this machine
        run = s.get("last_run")
        if run and run.get("ended_at") is None and run["id"] not in {w["id"] for w in s["workers"]}:
            run["exit_reason"] = "crashed"  # not ended, yet not live: killed; the next run takes its jobs back
        description = plans.decode(self.store.get_meta(plans.META_PREFIX + plan_key)) or {}
        return {"job": self.job.name, "store": self.store.describe(), "planned": s["jobs"] > 0,
                "plan_key": plan_key, **s,
                "merged": description.get("merged", 0),  # duplicate prompt rows merged into one job at planning
                "cost": self._ledger_cost()}

    def _ledger_cost(self) -> LedgerCost | None:
        """The quota ledger's totals (kept with budgets): paid, at list price, and what each saving took off."""
        total = ledger.totals(self.store, ["total"])["total"]
        if not total["requests"]:
            return None
        return {"usd": float(total["usd"]), "usd_list": float(total["usd_list"]),
                "saved_cache": float(total["saved_cache"]), "saved_hour": float(total["saved_hour"]),
                "saved_batch": float(total["saved_batch"]), "cached_tokens": int(total["cached_tokens"])}

    def export(self, out: str | Path | None = None, format: str | None = None,
               workers: int | None = None, test_size: float | None = None) -> datasets.DatasetDict:
        """Write the dataset folder (see the README's export layout) and return its splits: `train`, and
        `test` when there is one. `workers` and `test_size` override export.workers and export.test_size."""
        import datasets

        from .export.card import public_provenance, render_card
        from .export.pipeline import run_export
        from .export.shaped import ShapedColumns
        from .export.source import StoreSource
        from .report import export_plots
        from .report.data import EXPORT_META, export_record

        cfg = self.job.export if workers is None else self.job.export.model_copy(update={"workers": workers})
        if test_size is not None:
            if not 0 <= test_size < 1:
                raise ConfigError(f"test_size: {test_size:g} is not a share of the rows; give 0 <= test_size < 1")
            cfg = cfg.model_copy(update={"test_size": test_size})
        target = Path(out) if out is not None else cfg.out
        assert target is not None
        store = self.store
        plan_key = self.plan_key()

        def card(report: ExportReport) -> str:
            return render_card(name=self.job.name, teacher=self.job.teacher.model_dump(mode="json"),
                               report=report.as_dict(), version=__version__)

        source = StoreSource(store.url, plan_key, cfg.samples, store)
        shapes = list({json.dumps(s.stored(), sort_keys=True): s for s in shapes_for(self.job) if s}.values())
        if shapes and "on" not in cfg.dedup.model_fields_set:
            # labels and extractions repeat across prompts ({"label": "pos"}): as answers alone they would be
            # near-duplicates of each other, so shaped answers compare with their prompts unless told otherwise
            cfg = cfg.model_copy(update={"dedup": cfg.dedup.model_copy(update={"on": "prompt+answer"})})
        shaped = ShapedColumns(shapes, logprobs=wanted(self.job.teacher.params) is not None,
                               tokenizer=providers.tokenizer_for(self.job.teacher.model))
        self.last_export = run_export(source, target, cfg, fmt=format, name=self.job.name, card=card,
                                      protected=self._protected_paths(),
                                      provenance=public_provenance(self.provenance()), shaped=shaped,
                                      plots=export_plots)
        # the report reads the export from the store: the stats.json just written, where, and when
        store.set_meta(EXPORT_META + plan_key, export_record(self.last_export.as_dict(),
                                                             str(self.last_export.out), time.time()))
        return datasets.load_from_disk(str(target / "hf"))

    def report(self, out: str | Path | None = None, *, watch: bool = False, every: float = 3.0,
               on_write: Callable[[Path], None] | None = None) -> Path:
        """Write the harvest's report: one self-contained HTML page with plots, from the store alone (default:
        `<job>-report.html` beside the SQLite store). It is written only where nothing is, or over a report
        harvester wrote. `watch`: rewrite it every `every` seconds, the page reloading itself, until Ctrl-C
        (KeyboardInterrupt)."""
        from .report import watch as watch_report
        from .report import write_report
        from .report.page import default_out

        if not self.store_exists():
            raise ConfigError(f"report: job {self.job.name!r} has no store yet "
                              f"({Store.describe_url(self.job.store or '')}): `harvester run` it first")
        if not every > 0:
            raise ConfigError(f"--every: {every:g} is not a number of seconds; give more than 0, e.g. 3")
        target = Path(out) if out is not None else default_out(sqlite_path(self.job.store or ""), self.job.name)
        protected = self._protected_paths()
        if watch:
            watch_report(self, target, protected, every=every, on_write=on_write)
        else:
            write_report(self, target, protected)
            if on_write is not None:
                on_write(target)
        return target

    def _protected_paths(self) -> list[tuple[str, Path]]:
        """What an export must never replace: the store (its -wal and -shm files beside it), the job
        file, the prompt sets and eval sets."""
        paths = [("the prompt set", p.path) for p in self.job.prompts]
        paths += [("the eval set", p) for p in self.job.export.decontaminate.evals.values()]
        db = sqlite_path(self.job.store or "")
        if db is not None:
            paths.append(("the store", db))
        if self.job_file is not None:
            paths.append(("the job file", self.job_file))
        return paths

    def provenance(self) -> Provenance:
        """Where this plan's answers came from, and what they cost: the one source the dataset card and
        `stats.json` both read. The store aggregates the answers by channel (sync, batch); each channel is
        priced here at what it paid (a batch at `batch_factor` of the synchronous price), and batch answers
        also at the synchronous price, to say what batch mode saved. `cost` is None when no prices are known."""
        p = self.store.provenance(self.plan_key())
        prices = prices_for(self.job)
        if prices is None:
            p["cost"] = None
            return p
        from .batches import batch_factor
        factor = batch_factor(self.job)
        for name, c in p["channels"].items():   # the hour each answer was sent is the ledger's to know
            usage = pricing.TokenUsage(c["prompt_tokens"], c["completion_tokens"], c["cached_tokens"])
            c["usd_at_sync_price"] = pricing.cost(prices, usage, None).paid
            c["usd"] = pricing.cost(prices, usage, None, batch_factor=factor if name == "batch" else 1.0).paid
        usd = sum(c["usd"] for c in p["channels"].values())
        at_sync = sum(c["usd_at_sync_price"] for c in p["channels"].values())
        listed = request_cost(prices, p["prompt_tokens"], p["completion_tokens"])
        spent = self._ledger_cost()
        p["cost"] = {"input_per_mtok": prices.rates.input, "output_per_mtok": prices.rates.output,
                     "cached_input_per_mtok": prices.rates.cached_input, "batch_factor": factor, "usd": usd,
                     "usd_at_sync_price": at_sync, "saved_usd": at_sync - usd,
                     "ledger_usd": spent["usd"] if spent else 0.0,
                     "cached_tokens": sum(c["cached_tokens"] for c in p["channels"].values()), "usd_list": listed,
                     "saved_cache_usd": listed - at_sync,
                     "ledger": spent}
        return p
        factor = batch_factor(self.job)
        for name, c in p["channels"].items():
            at_sync = request_cost(prices, c["prompt_tokens"], c["completion_tokens"])
            c["usd"] = at_sync * factor if name == "batch" else at_sync
            c["usd_at_sync_price"] = at_sync
        usd = sum(c["usd"] for c in p["channels"].values())
        at_sync = sum(c["usd_at_sync_price"] for c in p["channels"].values())
        p["cost"] = {"input_per_mtok": prices.input_per_mtok, "output_per_mtok": prices.output_per_mtok,
                     "batch_factor": factor, "usd": usd, "usd_at_sync_price": at_sync, "saved_usd": at_sync - usd,
                     "ledger_usd": ledger.totals(self.store, ["total"])["total"]["usd"]}
        return p


__all__ = ["Harvester", "RunResult", "PlanSummary", "EXIT_CODES", "HarvesterError"]
