"""Anthropic's Message Batches as data: a stored (OpenAI-style) request as Messages API params, and
readings of the MessageBatch object and of its results' lines.

Shapes follow anthropic-sdk-python 2.15.0: `anthropic.types.messages.MessageBatch`,
`MessageBatchRequestCounts`, `MessageBatchIndividualResponse` and its four results (`succeeded`,
`errored`, `canceled`, `expired`), `messages.batch_create_params.Request`,
`anthropic.types.MessageCreateParamsNonStreaming`, `Message`, `TextBlock`, `ThinkingBlock`, `Usage`,
`StopReason`, `shared.ErrorResponse` and `shared.ErrorObject`.

That SDK sends `anthropic-version: 2026-10-21` and its params types have no `temperature`, `top_p`
or `top_k`: that API version refuses them with a 400. harvester sends `VERSION` (2023-06-01), under
which they are accepted, so a job's sampling settings keep their meaning; moving to the newer version
means adding those three to what `unsupported` refuses. Pure: stdlib only, no I/O.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from . import anthropic
from .batch import BatchLimits, BatchState, Fate, LineResult, Outcome, short
from .chat import Answer, cache_usage
from .wording import error_detail

# Anthropic's documented limits on one batch: 100,000 requests or 256 MB, whichever comes first.
LIMITS = BatchLimits(100_000, 256 * 1024 * 1024)
VERSION = "2023-06-01"                               # the `anthropic-version` header value
CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")     # the documented pattern of a request's custom_id

# The OpenAI chat params a Messages request can carry; every other one is refused up front.
_SAMPLING = ("temperature", "top_p", "top_k")
_TOKENS = ("max_completion_tokens", "max_tokens")    # the newer name first, when a job gives both
_TAKEN = frozenset({*_TOKENS, *_SAMPLING, "stop", "n"})

_OPEN = frozenset({"in_progress", "canceling"})
# StopReason → OpenAI's finish_reason, so the store, the `truncated` filter and the export read both
# modes alike. A context window that cut the answer is a truncation too (OpenAI says "length" for both).
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length",
           "model_context_window_exceeded": "length", "tool_use": "tool_calls", "refusal": "content_filter"}
_PERMANENT_ERRORS = frozenset({"invalid_request_error", "not_found_error"})
_FATAL_ERRORS = frozenset({"authentication_error", "permission_error", "billing_error"})
# rate_limit_error, api_error, overloaded_error, timeout_error (and the gateway_timeout_error some
# documentation names), and any type this module does not know: transient.


def unsupported(params: dict[str, Any]) -> list[str]:
    """The names of a job's OpenAI chat params that a Messages API request cannot carry, so the job can
    be refused before anything is spent.

    Carried: `max_tokens` / `max_completion_tokens` (→ `max_tokens`), `temperature` (only within 0..1,
    Anthropic's range; OpenAI's goes to 2), `top_p`, `top_k`, `stop` (→ `stop_sequences`), and `n` only
    when 1 (one answer per request). Everything else is refused: frequency_penalty, presence_penalty,
    logit_bias, logprobs, top_logprobs, seed, response_format, tools, tool_choice, parallel_tool_calls,
    reasoning_effort, stream, user, service_tier, and any name not listed here. A param set to null
    carries nothing and is never refused."""
    out = []
    for name, value in params.items():
        if value is None:
            continue
        if name not in _TAKEN or (name == "n" and value != 1) or (name == "temperature" and not (
                isinstance(value, (int, float)) and 0 <= value <= 1)):
            out.append(name)
    return out


def message_params(request: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """A stored OpenAI-style request (`model`, `messages`, `params`) as Messages API params.

    System (and OpenAI's newer `developer`) messages become `system`, joined by a blank line; user and
    assistant messages keep their order, their content as text (a list of text parts is joined).
    `max_tokens` is the job's own if it sets one, else the argument (the Messages API requires it).
    Raises ValueError for what a Messages request cannot say (other roles, non-text parts); the params
    `unsupported` names are left out, so check them first."""
    system: list[str] = []
    messages: list[dict[str, Any]] = []
    for i, m in enumerate(request["messages"]):
        role = m.get("role")
        text = _text(m.get("content"), i)
        if role in ("system", "developer"):
            system.append(text)
        elif role in ("user", "assistant"):
            messages.append({"role": role, "content": text})
        else:
            raise ValueError(f"messages[{i}]: role {role!r} has no counterpart in the Messages API")
    params = request.get("params") or {}
    out: dict[str, Any] = {"model": request["model"], "max_tokens": next(
        (params[k] for k in _TOKENS if params.get(k) is not None), max_tokens), "messages": messages}
    if system:
        out["system"] = "\n\n".join(system)
    for name in _SAMPLING:
        if params.get(name) is not None:
            out[name] = params[name]
    stop = params.get("stop")
    if stop is not None:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    return out


def request_entry(custom_id: str, request: dict[str, Any], max_tokens: int) -> dict[str, Any]:
    """One element of a create call's `requests`. A custom_id off the documented pattern would fail the
    whole create call, so it is refused here."""
    if not CUSTOM_ID.match(custom_id):
        raise ValueError(f"custom_id {custom_id!r} does not match {CUSTOM_ID.pattern}")
    return {"custom_id": custom_id, "params": message_params(request, max_tokens)}


def read_batch(obj: dict[str, Any]) -> BatchState:
    """A MessageBatch (create, retrieve, cancel, or one of a listing's `data`) as a BatchState.

    The counts other than `processing` stay 0 until the batch ends (as the SDK documents), so
    `succeeded` and `failed` mean something only then. A status this module does not know is taken as
    open."""
    status = str(obj.get("processing_status") or "")
    counts = obj.get("request_counts") or {}
    c = {k: _int(counts.get(k)) for k in ("processing", "succeeded", "errored", "canceled", "expired")}
    ended = status == "ended"
    outcome: Outcome | None = None
    if ended:
        # A batch whose cancel was asked for is cancelled even if every request finished first: the
        # user (or our deadline) stopped it, and that is what the report should say.
        if obj.get("cancel_initiated_at"):
            outcome = "cancelled"
        elif c["expired"] > 0 and c["canceled"] == 0:
            outcome = "expired"
        else:
            outcome = "completed"
    return BatchState(
        id=str(obj.get("id") or ""), status=status, ended=ended, outcome=outcome, total=sum(c.values()),
        succeeded=c["succeeded"], failed=c["errored"], output_ref=obj.get("results_url") or None,
        error_ref=None, input_ref=None, tag=None, created_at=_epoch(obj.get("created_at")))


def read_line(line: dict[str, Any]) -> LineResult:
    """One line of a batch's results (a MessageBatchIndividualResponse): its request's fate."""
    cid = str(line.get("custom_id") or "")
    result = line.get("result")
    if not isinstance(result, dict):
        return LineResult(cid, "retry", kind="bad_line", detail="a line without a result")
    kind = result.get("type")
    if kind == "succeeded":
        return _succeeded(cid, result.get("message"))
    if kind == "errored":
        response = result.get("error")
        inner = response.get("error") if isinstance(response, dict) else None
        etype = str(inner.get("type") or "unknown_error") if isinstance(inner, dict) else "unknown_error"
        detail = error_detail(response)
        return LineResult(cid, _fate_of_error(etype, detail), kind=etype, detail=detail)
    if kind == "canceled":
        return LineResult(cid, "cancelled", kind="batch_cancelled",
                          detail="the batch was canceled before this request was processed")
    if kind == "expired":
        return LineResult(cid, "expired", kind="batch_expired",
                          detail="the batch expired before this request was processed")
    return LineResult(cid, "retry", kind="bad_line", detail=short(f"an unknown result type {kind!r}"))


def _fate_of_error(etype: str, detail: str) -> Fate:
    if etype in _FATAL_ERRORS:
        return "fatal"
    if etype in _PERMANENT_ERRORS:
        # Anthropic reports a spent credit balance as an invalid_request_error: the account, not the
        # request, so the run stops as on the synchronous path instead of failing every job for good.
        low = detail.lower()
        return "fatal" if any(w in low for w in anthropic.PROVIDER.billing_words) else "permanent"
    return "retry"


def _succeeded(cid: str, message: Any) -> LineResult:
    try:
        blocks = message["content"]
        texts = [b["text"] for b in blocks if b.get("type") == "text"]
        thoughts = [b["thinking"] for b in blocks if b.get("type") == "thinking"]
        usage = message["usage"]
        stop = message.get("stop_reason")
        model = message.get("model")
        input_tokens, output_tokens = usage["input_tokens"], usage["output_tokens"]
        cache = {k: usage.get(k) for k in ("cache_creation_input_tokens", "cache_read_input_tokens")}
        if not all(isinstance(t, str) for t in texts + thoughts) or not all(
                isinstance(n, int) for n in (input_tokens, output_tokens)) or not all(
                n is None or isinstance(n, int) for n in cache.values()):
            raise TypeError("unexpected types")
    except Exception as e:  # noqa: BLE001 - any garbage in a result is a transient fault of the server
        return LineResult(cid, "retry", kind="bad_body", detail=f"unparseable message ({type(e).__name__})")
    content = "".join(texts)
    finish = _FINISH.get(stop, stop) if isinstance(stop, str) else None
    if finish == "content_filter" and not content.strip():
        return LineResult(cid, "permanent", kind="content_filter", detail="the teacher refused to answer")
    if content == "" and finish != "length":
        # An answer with no text that max_tokens did not cut: a fault worth a retry.
        return LineResult(cid, "retry", kind="bad_body", detail="the message has no text")
    meta: dict[str, Any] = {"id": message["id"]} if message.get("id") else {}
    meta |= {k: v for k, v in cache.items() if v is not None} | cache_usage(usage)   # priced by harvester.pricing
    details = usage.get("output_tokens_details")
    if isinstance(details, dict) and isinstance(details.get("thinking_tokens"), int):
        meta["reasoning_tokens"] = details["thinking_tokens"]    # the key read_completion uses
    prompt_tokens = input_tokens + sum(v for v in cache.values() if v is not None)
    return LineResult(cid, "answered", Answer(
        content, finish, model if isinstance(model, str) else None, prompt_tokens, output_tokens,
        "\n\n".join(t for t in thoughts if t.strip()) or None, meta))


def _text(content: Any, i: int) -> str:
    """A message's content as text: a string, or OpenAI's list of `{type: text, text}` parts, joined."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise ValueError(f"messages[{i}]: a {kind!r} part cannot be sent as text")
            parts.append(part["text"])
        return "".join(parts)
    raise ValueError(f"messages[{i}]: content must be a string or a list of text parts")


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _epoch(value: Any) -> float | None:
    """An RFC 3339 string as epoch seconds; a time without a zone is taken as UTC."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()
