"""The `harvester` command: a thin mirror of the Python API (harvester.api)."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast

import typer
from rich.console import Console
from rich.markup import escape

from . import reasons
from .errors import ConfigError, HarvesterError
from .export.names import FORMATS

if TYPE_CHECKING:
    from .api import Harvester

# Never show locals in a crash's traceback: the teacher client's frames hold the API key (older typer
# releases showed them by default).
app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  pretty_exceptions_show_locals=False,
                  help="Harvest a teacher model's answers for distillation: prompt sets in, a clean dataset "
                       "out; every request paid for at most once and every answer kept.\n\n"
                       f"Exit codes: {reasons.summary()}; `harvester run --help` says what each means.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)

JobArg = typer.Argument(..., help="the job file (YAML or TOML)", exists=False, metavar="JOB")


def _version(value: bool) -> None:
    if value:
        from . import __version__
        print(f"harvester {__version__}")
        raise typer.Exit(0)


@app.callback()
def _main(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Harvest a teacher model's answers for distillation."""


def _guard(fn: Callable[[], int | None]) -> None:
    """Run a command; turn harvester errors into a message and their exit code."""
    try:
        code = fn() or 0
    except HarvesterError as e:
        err.print(f"[bold red]error:[/] {escape(str(e))}", markup=True, highlight=False)  # the text as is
        code = e.exit_code
    except KeyboardInterrupt:
        err.print("interrupted")
        code = reasons.EXIT_CODES["interrupted"]
    raise typer.Exit(code)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def _harvester(job: Path) -> Harvester:
    from .api import Harvester
    return Harvester.from_file(job)


# Click rewraps an epilog's paragraphs; "\b" keeps the table's lines as they are.
RUN_EPILOG = "Exit codes, by why the run ended:\n\n\b\n" + "\n".join(reasons.table(width=76))


