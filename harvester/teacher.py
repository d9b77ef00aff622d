"""The teacher client: one chat completion in, one `Reply` out, or a classified `TeacherError`.

The openai SDK does the protocol (its own retries are off: tenacity and the limiter own retrying);
this module only decides what a failure means: retry it, record it as permanent, or stop the run.
"""

from __future__ import annotations

import importlib
import json
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any

import httpx
import openai

from .config import Teacher as TeacherConfig
from .errors import FatalError, PermanentError, RetryableError, TeacherError
from .tokens import is_quota_exhausted, parse_retry_after, retry_delay_in_body

RETRYABLE_STATUS = {408, 409, 425, 429}
FATAL_STATUS = {401, 403}


@dataclass(slots=True)
class Reply:
    content: str
    finish_reason: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    status: int
    headers: httpx.Headers
    raw: dict[str, Any]                    # response id, fingerprint, usage details: never headers
    reasoning: str | None = None           # the reasoning trace, where the teacher returns one apart


class Teacher:
    """An OpenAI-compatible chat-completions endpoint."""

    def __init__(self, config: TeacherConfig, *, max_connections: int | None = None) -> None:
        self.config = config
        self._key = config.api_key()
        conns = max_connections or config.limits.max_concurrency
        self._http = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=conns, max_keepalive_connections=conns),
            timeout=httpx.Timeout(config.timeout, connect=min(config.timeout, 15.0)),
        )
        self._client = openai.AsyncOpenAI(api_key=self._key, base_url=config.base_url, max_retries=0,
                                          http_client=self._http, timeout=config.timeout)

    def warm(self) -> None:
        """Load now what the first request would load lazily (the SDK's chat resources: tens of ms),
        so that it does not delay the first requests between the limiter's admission and the wire.
        No network."""
        _ = self._client.chat.completions.with_raw_response.create
        try:  # httpcore's asyncio backend, loaded at the first connection
            importlib.import_module("anyio._backends._asyncio")
        except ImportError:
            pass

    def scrub(self, text: str) -> str:
        """Remove the key from any text that came back from the server (some echo it)."""
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    async def complete(self, request: dict[str, Any]) -> Reply:
        body = {"model": request["model"], "messages": request["messages"], **request.get("params", {})}
        start = time.monotonic()
        try:
            # The SDK's client does auth, URLs and error classes; we skip its typed request transform
            # and response models (over half a millisecond of CPU per request) and read the JSON ourselves.
            response = await self._client.post("/chat/completions", cast_to=httpx.Response, body=body)
        except openai.APIStatusError as e:
            raise self._classify_status(e) from None
        except openai.APITimeoutError as e:
            if any(type(x).__name__ == "ConnectTimeout" for x in _chain(e)):
                raise RetryableError(self.scrub(f"no connection to {self.config.base_url} within "
                                                f"{self._http.timeout.connect:g} s"), kind="connect_timeout") from None
            raise RetryableError("the teacher did not answer within the timeout", kind="timeout") from None
        except openai.APIConnectionError as e:
            kind, what = connection_failure(e)
            raise RetryableError(self.scrub(f"connection to {self.config.base_url} failed: {what}"), kind=kind) from None
        latency = time.monotonic() - start
        headers, status = response.headers, response.status_code
        try:
            data = json.loads(response.content)
            choice = data["choices"][0]
            content = choice["message"].get("content")
            reasoning = _reasoning(choice["message"])
            finish_reason = choice.get("finish_reason")
            usage = data.get("usage") or {}
            prompt_tokens, completion_tokens = usage.get("prompt_tokens"), usage.get("completion_tokens")
            if not (content is None or isinstance(content, str)) or not all(
                    t is None or isinstance(t, int) for t in (prompt_tokens, completion_tokens)):
                raise TypeError("unexpected types")
        except Exception as e:  # noqa: BLE001 - any garbage body is a transient fault of the server
            raise RetryableError(f"unparseable response body ({type(e).__name__})", kind="bad_body",
                                 status=status, headers=headers) from None
        if content is None and finish_reason == "length":
            content = ""  # max_tokens spent (often all on reasoning): paid for, and a retry would end the same;
            # kept as an answer, which the export's `truncated` filter drops
        if content is None or (not content.strip() and finish_reason == "content_filter"):
            if finish_reason == "content_filter":
                raise PermanentError("the teacher's content filter withheld the answer", kind="content_filter",
                                     status=status, headers=headers, about_prompt=True)
            raise RetryableError("the response has no message content", kind="bad_body",
                                 status=status, headers=headers)
        meta = {k: data[k] for k in ("id", "system_fingerprint") if data.get(k)}
        details = usage.get("completion_tokens_details")
        if isinstance(details, dict) and isinstance(details.get("reasoning_tokens"), int):
            meta["reasoning_tokens"] = details["reasoning_tokens"]
        model = data.get("model")
        return Reply(content=content, finish_reason=finish_reason, model=model if isinstance(model, str) else None,
                     prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     latency=latency, status=status, headers=headers, raw=meta, reasoning=reasoning)

    def _classify_status(self, e: openai.APIStatusError) -> TeacherError:
        status = e.status_code
        headers = e.response.headers
        body = e.body if e.body is not None else _safe_text(e.response)
        detail = self.scrub(_error_detail(body))
        kind = f"http_{status}"
        if is_quota_exhausted(status, body):
            return FatalError(f"the teacher says the account's quota or billing limit is exhausted "
                              f"(HTTP {status}: {detail}); retrying cannot help", kind="quota_exhausted",
                              status=status, headers=headers)
        if status in FATAL_STATUS:
            return FatalError(f"HTTP {status}: {self._key_advice(status, detail)}", kind=kind, status=status,
                              headers=headers)
        if status in RETRYABLE_STATUS or status >= 500:
            retry_after = parse_retry_after(headers)
            return RetryableError(f"HTTP {status}: {detail}", kind=kind, status=status, headers=headers,
                                  retry_after=retry_delay_in_body(body) if retry_after is None else retry_after)
        return PermanentError(f"HTTP {status}: {detail}", kind=kind, status=status, headers=headers,
                              about_prompt=status == 413 or bool(_ABOUT_PROMPT.search(f"{detail} {_error_code(body)}")))

    def _key_advice(self, status: int, detail: str) -> str:
        """What a 401/403 means for this job file's key, and where to fix it."""
        name, where = self.config.api_key_env, self.config._job_file
        field = f"teacher.api_key_env in {where}" if where else "teacher.api_key_env"
        if name is None:
            return (f"the teacher wants an API key ({detail}), and {field} says none: set it to the name of "
                    "the variable that holds the key, and export that variable")
        what = "the API key was rejected" if status == 401 else "access is forbidden"
        return f"{what} ({detail}); check the key in ${name} ({field}) and the key's permissions"

    async def aclose(self) -> None:
        await self._client.close()
        await self._http.aclose()


