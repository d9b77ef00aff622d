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

from . import __version__
from .config import Job, load_job
from .crawler import Crawler, Progress, RunOutcome, worker_id
from .errors import ConfigError, HarvesterError
from .gcpause import frozen_heap
from .hashing import content_hash
from .prompts import JobSpec, plan
from .store import Store, sqlite_path
from .quota import QuotaGuard, check_quota_config, prices_for, utc_now
from .store import ledger
from .teacher import Teacher
from .terms import check_terms
from .tokens import TokenEstimator
from .workers import dead_after, origin, process_gone

if TYPE_CHECKING:  # datasets is slow to import: only `export` needs it
    import datasets

    from .export.pipeline import ExportReport

EXIT_CODES = {"done": 0, "incomplete": 1, "misconfigured": 1, "fatal": 1, "error": 1, "quota": 3, "unavailable": 4,
              "interrupted": 130}


@dataclass
class PlanSummary:
    plan_key: str
    jobs: int
    new: int


@dataclass
class RunResult:
    reason: str                      # done | incomplete | misconfigured | quota | unavailable | interrupted | fatal | error
    message: str
    sent: int                        # requests sent by this run
    answered: int
    failed: int
    errors: dict[str, int]
    status: dict[str, Any] = field(default_factory=dict)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.reason, 1)


