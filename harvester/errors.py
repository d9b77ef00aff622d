"""One exception tree for the whole project; every CLI exit code maps from it.

    HarvesterError                      exit 1 unless a subclass says otherwise
    ├── ConfigError                     exit 2: a job file or option is wrong (names the field)
    ├── PromptSourceError               exit 2: a prompt file is wrong (names file:line)
    ├── StoreError                      exit 2: the store cannot be opened or is from a newer schema
    ├── TermsRefused                    exit 2: the teacher's terms forbid the run and nobody acknowledged them
    ├── QuotaExceeded                   exit 3: a budget is reached; rerun later to resume
    ├── Interrupted                     exit 130: SIGINT/SIGTERM; rerun to resume
    └── TeacherError                    what one request to the teacher came to
        ├── RetryableError              429, 408, 409, 5xx, timeouts, dropped connections, garbage bodies
        ├── PermanentError              400, 404, 413, 422: this prompt will never succeed as sent
        └── FatalError                  401, 403, billing/quota exhausted: stop the whole run (exit 1)

Messages never carry API keys: they are built from status codes, error codes and our own words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the provider room imports nothing of ours at run time but its own modules
    from .providers import Feedback


class HarvesterError(Exception):
    """Base of every error harvester raises on purpose."""

    exit_code: int = 1


class ConfigError(HarvesterError):
    exit_code = 2


class PromptSourceError(HarvesterError):
    exit_code = 2


class StoreError(HarvesterError):
    exit_code = 2


class TermsRefused(HarvesterError):
    exit_code = 2


class QuotaExceeded(HarvesterError):
    """A budget is reached. `budget` names it; the run stops cleanly and can be resumed."""

    exit_code = 3

    def __init__(self, message: str, *, budget: str = "", used: float = 0.0, limit: float = 0.0,
                 resets_at: str | None = None) -> None:
        super().__init__(message)
        self.budget = budget
        self.used = used
        self.limit = limit
        self.resets_at = resets_at


class Interrupted(HarvesterError):
    exit_code = 130


class TeacherError(HarvesterError):
    """One failed request. `kind` is a short class for counting (e.g. "http_503", "timeout")."""

    def __init__(self, message: str, *, kind: str, feedback: Feedback | None = None,
                 about_prompt: bool = False) -> None:
        super().__init__(message)
        self.kind = kind
        self.about_prompt = about_prompt  # the error names the prompt (too long, filtered), not the job file
        self.feedback = feedback          # what the response said, parsed (harvester.providers.feedback)

    @property
    def status(self) -> int | None:
        return self.feedback.status if self.feedback else None

    @property
    def retry_after(self) -> float | None:
        return self.feedback.retry_after if self.feedback else None


class RetryableError(TeacherError):
    pass


class PermanentError(TeacherError):
    pass


class FatalError(TeacherError):
    pass


__all__ = [
    "HarvesterError", "ConfigError", "PromptSourceError", "StoreError", "TermsRefused",
    "QuotaExceeded", "Interrupted", "TeacherError", "RetryableError", "PermanentError", "FatalError",
]