@app.command(epilog=RUN_EPILOG)
def run(job: Path = JobArg,
        quiet: bool = typer.Option(False, "--quiet", "-q", help="no progress display"),
        dry_run: bool = typer.Option(False, "--dry-run", help="estimate requests, tokens, cost and duration of "
                                     "what is pending, and check what run would refuse; send and write nothing"),
        retry_failed: bool = typer.Option(False, "--retry-failed", help="send the failed jobs again too, "
                                          "permanent failures (4xx) included: after fixing their cause"),
        limit: int | None = typer.Option(None, "--limit", min=1, help="a trial: send only the plan's first N "
                                            "jobs (in plan order); a later run sends the rest"),
        mode: str | None = typer.Option(None, "--mode", help="sync or batch (the provider's batch API, at its "
                                           "batch price); default: teacher.mode"),
        detach: bool = typer.Option(False, "--detach", help="batch mode: submit, then exit (5); a later run or "
                                    "`status` reads the answers"),
        no_wait: bool = typer.Option(False, "--no-wait", help="outside the job's schedule, exit (6) instead of "
                                     "waiting for its window to open")) -> None:
    """Send every prompt of JOB that has no answer yet, and keep each answer as it arrives.

    Safe to stop at any moment (Ctrl-C, kill -9) and to rerun: answered prompts are never sent again.
    A quota reached, a teacher that looks down and an interruption each stop the run with an exit code
    of their own (below): rerun later to resume."""
    def go() -> int:
        from .display import ProgressDisplay, estimate_lines, estimate_table, plan_lines
        from .units import usd_text
        h = _harvester(job)
        if mode is not None:   # --mode stands for teacher.mode: the dry run prices and checks budgets by it too
            if mode not in ("sync", "batch"):
                raise ConfigError(f"--mode: {mode!r} is not a mode; give sync or batch")
            h.job.teacher.mode = cast(Literal["sync", "batch"], mode)   # checked just above
        if dry_run:
            est = h.estimate()
            out.print(estimate_table(est))
            for line in estimate_lines(est) + plan_lines(est):
                out.print(line, highlight=False)
            for problem in est["problems"]:
                err.print(f"[bold red]run would stop:[/] {problem}", markup=True, highlight=False)
            return est["exit_code"]
        batch = (mode or h.job.teacher.mode) == "batch"
        display = None if quiet or batch else ProgressDisplay()   # batch mode prints a line per change instead

        def on_plan(summary: Any) -> None:  # before anything is sent: a line, not a question (runs are unattended)
            for line in plan_lines(summary.__dict__):
                out.print(line, highlight=False)
        def on_batches(p: Any) -> None:
            if quiet:
                return
            states = ", ".join(f"{n} {s}" for s, n in sorted(p.open.items())) or "none open"
            cost = f"; {usd_text(p.usd)} so far at the batch price" if p.usd else ""
            out.print(f"batches: {states}; {p.lines_open:,} lines waiting; job: {p.done:,}/{p.total:,} done, "
                      f"{p.failed:,} failed{cost}" + "".join(f"\n  {n}" for n in p.notes), highlight=False,
                      markup=False)
        def on_wait(text: str) -> None:   # even with --quiet: a run that sends nothing says why
            err.print(text, highlight=False, markup=False)
        try:
            result = h.run_sync(on_progress=display, retry_failed=retry_failed, limit=limit, on_plan=on_plan,
                                mode=mode, detach=detach, on_batch_progress=on_batches, no_wait=no_wait,
                                on_wait=on_wait)
        finally:
            if display:
                display.close()
        s = result.status
        if not s:   # stopped before the plan was read (outside the schedule, --no-wait)
            (err if result.exit_code else out).print(f"run {result.reason}: {result.message}", highlight=False,
                                                     markup=False)
            return result.exit_code
        trial = f" (trial --limit {limit}: the first {min(limit, s['jobs']):,} of {s['jobs']:,} jobs)" if limit else ""
        out.print(f"run {result.reason}{trial}: sent {result.sent} requests, {result.answered} answered, "
                  f"{result.failed} failed; job: {s['done']}/{s['jobs']} done, {s['failed']} failed, "
                  f"{s['pending']} pending" + (f", {s['in_batches']} in open batches" if s.get("in_batches") else "")
                  + (f", {held} leased by other workers"
                     if (held := s.get("leased", 0) - s.get("in_batches", 0)) else "")
                  + (f", {s['truncated']:,} truncated (max_tokens)" if s.get("truncated") else ""), highlight=False)
        if result.errors:
            out.print("errors by class: " + ", ".join(f"{k} {v}" for k, v in sorted(result.errors.items())),
                      highlight=False)
        for note in result.notes:
            err.print(f"warning: {note}", highlight=False, markup=False)
        if result.message:
            # a server's words may hold brackets that rich would read as markup (or fail on)
            (err if result.exit_code else out).print(result.message, highlight=False, markup=False)
        return result.exit_code
    _guard(go)


