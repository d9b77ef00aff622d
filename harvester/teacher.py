"""The teacher client: one chat completion in, one `Reply` out, or a classified `TeacherError`.

The openai SDK does the protocol (its own retries are off: tenacity and the limiter own retrying);
this module only decides what a failure means: retry it, record it as permanent, or stop the run.
"""

from __future__ import annotations

import json
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import httpx2
import openai

from . import providers
from .config import MAX_IN_FLIGHT
from .config import Teacher as TeacherConfig
from .errors import FatalError, PermanentError, RetryableError, TeacherError
from .providers import Feedback
from .providers.chat import Token, Unusable, read_completion
from .providers.feedback import Verdict


@dataclass(slots=True)
class Reply:
    content: str
    finish_reason: str | None
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    latency: float
    status: int
    feedback: Feedback                     # what the answer says for the limiter (its limits, usage)
    raw: dict[str, Any]                    # response id, fingerprint, usage details: never headers
    reasoning: str | None = None           # the reasoning trace, where the teacher returns one apart
    logprobs: list[Token] | None = None    # the answer's tokens with logprobs and top-k, when asked and sent


class Teacher:
    """An OpenAI-compatible chat-completions endpoint."""

    def __init__(self, config: TeacherConfig, *, max_connections: int | None = None) -> None:
        self.config = config
        self._key = config.api_key()
        self._reader = providers.reader(providers.identify(config.provider, config.base_url))
        conns = max_connections or config.limits.max_concurrency or MAX_IN_FLIGHT
        self._connect_timeout = min(config.timeout, 15.0)
        # The SDK's aiohttp transport (openai.DefaultAioHttpClient, httpx2 in front of aiohttp): at
        # hundreds of connections httpx's own pool costs several ms of CPU per request (its pool scans
        # every connection per request, encode/httpcore#1035); aiohttp's does not (bench_throughput).
        self._http = openai.DefaultAioHttpClient(
            limits=httpx2.Limits(max_connections=conns, max_keepalive_connections=conns),
            timeout=httpx2.Timeout(config.timeout, connect=self._connect_timeout))
        self._client = openai.AsyncOpenAI(api_key=self._key, base_url=config.base_url, max_retries=0,
                                          http_client=self._http, timeout=config.timeout)

    def warm(self) -> None:
        """Load now what the first request would load lazily (the SDK's chat resources: tens of ms),
        so that it does not delay the first requests between the limiter's admission and the wire.
        No network."""
        _ = self._client.chat.completions.with_raw_response.create

    def scrub(self, text: str) -> str:
        """Remove the key from any text that came back from the server (some echo it)."""
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    async def complete(self, request: dict[str, Any]) -> Reply:
        body = {"model": request["model"], "messages": request["messages"], **request.get("params", {})}
        start = time.monotonic()
        try:
            # The SDK's client does auth, URLs and error classes; we skip its typed request transform
            # and response models (over half a millisecond of CPU per request) and read the JSON ourselves.
            response = await self._client.post("/chat/completions", cast_to=httpx2.Response, body=body)
        except openai.APIStatusError as e:
            raise self._classify_status(e) from None
        except openai.APIConnectionError as e:   # APITimeoutError too: aiohttp's errors tell them apart
            kind, what = connection_failure(e)
            if kind == "timeout":
                raise RetryableError("the teacher did not answer within the timeout", kind="timeout",
                                     feedback=providers.Reader.transport(timed_out=True)) from None
            if kind == "connect_timeout":  # never reached: not a slow answer
                what = f"no connection within {self._connect_timeout:g} s"
            raise RetryableError(self.scrub(f"connection to {self.config.base_url} failed: {what}"), kind=kind,
                                 feedback=providers.Reader.transport(timed_out=False)) from None
        latency = time.monotonic() - start
        try:
            answer = read_completion(json.loads(response.content))
        except ValueError as e:        # not JSON at all
            raise RetryableError(f"unparseable response body ({type(e).__name__})", kind="bad_body",
                                 feedback=self._bad_answer(response, latency)) from None
        except Unusable as e:
            error = PermanentError if e.permanent else RetryableError
            raise error(str(e), kind=e.kind, about_prompt=e.permanent,
                        feedback=self._bad_answer(response, latency, "permanent" if e.permanent else "retry")) from None
        feedback = self._reader.reply(response.status_code, response.headers, prompt_tokens=answer.prompt_tokens,
                                      completion_tokens=answer.completion_tokens, latency=latency, now_wall=time.time())
        return Reply(content=answer.content, finish_reason=answer.finish_reason, model=answer.model,
                     prompt_tokens=answer.prompt_tokens, completion_tokens=answer.completion_tokens, latency=latency,
                     status=response.status_code, feedback=feedback, raw=answer.meta, reasoning=answer.reasoning,
                     logprobs=answer.logprobs)

    def _bad_answer(self, response: httpx2.Response, latency: float,
                    verdict: Verdict = "retry") -> Feedback:
        """A 2xx whose body is no usable answer: its headers still count, as an error for the limiter."""
        ok = self._reader.reply(response.status_code, response.headers, prompt_tokens=None, completion_tokens=None,
                                latency=latency, now_wall=time.time())
        return Feedback("error", ok.status, limits=ok.limits, latency=latency, verdict=verdict)

    def _classify_status(self, e: openai.APIStatusError) -> TeacherError:
        status = e.status_code
        body = e.body if e.body is not None else _safe_text(e.response)
        fb = self._reader.failure(status, e.response.headers, body, now_wall=time.time())
        detail = self.scrub(fb.detail)
        kind = f"http_{status}"
        if fb.verdict == "fatal_billing":
            return FatalError(f"the teacher says the account's quota or billing limit is exhausted "
                              f"(HTTP {status}: {detail}); retrying cannot help", kind="quota_exhausted", feedback=fb)
        if fb.verdict == "fatal_auth":
            return FatalError(f"HTTP {status}: {self._key_advice(status, detail)}", kind=kind, feedback=fb)
        if fb.verdict == "retry":
            return RetryableError(f"HTTP {status}: {detail}", kind=kind, feedback=fb)
        return PermanentError(f"HTTP {status}: {detail}", kind=kind, feedback=fb, about_prompt=fb.about_prompt)

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
    """(kind, words) of a failed request that got no HTTP answer: refused, DNS, TLS, no connection in time
    ("connect_timeout"), no answer in time ("timeout"), or dropped ("connection"). Read from the causes,
    not from the SDK's class: its aiohttp transport maps a dropped connection to a ConnectTimeout."""
    chain = _chain(e)
    for x in chain:
        if isinstance(x, ConnectionRefusedError):
            return "connection_refused", "connection refused"
        if isinstance(x, socket.gaierror):
            return "dns", f"the host name does not resolve ({x.strerror or x})"
        if isinstance(x, ssl.SSLError):
            return "tls", f"TLS handshake failed ({getattr(x, 'reason', None) or x})"
    for x in chain:
        if isinstance(x, aiohttp.ConnectionTimeoutError):
            return "connect_timeout", "no connection in time"
        if isinstance(x, (aiohttp.ServerTimeoutError, TimeoutError)):
            return "timeout", "no answer in time"
        if isinstance(x, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
            break
        if isinstance(x, aiohttp.ClientConnectorError):  # e.g. network unreachable, reset on connect
            return "unreachable", f"cannot connect ({x.os_error or x})"
    last = chain[-1]
    if any(type(x).__name__ == "ConnectTimeout" for x in chain) and not any(
            type(x).__module__.startswith("aiohttp") for x in chain):
        return "connect_timeout", "no connection in time"
    if any(type(x).__name__ in ("ReadTimeout", "WriteTimeout", "PoolTimeout") for x in chain):
        return "timeout", "no answer in time"
    if any(type(x).__name__ == "ConnectError" for x in chain):
        return "unreachable", f"cannot connect ({last})"
    return "connection", f"the connection dropped without an answer ({type(last).__name__})"


class _HasText(Protocol):
    @property
    def text(self) -> str: ...


def _safe_text(response: _HasText) -> str:
    """The start of a response's body (an httpx or, as the openai SDK types it, an httpx2 response)."""
    try:
        return response.text[:500]
    except Exception:  # noqa: BLE001 - a body we cannot read says nothing more
        return ""