class Harvester:
    """One job: its config, its store, and the verbs run / status / export."""

    def __init__(self, job: Job, *, clock: Callable[[], datetime] | None = None) -> None:
        """`clock` (an aware UTC datetime) decides the quota's day and month; tests fake it."""
        self.job = job
        self.clock = clock or utc_now
        self._store: Store | None = None
        self.last_export: "ExportReport | None" = None
        self._crawler: Crawler | None = None
        self._plan_key: str | None = None
        self.job_file: Path | None = None     # where the job was read from, if from a file

    @classmethod
    def from_file(cls, path: str | Path) -> "Harvester":
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

    def __enter__(self) -> "Harvester":
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
        """Read the prompt sets and add their jobs to the store (idempotent: existing jobs stay)."""
        plan_key = self.plan_key()
        new = 0 if self.store.get_meta("plan_key") == plan_key else self.store.plan(plan(self.job), plan_key)
        fingerprint = self._fingerprint_key()
        if fingerprint != "plan_of:unreadable":
            self.store.set_meta(fingerprint, plan_key)
        # A prompt repeated in the files is one job: count what the store holds, not what was read.
        return PlanSummary(plan_key, self.store.count_jobs(plan_key), new)

    # --- run ----------------------------------------------------------------------------
    async def run(self, *, on_progress: Callable[[Progress], None] | None = None,
                  handle_signals: bool = True, retry_failed: bool = False) -> RunResult:
        """Send every job not yet answered; returns why the run ended (see `RunResult.exit_code`).
        `retry_failed`: send the plan's failed jobs again too, permanent failures included (after
        fixing what made them fail)."""
        terms = check_terms(self.job.teacher)  # before anything is planned or sent
        # Config errors before anything is written: a run refused for bad input leaves the store as it was.
        self.job.teacher.api_key()
        check_quota_config(self.job)
        summary = self.plan()
        store = self.store
        teacher = Teacher(self.job.teacher)
        if retry_failed:
            store.reset_failures(summary.plan_key)
        store.reset_retryable_failures(summary.plan_key)
        before = store.status(summary.plan_key)
        owner = worker_id()
        run_id = store.start_run(job_name=self.job.name, owner=owner, origin=origin(), version=__version__,
                                 config_hash=self.config_hash(), plan_key=summary.plan_key,
                                 terms=terms.model_dump(mode="json"))
        try:
            guard = QuotaGuard(self.job, store, run_id, clock=self.clock)
        except BaseException:
            store.end_run(run_id, exit_reason="error")
            await teacher.aclose()
            raise
        if guard.active:
            ledger.expire_lost(store, stale_before=time.time() - self.job.lease_seconds)
        crawler = Crawler(self.job, store, teacher, plan_key=summary.plan_key, run_id=run_id, owner=owner,
                          quota=guard if guard.active else None, total=summary.jobs,
                          done_before=before["done"], failed_before=before["failed"])
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
                         dict(outcome.errors), store.status(summary.plan_key))

    def run_sync(self, **kwargs: Any) -> RunResult:
        return asyncio.run(self.run(**kwargs))

    def stop(self) -> None:
        """Ask a running `run()` to stop gracefully (thread-safe from the loop's thread)."""
        if self._crawler is not None:
            self._crawler.stop()

    @staticmethod
    def _install_signals(crawler: Crawler) -> Callable[[], None] | None:
        if threading.current_thread() is not threading.main_thread():
            return None
        loop = asyncio.get_running_loop()
        hits = {"n": 0}

        def on_signal() -> None:
            hits["n"] += 1
            crawler.stop("interrupted", "stopped by a signal; rerun to resume")
            if hits["n"] > 1:  # a second Ctrl-C: do not wait for answers in flight
                for task in list(crawler._sending):
                    task.cancel()

        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal)

        def restore() -> None:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)
        return restore

    def config_hash(self) -> str:
        return content_hash(self.job.model_dump(mode="json", exclude={"teacher": {"api_key_env"}}))

    # --- quota ------------------------------------------------------------------------
    def quota(self) -> dict[str, Any]:
        """Each budget: used, reserved, left, next reset; and the ledger's totals."""
        from .quota import report
        return report(self.job, self.store, clock=self.clock)

    def estimate(self) -> dict[str, Any]:
        """The dry run: requests, tokens and cost of what is still pending, before anything is spent.

        `worst` bounds one attempt per pending job (hard input bound + max_tokens); `expected` uses the
        averages observed so far (calibrated input estimate, mean completion tokens), when there are any."""
        from .crawler import input_token_bound
        summary = self.plan()
        store = self.store
        estimator = TokenEstimator()
        done_in = done_est = done_out = answered = 0
        for r in store.iter_records(summary.plan_key):
            if r.prompt_tokens is not None:
                done_in += r.prompt_tokens
                done_est += estimator.raw(r.messages)
                done_out += r.completion_tokens or 0
                answered += 1
        ratio = done_in / done_est if done_est else None
        mean_out = done_out / answered if answered else None
        max_out = self.job.teacher.max_tokens
        pending = worst_in = exp_in = 0.0
        for messages in store.iter_pending_messages(summary.plan_key):
            pending += 1
            worst_in += input_token_bound(messages)
            exp_in += estimator.raw(messages) * ratio if ratio else 0.0
        prices = prices_for(self.job)

        def usd(i: float, o: float) -> float | None:
            return None if prices is None else (i * prices.input_per_mtok + o * prices.output_per_mtok) / 1e6

        worst_out = pending * max_out if max_out is not None else None
        expected = None
        if ratio is not None and mean_out is not None:
            exp_out = pending * mean_out
            expected = {"input_tokens": round(exp_in), "output_tokens": round(exp_out),
                        "usd": usd(exp_in, exp_out), "from_answers": answered}
        return {"jobs": summary.jobs, "pending_requests": int(pending),
                "worst": {"input_tokens": int(worst_in), "output_tokens": worst_out,
                          "usd": usd(worst_in, worst_out) if worst_out is not None else None},
                "expected": expected, "prices": prices.model_dump() if prices else None,
                "note": "worst case counts one attempt per pending job; retries of billed failures add to it"}

    # --- status and export --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
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
        return {"job": self.job.name, "store": self.store.describe(), "planned": s["jobs"] > 0,
                "plan_key": plan_key, **s}

    def export(self, out: str | Path | None = None, format: str | None = None,
               workers: int | None = None, test_size: float | None = None) -> "datasets.DatasetDict":
        """Write the dataset folder (see the README's export layout) and return its splits: `train`, and
        `test` when there is one. `workers` and `test_size` override export.workers and export.test_size."""
        import datasets

        from .export.card import render_card
        from .export.pipeline import run_export
        from .export.source import StoreSource

        cfg = self.job.export if workers is None else self.job.export.model_copy(update={"workers": workers})
        if test_size is not None:
            if not 0 <= test_size < 1:
                raise ConfigError(f"test_size: {test_size:g} is not a share of the rows; give 0 <= test_size < 1")
            cfg = cfg.model_copy(update={"test_size": test_size})
        target = Path(out) if out is not None else cfg.out
        assert target is not None
        store = self.store
        plan_key = self.plan_key()

        def card(report: "ExportReport") -> str:
            provenance = store.provenance(plan_key)
            return render_card(name=self.job.name, teacher=self.job.teacher.model_dump(mode="json"),
                               report=report.as_dict(), provenance=provenance, cost=self._cost(provenance),
                               version=__version__)

        source = StoreSource(store.url, plan_key, cfg.samples, store)
        self.last_export = run_export(source, target, cfg, fmt=format, name=self.job.name, card=card,
                                      protected=self._protected_paths())
        return datasets.load_from_disk(str(target / "hf"))

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

    def _cost(self, provenance: dict[str, Any]) -> dict[str, Any] | None:
        prices = prices_for(self.job)
        if prices is None:
            return None
        usd = (provenance["prompt_tokens"] * prices.input_per_mtok
               + provenance["completion_tokens"] * prices.output_per_mtok) / 1e6
        ledger_usd = ledger.totals(self.store, ["total"])["total"]["usd"]
        return {**prices.model_dump(), "usd": usd, "ledger_usd": ledger_usd}


__all__ = ["Harvester", "RunResult", "PlanSummary", "EXIT_CODES", "HarvesterError"]