@app.command()
def status(job: Path = JobArg, as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Show JOB's jobs by state, tokens, and errors by class."""
    def go() -> None:
        s = _harvester(job).status()
        if as_json:
            print(json.dumps(s, indent=2, default=str))
        else:
            from .display import status_table
            out.print(status_table(s))
    _guard(go)


@app.command()
def quota(job: Path = JobArg, as_json: bool = typer.Option(False, "--json", help="machine-readable")) -> None:
    """Show each of JOB's budgets: used, reserved (in flight), left, next reset; and the terms in force."""
    def go() -> None:
        from .display import quota_table
        from .terms import resolve_terms
        h = _harvester(job)
        report = h.quota()
        report["terms"] = resolve_terms(h.job.teacher).model_dump(mode="json")
        if as_json:
            print(json.dumps(report, indent=2, default=str))
        else:
            out.print(quota_table(report))
    _guard(go)


@app.command()
def export(job: Path = JobArg,
           out_dir: Path | None = typer.Option(None, "--out", help="folder (default: the job's export.out)"),
           fmt: str | None = typer.Option(None, "--format", help=" | ".join(FORMATS)),
           workers: int | None = typer.Option(None, "--workers", min=1, max=64,
                                                 help="processes for the first pass (default: export.workers)"),
           test_size: float | None = typer.Option(None, "--test-size",
                                                     help="share of rows in the test split, 0 to <1 "
                                                          "(default: export.test_size)")) -> None:
    """Write JOB's answers as a training dataset: JSONL files and a HF dataset (save_to_disk).

    DIR is replaced whole: it must be new, empty, or a previous export of JOB."""
    def go() -> None:
        from .display import export_hint, export_table
        signal.signal(signal.SIGTERM, _interrupt)   # clean up the half-written folder, as on Ctrl-C
        if fmt is not None and fmt not in FORMATS:
            from .config import did_you_mean
            *head, last = FORMATS
            raise ConfigError(f"--format: unknown format {fmt!r}{did_you_mean(fmt, tuple(FORMATS))} "
                              f"(choose {', '.join(head)} or {last})")
        if test_size is not None and not 0 <= test_size < 1:
            raise ConfigError(f"--test-size: {test_size:g} is not a share of the rows; give a number from 0 to "
                              "below 1, e.g. 0.05")
        h = _harvester(job)
        h.export(out_dir, fmt, workers, test_size)
        report = h.last_export
        assert report is not None  # export() sets it
        out.print(export_table(report))
        for note in report.notes:
            out.print(note, highlight=False)
        hint = export_hint(report)
        if hint:                      # the last line: what dropped most rows, and the fix
            out.print(hint, highlight=False)
    _guard(go)


@app.command()
def report(job: Path = JobArg,
           out_file: Path | None = typer.Option(None, "--out", help="the HTML file (default: JOB-report.html "
                                                "beside the store); only a new file or a report harvester wrote"),
           watch: bool = typer.Option(False, "--watch", help="rewrite it every few seconds while a run goes on; "
                                      "the page reloads itself; Ctrl-C stops"),
           every: float = typer.Option(3.0, "--every", help="seconds between rewrites with --watch")) -> None:
    """Draw JOB's harvest as one offline HTML page: rate against the limit, errors, latency, spend and
    budgets, batches, the export's funnel and lengths, runs and terms. Open it in any browser."""
    def go() -> None:
        h = _harvester(job)
        signal.signal(signal.SIGTERM, _interrupt)   # stop watching as on Ctrl-C
        written: list[Path] = []

        def on_write(path: Path) -> None:
            if not written:  # once: watch mode rewrites quietly
                out.print(f"report: {path.resolve().as_uri()}", highlight=False)
                if watch:
                    out.print(f"watching: rewritten every {every:g} s, the page reloads itself; Ctrl-C stops",
                              highlight=False)
            written.append(path)
        h.report(out_file, watch=watch, every=every, on_write=on_write)
    _guard(go)


@app.command()
def sim(port: int = typer.Option(8765, help="port on 127.0.0.1 (0: any free port)"),
        latency: float = typer.Option(0.0, help="mean seconds per answer"),
        jitter: float = typer.Option(0.0, help="± seconds around the mean latency"),
        rpm: float | None = typer.Option(None, help="requests/min, enforced per second (429 past it)"),
        tpm: float | None = typer.Option(None, help="tokens/min (prompt + max_tokens), enforced per second"),
        no_headers: bool = typer.Option(False, "--no-headers", help="send no x-ratelimit-* headers"),
        error_rate: float = typer.Option(0.0, help="share of 5xx answers"),
        drop_rate: float = typer.Option(0.0, help="share of dropped connections"),
        garbage_rate: float = typer.Option(0.0, help="share of unparseable 200 bodies"),
        slow_rate: float = typer.Option(0.0, help="share of answers delayed by --slow-seconds"),
        slow_seconds: float = typer.Option(30.0, help="delay of a slow answer"),
        api_key_env: str | None = typer.Option(None, help="require the key in this variable (else 401)"),
        quota_exhausted: bool = typer.Option(False, help="answer every request with 429 insufficient_quota"),
        reasoning: bool = typer.Option(False, help="answer as a reasoning model (a reasoning_content trace)"),
        refusal_rate: float = typer.Option(0.0, help="share of answers that are a refusal (the export's filters "
                                           "drop them)"),
        empty_rate: float = typer.Option(0.0, help="share of answers that are empty"),
        invalid_json_rate: float = typer.Option(0.0, help="with a response schema: share of answers that are not "
                                                "JSON (prose around the object)"),
        missing_field_rate: float = typer.Option(0.0, help="with a response schema: share missing a required field"),
        truncated_json_rate: float = typer.Option(0.0, help="with a response schema: share cut off mid-object "
                                                  "(finish_reason length)"),
        no_logprobs: bool = typer.Option(False, "--no-logprobs", help="send no logprobs even when asked (as a "
                                         "server that ignores the parameter)"),
        log: Path | None = typer.Option(None, help="JSONL log of every request received (answers with their "
                                        "prompt, cached and completion tokens)"),
        cache_slots: int = typer.Option(4, min=0, help="prompt cache: long first messages (1,024 tokens and more) "
                                        "it holds, reported as cached tokens when seen again (0: none)"),
        cache_ttl: float = typer.Option(300.0, help="prompt cache: seconds a first message stays after its last use"),
        batch_delay: float = typer.Option(0.0, help="batch APIs: seconds from a batch's creation to its end (its "
                                          "lines finish evenly over it)"),
        batch_error_rate: float = typer.Option(0.0, help="share of batch lines failing transiently (500; may pass "
                                               "when sent again)"),
        batch_invalid_rate: float = typer.Option(0.0, help="share of batch custom_ids whose line always fails "
                                                 "(400)"),
        batch_expire_after: float | None = typer.Option(None, help="a batch expires this many seconds after "
                                                           "its creation, keeping the lines done (default 24 h)"),
        batch_enqueued_tokens: int | None = typer.Option(None, help="prompt tokens of unfinished batches past "
                                                            "which a new batch is refused"),
        batch_max_lines: int | None = typer.Option(None, min=1, help="requests per batch (default: OpenAI "
                                                      "50,000, Anthropic 100,000)"),
        batch_max_bytes: int | None = typer.Option(None, min=1, help="bytes per batch input (default: OpenAI "
                                                      "200 MB, Anthropic 256 MB)"),
        ready_file: Path | None = typer.Option(None, help="write the base URL here once listening"),
        seed: int = typer.Option(0, help="seed for latency and faults")) -> None:
    """Serve a local OpenAI-compatible teacher (deterministic answers) for demos, dry runs and tests.

    It also serves OpenAI's Files + Batch API (/v1/files, /v1/batches) and Anthropic's Message Batches
    (/v1/messages/batches), whose lines get the answers the chat endpoint would give. The n-th answer to
    the same messages is the n-th of a fixed series, so the samples of one prompt differ, and a fresh
    simulator answers a harvest as the last one did."""
    def go() -> None:
        from .sim import SimConfig, serve_forever
        key = None
        if api_key_env:
            key = os.environ.get(api_key_env)
            if not key:
                raise ConfigError(f"--api-key-env: environment variable {api_key_env} is not set")
        cfg = SimConfig(latency=latency, jitter=jitter, rpm=rpm, tpm=tpm, headers=not no_headers,
                        error_rate=error_rate, drop_rate=drop_rate, garbage_rate=garbage_rate,
                        slow_rate=slow_rate, slow_seconds=slow_seconds, api_key=key,
                        quota_exhausted=quota_exhausted, reasoning=reasoning, refusal_rate=refusal_rate,
                        empty_rate=empty_rate, seed=seed, invalid_json_rate=invalid_json_rate,
                        missing_field_rate=missing_field_rate, truncated_json_rate=truncated_json_rate,
                        logprobs=not no_logprobs,
                        log_path=str(log) if log else None, batch_delay=batch_delay,
                        batch_error_rate=batch_error_rate, batch_invalid_rate=batch_invalid_rate,
                        batch_expire_after=batch_expire_after, batch_enqueued_tokens=batch_enqueued_tokens,
                        batch_max_lines=batch_max_lines, batch_max_bytes=batch_max_bytes, cache_slots=cache_slots,
                        cache_ttl=cache_ttl)
        serve_forever(cfg, port=port, ready_file=ready_file)
    _guard(go)


@app.command()
def demo(job: Path | None = typer.Option(None, help="job file (default: jobs/demo.yaml)")) -> None:
    """Start the built-in simulator, harvest prompts/demo.yaml, export to data/demo/, print a summary."""
    def go() -> int:
        from .demo import run_demo
        return run_demo(job, out)
    _guard(go)


def main() -> None:
    app(prog_name="harvester")


if __name__ == "__main__":
    main()
