"""`harvester demo`: the whole path on the built-in simulator, in one command."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from .api import Harvester
from .config import load_job
from .display import ProgressDisplay, export_table
from .errors import ConfigError
from .sim import SimConfig, running


def find_demo_job() -> Path:
    for base in (Path.cwd(), Path(__file__).resolve().parent.parent):
        candidate = base / "jobs" / "demo.yaml"
        if candidate.is_file():
            return candidate
    raise ConfigError("jobs/demo.yaml not found: run the demo from the harvester checkout")


def run_demo(job_path: Path | None, console: Console) -> int:
    job = load_job(job_path or find_demo_job())
    with running(SimConfig(model=job.teacher.model, latency=0.05, jitter=0.03)) as sim:
        job.teacher.base_url = sim.url
        h = Harvester(job)
        console.print(f"simulator at {sim.url}; harvesting {job.prompts[0].path.name} into {job.store}",
                      highlight=False)
        display = ProgressDisplay(plain_interval=2.0)
        try:
            result = h.run_sync(on_progress=display)
        finally:
            display.close()
        h.export()
        report = h.last_export
        assert report is not None  # export() sets it
        status = result.status
        console.print(export_table(report))
        console.print(
            f"\n[bold]demo {result.reason}[/]: {status['jobs']} prompts, {status['done']} answers, "
            f"{status['failed']} failures; {result.sent} requests sent this run "
            f"({sim.stats()['requests']} seen by the simulator); tokens {status['prompt_tokens']} in + "
            f"{status['completion_tokens']} out\n"
            f"dataset: {report.out}  (train.jsonl, hf/)   store: {h.store.describe()}\n"
            f"report: {h.report().resolve().as_uri()}  (open it in a browser)", highlight=False)
        h.close()
        return result.exit_code
