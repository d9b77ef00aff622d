"""OpenAI's Files + Batch API as data: the input file's lines, the create call's body, and readings of
the Batch object and of the output and error files' lines.

Shapes follow openai-python 3.57.0: `openai.types.Batch` (with `Errors`), `BatchRequestCounts`,
`BatchError`, `batch_create_params.BatchCreateParams`, and the batch guide's input and output line
formats (`{custom_id, method, url, body}`; `{id, custom_id, response: {status_code, request_id, body},
error: {code, message}}`). Other providers that serve these endpoints (OpenAI-compatible batch APIs) are
read the same way. Pure: stdlib only, no I/O; the HTTP calls are the runner's.
"""

from __future__ import annotations

import json
from typing import Any

from .batch import BatchLimits, BatchState, Fate, LineResult, Outcome, short
from .chat import Unusable, read_completion
from .feedback import Reader
from .wording import error_detail

# OpenAI's documented limits on one batch's input file: 50,000 requests and 200 MB.
LIMITS = BatchLimits(50_000, 200 * 1024 * 1024)
ENDPOINT = "/v1/chat/completions"
TAG_KEY = "harvester_batch"     # the metadata key that names our batch, to find it again after a crash
TAG_MAX = 512                   # a metadata value's documented maximum length

_OPEN = frozenset({"validating", "in_progress", "finalizing", "cancelling"})
_ENDED: dict[str, Outcome] = {"completed": "completed", "failed": "failed", "expired": "expired",
                              "cancelled": "cancelled"}
# Error-object codes of lines the batch never executed (written to the error file at the batch's end).
_NOT_RUN: dict[str, Fate] = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
_MAX_ERRORS_SHOWN = 5           # a failed batch's errors: a sample in its state, never all of a huge file


def input_line(custom_id: str, request: dict[str, Any]) -> bytes:
    """One line of a batch input file for a stored request (`{"model", "messages", "params"}`): the body
    is what the synchronous path posts (harvester.teacher), so both modes ask the same thing."""
    body = {"model": request["model"], "messages": request["messages"], **(request.get("params") or {})}
    line = {"custom_id": custom_id, "method": "POST", "url": ENDPOINT, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


def create_params(input_file_id: str, tag: str) -> dict[str, Any]:
    """The body of POST /v1/batches for an uploaded input file, tagged so a rerun can find the batch in
    the listing if the process died between creating it and recording its id."""
    if len(tag) > TAG_MAX:
        raise ValueError(f"a batch tag holds at most {TAG_MAX} characters (OpenAI's metadata limit)")
    return {"input_file_id": input_file_id, "endpoint": ENDPOINT, "completion_window": "24h",
            "metadata": {TAG_KEY: tag}}


def read_batch(obj: dict[str, Any]) -> BatchState:
    """A Batch object (create, retrieve, cancel, or one of a listing's `data`) as a BatchState.

    A status this module does not know is taken as open: polling on is safe, reading results of a batch
    that may still change is not."""
    status = str(obj.get("status") or "")
    outcome = _ENDED.get(status)
    counts = obj.get("request_counts") or {}
    metadata = obj.get("metadata") or {}
    tag = metadata.get(TAG_KEY) if isinstance(metadata, dict) else None
    created = obj.get("created_at")
    return BatchState(
        id=str(obj.get("id") or ""), status=status, ended=outcome is not None, outcome=outcome,
        total=_int(counts.get("total")), succeeded=_int(counts.get("completed")), failed=_int(counts.get("failed")),
        output_ref=obj.get("output_file_id") or None, error_ref=obj.get("error_file_id") or None,
        input_ref=obj.get("input_file_id") or None, tag=tag if isinstance(tag, str) else None,
        created_at=float(created) if isinstance(created, (int, float)) and not isinstance(created, bool) else None,
        errors=_errors(obj.get("errors")))


def read_line(line: dict[str, Any], reader: Reader) -> LineResult:
    """One line of a batch's output or error file: its request's fate.

    A response is read as the synchronous path reads one: a 2xx by `read_completion`, an error status
    by `reader`'s verdict (so billing words stop the run in both modes). A line without a response is a
    request the batch did not execute: expired or cancelled, or another error object (transient)."""
    cid = str(line.get("custom_id") or "")
    response = line.get("response")
    if isinstance(response, dict):
        status = response.get("status_code")
        body = response.get("body")
        if not isinstance(status, int) or isinstance(status, bool):
            return LineResult(cid, "retry", kind="bad_line", detail="a response without a status_code")
        if status < 400:
            try:
                return LineResult(cid, "answered", read_completion(body), status=status)
            except Unusable as e:
                return LineResult(cid, "permanent" if e.permanent else "retry", kind=e.kind, detail=str(e),
                                  status=status)
        verdict = reader.verdict(status, body)
        fate: Fate = "retry" if verdict == "retry" else "permanent" if verdict == "permanent" else "fatal"
        # as the synchronous path names them: an exhausted account is quota_exhausted, the rest by status
        kind = "quota_exhausted" if verdict == "fatal_billing" else f"http_{status}"
        return LineResult(cid, fate, kind=kind, detail=error_detail(body), status=status)
    error = line.get("error")
    if isinstance(error, dict):
        code = str(error.get("code") or "batch_error")
        detail = short(str(error.get("message") or code))
        return LineResult(cid, _NOT_RUN.get(code, "retry"), kind=code, detail=detail)
    return LineResult(cid, "retry", kind="bad_line", detail="a line with neither a response nor an error")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _errors(errors: Any) -> str:
    """`errors.data` as "line N: code: message; ...", a few of them, each short."""
    data = errors.get("data") if isinstance(errors, dict) else None
    if not isinstance(data, list):
        return ""
    parts = []
    for e in data[:_MAX_ERRORS_SHOWN]:
        if not isinstance(e, dict):
            continue
        words = ": ".join(str(e[k]) for k in ("code", "message") if e.get(k))
        parts.append(short(f"line {e['line']}: {words}" if e.get("line") is not None else words, 160))
    more = len(data) - _MAX_ERRORS_SHOWN
    return "; ".join(parts) + (f"; and {more} more" if more > 0 else "")
