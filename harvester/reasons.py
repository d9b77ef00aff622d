"""Why a run ended: the one vocabulary of run reasons, each with its exit code and meaning.

The crawler ends a run with one of these names (`RunOutcome.reason`), the store keeps it as the run's
`exit_reason`, the API turns it into an exit code (`EXIT_CODES`), the error classes carry the one they
end a command with, and the CLI's help lists them. Stdlib only: everything else imports it.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Reason:
    name: str
    exit_code: int | None       # None: never a process's exit (a run found killed, shown by `status`)
    meaning: str                # one line for `harvester run --help`
    headline: str | None = None  # the words for its exit code in `harvester --help`: one reason per code
    resumable: bool = False     # rerunning later resumes where the run stopped, nothing lost


# By exit code; the reasons that share one in the order EXIT_CODES has always listed them.
REASONS: tuple[Reason, ...] = (
    Reason("done", 0, "every job of the plan is answered, or failed with its reason recorded", "done"),
    Reason("incomplete", 1, "jobs are still held by a worker that is neither live nor known dead: rerun, or "
                            "wait lease_seconds for their leases to expire"),
    Reason("misconfigured", 1, "every request was rejected alike (a wrong base_url, model or params): fix the "
                               "job file; the jobs stay pending"),
    Reason("fatal", 1, "the teacher refused the key or the account (401, 403, billing or quota exhausted at "
                       "the provider)"),
    Reason("error", 1, "an unexpected error, or another worker took this one for dead and took back its jobs",
           "error"),
    Reason("config", 2, "a wrong option, job file or prompt file, terms not acknowledged, or a budget smaller "
                        "than one request's worst case", "bad usage or config"),
    Reason("quota", 3, "a budget is reached: rerun after its reset to resume", "quota reached", resumable=True),
    Reason("unavailable", 4, "nothing answered for retry.outage_after seconds, or the teacher was never "
                             "reached: rerun later to resume", "the teacher looks down", resumable=True),
    Reason("detached", 5, "batch mode with --detach: everything is submitted and batches are open at the "
                          "provider; a later run or `status` reads their answers", "batches open (detached)",
           resumable=True),
    Reason("closed", 6, "outside the job's schedule with --no-wait: nothing more is sent; rerun when its "
                        "window opens (without --no-wait a run waits for it)", "outside the schedule (--no-wait)",
           resumable=True),
    Reason("interrupted", 130, "stopped by Ctrl-C or SIGTERM: rerun to resume", "interrupted", resumable=True),
    Reason("deadline", None, "batch mode: a batch passed batch.deadline; the same run answers the rest "
                             "synchronously"),
    Reason("crashed", None, "status only: a run that never ended and is not live was killed; the next run "
                            "takes its jobs back"),
)

BY_NAME: dict[str, Reason] = {r.name: r for r in REASONS}

# What `harvester run` exits with, by reason (a run with a reason not listed exits 1).
EXIT_CODES: dict[str, int] = {r.name: r.exit_code for r in REASONS if r.exit_code is not None}


def exit_code(name: str) -> int:
    """The exit code of a run that ended for `name`; 1 for a name this vocabulary does not hold."""
    return EXIT_CODES.get(name, 1)


def summary() -> str:
    """One line, by exit code: "0 done, 1 error, 2 bad usage or config, 3 quota reached (resumable), ..."."""
    heads = sorted((r for r in REASONS if r.headline is not None), key=lambda r: r.exit_code or 0)
    return ", ".join(f"{r.exit_code} {r.headline}" + (" (resumable)" if r.resumable else "") for r in heads)


def table(width: int = 78) -> list[str]:
    """The reasons, each with its exit code (`-`: none), its name and what it means, wrapped to `width`
    columns under the meaning."""
    name_width = max(len(r.name) for r in REASONS)
    lines = []
    for r in REASONS:
        head = f"{'-' if r.exit_code is None else r.exit_code:>3}  {r.name:<{name_width}}  "
        lines += textwrap.wrap(r.meaning, width, initial_indent=head, subsequent_indent=" " * len(head))
    return lines


__all__ = ["Reason", "REASONS", "BY_NAME", "EXIT_CODES", "exit_code", "summary", "table"]
