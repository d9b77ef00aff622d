"""The Python API. The CLI calls this and nothing else.

    from harvester import Harvester
    h = Harvester.from_file("jobs/capitals.yaml")
    result = h.run_sync()          # or: await h.run()
    print(h.status())
    ds = h.export()                # a datasets.Dataset (the train split)
"""

from __future__ import annotations

import asyncio
import hashlib
import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import __version__
from .config import Job, load_job
from .crawler import Crawler, Progress, RunOutcome, worker_id
from .errors import HarvesterError
from .hashing import content_hash
from .prompts import JobSpec, plan
from .store import Store
from .teacher import Teacher

if TYPE_CHECKING:  # datasets is slow to import: only `export` needs it
    import datasets

    from .export.pipeline import ExportReport

EXIT_CODES = {"done": 0, "fatal": 1, "error": 1, "quota": 3, "interrupted": 130}


@dataclass
class PlanSummary:
    plan_key: str
    jobs: int
    new: int


@dataclass
class RunResult:
    reason: str                      # done | quota | interrupted | fatal
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

    def __init__(self, job: Job) -> None:
        self.job = job
        self._store: Store | None = None
        self.last_export: "ExportReport | None" = None
        self._crawler: Crawler | None = None

    @classmethod
    def from_file(cls, path: str | Path) -> "Harvester":
        return cls(load_job(path))

    @property
    def store(self) -> Store:
        if self._store is None:
            assert self.job.store is not None
            self._store = Store(self.job.store)
            self._store.bind_job(self.job.name)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None

    # --- plan ---------------------------------------------------------------------------
    def specs(self) -> list[JobSpec]:
        return list(plan(self.job))

    def plan(self) -> PlanSummary:
        """Read the prompt sets and add their jobs to the store (idempotent: existing jobs stay)."""
        digest = hashlib.sha256()
        count = 0
        for spec in plan(self.job):  # first pass: validate every file and key the plan
            digest.update(spec.id.encode())
            count += 1
        plan_key = digest.hexdigest()[:32]
        if self.store.get_meta("plan_key") == plan_key:
            return PlanSummary(plan_key, count, 0)
        new = self.store.plan(plan(self.job), plan_key)
        return PlanSummary(plan_key, count, new)

    # --- run ----------------------------------------------------------------------------
    async def run(self, *, on_progress: Callable[[Progress], None] | None = None,
                  handle_signals: bool = True) -> RunResult:
        """Send every job not yet answered; returns why the run ended (see `RunResult.exit_code`)."""
        summary = self.plan()
        store = self.store
        teacher = Teacher(self.job.teacher)
        before = store.status(summary.plan_key)
        store.reset_retryable_failures(summary.plan_key)
        owner = worker_id()
        run_id = store.start_run(job_name=self.job.name, owner=owner, version=__version__,
                                 config_hash=self.config_hash(), plan_key=summary.plan_key,
                                 terms=None)
        crawler = Crawler(self.job, store, teacher, plan_key=summary.plan_key, run_id=run_id, owner=owner,
                          total=summary.jobs, done_before=before["done"],
                          failed_before=0)
        self._crawler = crawler
        restore = self._install_signals(crawler) if handle_signals else None
        outcome: RunOutcome | None = None
        try:
            outcome = await crawler.run(on_progress)
        finally:
            if restore:
                restore()
            await teacher.aclose()
            store.end_run(run_id, exit_reason=outcome.reason if outcome else "error",
                          sent=crawler.sent, answered=crawler.answered)
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

    # --- status and export --------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return {"job": self.job.name, "store": self.store.describe(), **self.store.status()}

    def export(self, out: str | Path | None = None, format: str | None = None) -> "datasets.Dataset":
        """Write the dataset folder and return its train split."""
        from .export.pipeline import run_export
        cfg = self.job.export
        target = Path(out) if out is not None else cfg.out
        assert target is not None
        report, dd = run_export(self.store.iter_records(samples=cfg.samples), target,
                                fmt=format or cfg.format, test_size=cfg.test_size, dedup=cfg.dedup)
        self.last_export = report
        return dd["train"]


__all__ = ["Harvester", "RunResult", "PlanSummary", "EXIT_CODES", "HarvesterError"]