# Connection failures that happen before a request reaches any server: they say nothing about the
# prompt, and a teacher that never answered and fails only this way is unreachable (harvester.outage).
UNREACHABLE_KINDS = frozenset({"connection_refused", "dns", "tls", "connect_timeout", "unreachable"})


def _chain(e: BaseException) -> list[BaseException]:
    """The exception and its causes (the SDK wraps httpx's, which wraps the socket's)."""
    out: list[BaseException] = []
    x: BaseException | None = e
    while x is not None and x not in out and len(out) < 10:
        out.append(x)
        x = x.__cause__ or x.__context__
    return out


def connection_failure(e: BaseException) -> tuple[str, str]:
    """(kind, words) of a failed connection: refused, DNS, TLS, or dropped ("connection")."""
    chain = _chain(e)
    for x in chain:
        if isinstance(x, ConnectionRefusedError):
            return "connection_refused", "connection refused"
        if isinstance(x, socket.gaierror):
            return "dns", f"the host name does not resolve ({x.strerror or x})"
        if isinstance(x, ssl.SSLError):
            return "tls", f"TLS handshake failed ({x.reason or x})"
    last = chain[-1]
    if any(type(x).__name__ == "ConnectError" for x in chain):  # e.g. network unreachable, reset on connect
        return "unreachable", f"cannot connect ({last})"
    return "connection", f"the connection dropped without an answer ({type(last).__name__})"


# A 4xx whose words say the prompt itself is at fault (too long for the model, refused by a filter):
# never taken for a wrong job file (harvester.outage.RejectionWatch), however many prompts get it.
_ABOUT_PROMPT = re.compile(r"context.length|context.window|maximum context|too many tokens|prompt is too long|"
                           r"input is too long|too long for|content.(policy|filter|management)|safety", re.I)


def _error_code(body: Any) -> str:
    err = body.get("error", body) if isinstance(body, dict) else None
    return " ".join(str(err.get(k) or "") for k in ("code", "type")) if isinstance(err, dict) else ""


def _safe_text(response: httpx.Response) -> str:
    try:
        return response.text[:500]
    except Exception:  # noqa: BLE001 - a body we cannot read says nothing more
        return ""


def _error_detail(body: Any) -> str:
    """The server's error message, short; never the whole body."""
    if isinstance(body, dict) and "error" not in body and "detail" in body:
        text = _fastapi_detail(body["detail"])   # FastAPI servers (transformers serve, many proxies)
    elif isinstance(body, dict):
        err = body.get("error", body)
        if isinstance(err, dict):
            text = str(err.get("message") or err.get("code") or err.get("type") or "")
        else:
            text = str(err)
    else:
        text = str(body or "")
    text = " ".join(text.split())
    return (text[:200] + "…") if len(text) > 200 else (text or "no detail")


def _fastapi_detail(detail: Any) -> str:
    """FastAPI's `detail`: a text, or its validation errors `[{loc, msg, type}, ...]` as `loc: msg; ...`."""
    if not isinstance(detail, list):
        return str(detail if detail is not None else "")
    parts = []
    for item in detail:
        if isinstance(item, dict):
            loc = ".".join(str(p) for p in item.get("loc") or [] if p != "body")
            parts.append(f"{loc}: {item.get('msg', '')}" if loc else str(item.get("msg", "")))
        else:
            parts.append(str(item))
    return "; ".join(parts)


def _reasoning(message: dict[str, Any]) -> str | None:
    """A reasoning trace returned beside the answer: `reasoning_content` (DeepSeek, vLLM, SGLang) or
    `reasoning` (OpenRouter, Groq, newer vLLM). Inline <think> blocks stay in the content as sent."""
    for key in ("reasoning_content", "reasoning"):
        value = message.get(key)
        if isinstance(value, str) and value.strip():
            return value
    return None
