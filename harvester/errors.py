"""One exception tree for the whole project; every CLI exit code maps from it.

    HarvesterError                      exit {error} unless a subclass says otherwise
    ├── ConfigError                     exit {config}: a job file or option is wrong (names the field)
    ├── PromptSourceError               exit {config}: a prompt file is wrong (names file:line)
    ├── StoreError                      exit {config}: the store cannot be opened or is from a newer schema
    ├── TermsRefused                    exit {config}: the teacher's terms forbid the run and nobody acknowledged them
    ├── QuotaExceeded                   exit {quota}: a budget is reached; rerun later to resume
    ├── Interrupted                     exit {interrupted}: SIGINT/SIGTERM; rerun to resume
    └── TeacherError                    what one request to the teacher came to
        ├── RetryableError              429, 408, 409, 5xx, timeouts, dropped connections, garbage bodies
        ├── PermanentError              400, 404, 413, 422: this prompt will never succeed as sent
        │   └── InvalidAnswer           an answer not of its response schema: asked again up to retry.invalid_answers
        └── FatalError                  401, 403, billing/quota exhausted: stop the whole run (exit {fatal})

Each class names its run reason (`reason`, harvester.reasons), and its `exit_code` is that reason's; the
codes above are filled in from there. Messages never carry API keys: they are built from status codes,
error codes and our own words.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from .reasons import EXIT_CODES

if TYPE_CHECKING:  # the provider room imports nothing of ours at run time but its own modules
    from .providers import Feedback

if __doc__:  # None under python -OO
    __doc__ = __doc__.format(**EXIT_CODES)


class HarvesterError(Exception):
    """Base of every error harvester raises on purpose."""

    reason: ClassVar[str] = "error"
    exit_code: ClassVar[int] = EXIT_CODES[reason]

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "reason" in vars(cls):                 # a subclass that names its reason exits with its code
            cls.exit_code = EXIT_CODES[cls.reason]


class ConfigError(HarvesterError):
    reason = "config"


class PromptSourceError(HarvesterError):
    reason = "config"


class StoreError(HarvesterError):
    reason = "config"


class TermsRefused(HarvesterError):
    reason = "config"


class QuotaExceeded(HarvesterError):
    """A budget is reached. `budget` names it; the run stops cleanly and can be resumed."""

    reason = "quota"

    def __init__(self, message: str, *, budget: str = "", used: float = 0.0, limit: float = 0.0,
                 resets_at: str | None = None) -> None:
        super().__init__(message)
        self.budget = budget
        self.used = used
        self.limit = limit
        self.resets_at = resets_at


class Interrupted(HarvesterError):
    reason = "interrupted"


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


class InvalidAnswer(PermanentError):
    """A 2xx answer that is not of its job's response schema (harvester.shape): it was paid for; it is asked
    again up to `retry.invalid_answers` times, then the job is failed with what was wrong."""


class FatalError(TeacherError):
    reason = "fatal"


__all__ = [
    "HarvesterError", "ConfigError", "PromptSourceError", "StoreError", "TermsRefused",
    "QuotaExceeded", "Interrupted", "TeacherError", "RetryableError", "PermanentError", "InvalidAnswer", "FatalError",
]
