"""What both batch protocols share: a provider's limits, one batch as it stands, one line's fate.

`openai_batch` (OpenAI's Files + Batch API, also served by other OpenAI-compatible providers) and
`anthropic_batch` (Anthropic's Message Batches) each read their provider's objects into these, so the
runner that drives batches knows one shape. Pure: stdlib only, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from .chat import Answer

# answered: an answer to store; retry: a transient fault, ask again in a later batch; permanent: this
# request will never succeed as sent; fatal: no request will (the key or the account): stop the run;
# expired / cancelled: never attempted before the batch ended, ask again (not a failed attempt).
Fate = Literal["answered", "retry", "permanent", "fatal", "expired", "cancelled"]
FATES: tuple[Fate, ...] = get_args(Fate)

Outcome = Literal["completed", "failed", "expired", "cancelled"]


@dataclass(frozen=True, slots=True)
class BatchLimits:
    """The most one batch may hold: requests, and bytes of its input (OpenAI's file, Anthropic's body)."""

    max_requests: int
    max_bytes: int


@dataclass(frozen=True, slots=True)
class BatchState:
    """One batch as the provider describes it."""

    id: str                  # the provider's batch id
    status: str              # the provider's own word (validating, in_progress, ..., canceling, ended)
    ended: bool              # nothing more will change: results (if any) can be read
    outcome: Outcome | None  # set when ended
    total: int
    succeeded: int           # as far as the provider tells (Anthropic: only once ended)
    failed: int
    output_ref: str | None   # OpenAI output_file_id; Anthropic results_url
    error_ref: str | None    # OpenAI error_file_id; None for Anthropic
    input_ref: str | None    # OpenAI input_file_id; None for Anthropic
    tag: str | None          # our tag, from OpenAI metadata["harvester_batch"]; None for Anthropic
    created_at: float | None  # epoch seconds
    errors: str = ""         # a failed batch's validation errors, in the provider's words, short


@dataclass(frozen=True, slots=True)
class LineResult:
    """One request's fate in a batch's results."""

    custom_id: str
    fate: Fate
    answer: Answer | None = None   # when fate == "answered"
    kind: str = ""                 # short class for counting: http_500, batch_expired, invalid_request_error, ...
    detail: str = ""               # the provider's words, short (wording.error_detail)
    status: int | None = None      # the HTTP status of the line, where there is one


def short(text: str, limit: int = 200) -> str:
    """`text` on one line, cut at `limit` characters (as wording.error_detail cuts an error message)."""
    text = " ".join(text.split())
    return text[:limit] + "…" if len(text) > limit else text
