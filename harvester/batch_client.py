"""The providers' batch APIs over HTTP: upload, create, find, poll, cancel, read results.

What the objects mean is read in the provider room (harvester.providers.openai_batch and
anthropic_batch, pure); this module only moves bytes. OpenAI's Files + Batch API goes through the
openai SDK (multipart upload, cursor pages, streamed file content: it earns its place); Anthropic's
Message Batches through httpx, five plain JSON endpoints. A failed HTTP call raises a TeacherError
classified by the same reader as a synchronous request.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any, Protocol

import httpx
import openai

from . import providers
from .config import Teacher as TeacherConfig
from .errors import FatalError, PermanentError, RetryableError, TeacherError
from .providers import anthropic_batch, openai_batch
from .providers.batch import BatchLimits, BatchState, LineResult
from .teacher import connection_failure

READ_CHUNK = 500     # result lines handed to the store per transaction


class BatchClient(Protocol):
    protocol: str
    limits: BatchLimits
    last_ok: float | None          # time.monotonic() of the last call that succeeded (None: none yet)

    def encode(self, custom_id: str, request: dict[str, Any]) -> bytes: ...
    async def upload(self, tag: str, lines: list[bytes]) -> str | None: ...
    async def create(self, tag: str, input_ref: str | None, lines: list[bytes]) -> BatchState: ...
    async def find(self, tag: str, input_ref: str | None, lines: int, since: float) -> BatchState | None: ...
    async def retrieve(self, provider_id: str) -> BatchState: ...
    async def cancel(self, provider_id: str) -> BatchState: ...
    def results(self, state: BatchState) -> AsyncIterator[list[LineResult]]: ...
    async def aclose(self) -> None: ...


def client_for(config: TeacherConfig, protocol: str) -> BatchClient:
    return AnthropicBatches(config) if protocol == "anthropic" else OpenAIBatches(config)


class _Errors:
    """Turns a failed call into the synchronous path's error classes, read by the provider room."""

    def __init__(self, config: TeacherConfig) -> None:
        self.config = config
        self._key = config.api_key()
        self._reader = providers.reader(providers.identify(config.provider, config.base_url))

    def scrub(self, text: str) -> str:
        return text.replace(self._key, "***") if self._key and len(self._key) >= 4 else text

    def status_error(self, status: int, headers: Mapping[str, str], body: Any, what: str) -> TeacherError:
        fb = self._reader.failure(status, headers, body, now_wall=time.time())
        words = self.scrub(f"{what}: HTTP {status}: {fb.detail}")
        if fb.verdict in ("fatal_auth", "fatal_billing"):
            return FatalError(words, kind="quota_exhausted" if fb.verdict == "fatal_billing" else f"http_{status}",
                              feedback=fb)
        if fb.verdict == "retry":
            return RetryableError(words, kind=f"http_{status}", feedback=fb)
        return PermanentError(words, kind=f"http_{status}", feedback=fb)

    def transport_error(self, e: Exception, what: str) -> TeacherError:
        kind, words = connection_failure(e)
        return RetryableError(self.scrub(f"{what}: connection to {self.config.base_url} failed: {words}"),
                              kind=kind, feedback=providers.Reader.transport(timed_out=False))


def _transport(e: BaseException) -> bool:
    """A failure of the connection itself, whichever HTTP stack raised it (httpx, or the SDK's own httpx2)."""
    return isinstance(e, (openai.APIConnectionError, httpx.HTTPError, OSError)) or \
        type(e).__module__.split(".")[0] in ("httpx", "httpcore", "httpx2", "httpcore2")


class OpenAIBatches:
    """OpenAI's Files + Batch API (and the providers that serve the same endpoints)."""

    protocol = "openai"
    last_ok: float | None = None

    def __init__(self, config: TeacherConfig) -> None:
        self._errors = _Errors(config)
        self._reader = self._errors._reader
        # a provider serving these endpoints may name the file's purpose otherwise, or take less per batch
        found = providers.identify(config.provider, config.base_url)
        self._purpose = found.batch_file_purpose if found else "batch"
        self.limits = BatchLimits(min(openai_batch.LIMITS.max_requests, found and found.batch_max_requests or 10**9),
                                  min(openai_batch.LIMITS.max_bytes, found and found.batch_max_bytes or 10**12))
        self._client = openai.AsyncOpenAI(api_key=config.api_key(), base_url=config.base_url, max_retries=0,
                                          timeout=max(config.timeout, 120.0))

    def encode(self, custom_id: str, request: dict[str, Any]) -> bytes:
        return openai_batch.input_line(custom_id, request)

    async def _call(self, what: str, coro: Any) -> Any:
        try:
            result = await coro
            self.last_ok = time.monotonic()
            return result
        except openai.APIStatusError as e:
            raise self._errors.status_error(e.status_code, e.response.headers,
                                            e.body if e.body is not None else e.message, what) from None
        except Exception as e:
            if not _transport(e):
                raise
            raise self._errors.transport_error(e, what) from None

    async def upload(self, tag: str, lines: list[bytes]) -> str | None:
        made = await self._call("uploading the batch input", self._client.files.create(
            file=(f"{tag}.jsonl", b"".join(lines), "application/jsonl"), purpose=self._purpose))  # type: ignore[arg-type]
        return str(made.id)

    async def create(self, tag: str, input_ref: str | None, lines: list[bytes]) -> BatchState:
        assert input_ref is not None
        made = await self._call("creating the batch", self._client.batches.create(
            **openai_batch.create_params(input_ref, tag)))
        return openai_batch.read_batch(made.model_dump(mode="json"))

    async def find(self, tag: str, input_ref: str | None, lines: int, since: float) -> BatchState | None:
        """The batch made from our input file or carrying our tag, if one was created before a crash
        kept us from recording it (the listing is newest first: stop at batches older than `since`)."""
        page = await self._call("listing batches", self._client.batches.list(limit=100))
        async for b in page:
            state = openai_batch.read_batch(b.model_dump(mode="json"))
            if state.tag == tag or (input_ref is not None and state.input_ref == input_ref):
                return state
            if state.created_at is not None and state.created_at < since - 60:
                return None
        return None

    async def retrieve(self, provider_id: str) -> BatchState:
        b = await self._call("polling the batch", self._client.batches.retrieve(provider_id))
        return openai_batch.read_batch(b.model_dump(mode="json"))

    async def cancel(self, provider_id: str) -> BatchState:
        b = await self._call("cancelling the batch", self._client.batches.cancel(provider_id))
        return openai_batch.read_batch(b.model_dump(mode="json"))

    async def results(self, state: BatchState) -> AsyncIterator[list[LineResult]]:
        for file_id in (state.output_ref, state.error_ref):
            if not file_id:
                continue
            chunk: list[LineResult] = []
            try:
                async with self._client.files.with_streaming_response.content(file_id) as response:
                    async for text in response.iter_lines():
                        if text.strip():
                            chunk.append(openai_batch.read_line(json.loads(text), self._reader))
                        if len(chunk) >= READ_CHUNK:
                            yield chunk
                            chunk = []
            except openai.APIStatusError as e:
                raise self._errors.status_error(e.status_code, e.response.headers, e.message,
                                                "reading the batch results") from None
            except Exception as e:
                if not _transport(e):
                    raise
                raise self._errors.transport_error(e, "reading the batch results") from None
            if chunk:
                yield chunk

    async def aclose(self) -> None:
        await self._client.close()


class AnthropicBatches:
    """Anthropic's Message Batches (`/v1/messages/batches`)."""

    protocol = "anthropic"
    limits = anthropic_batch.LIMITS
    last_ok: float | None = None

    def __init__(self, config: TeacherConfig) -> None:
        self._errors = _Errors(config)
        self._max_tokens = config.max_tokens or 4096
        headers = {"anthropic-version": anthropic_batch.VERSION, "content-type": "application/json"}
        if (key := config.api_key()) is not None:
            headers["x-api-key"] = key
        self._base = config.base_url.rstrip("/")
        self._http = httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(max(config.timeout, 120.0), connect=15.0))

    def encode(self, custom_id: str, request: dict[str, Any]) -> bytes:
        return json.dumps(anthropic_batch.request_entry(custom_id, request, self._max_tokens),
                          ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def _json(self, method: str, url: str, what: str, content: bytes | None = None) -> Any:
        try:
            r = await self._http.request(method, url, content=content)
        except httpx.HTTPError as e:
            raise self._errors.transport_error(e, what) from None
        if r.status_code >= 400:
            try:
                body: Any = r.json()
            except ValueError:
                body = r.text[:500]
            raise self._errors.status_error(r.status_code, r.headers, body, what)
        self.last_ok = time.monotonic()
        return r.json()

    async def upload(self, tag: str, lines: list[bytes]) -> str | None:
        return None            # the requests travel in the create call

    async def create(self, tag: str, input_ref: str | None, lines: list[bytes]) -> BatchState:
        body = b'{"requests":[' + b",".join(lines) + b"]}"
        return anthropic_batch.read_batch(await self._json("POST", f"{self._base}/messages/batches",
                                                           "creating the batch", body))

    async def find(self, tag: str, input_ref: str | None, lines: int, since: float) -> BatchState | None:
        """A batch created since our intent with as many requests as ours: Message Batches carry no
        metadata, so the count and the time are what tell it (custom_ids confirm it when read)."""
        page = await self._json("GET", f"{self._base}/messages/batches?limit=100", "listing batches")
        for obj in page.get("data", []):
            state = anthropic_batch.read_batch(obj)
            if state.created_at is not None and state.created_at >= since - 5 and state.total == lines:
                return state
        return None

    async def retrieve(self, provider_id: str) -> BatchState:
        return anthropic_batch.read_batch(await self._json("GET", f"{self._base}/messages/batches/{provider_id}",
                                                           "polling the batch"))

    async def cancel(self, provider_id: str) -> BatchState:
        return anthropic_batch.read_batch(await self._json(
            "POST", f"{self._base}/messages/batches/{provider_id}/cancel", "cancelling the batch"))

    async def results(self, state: BatchState) -> AsyncIterator[list[LineResult]]:
        url = state.output_ref or f"{self._base}/messages/batches/{state.id}/results"
        chunk: list[LineResult] = []
        try:
            async with self._http.stream("GET", url) as r:
                if r.status_code >= 400:
                    await r.aread()
                    raise self._errors.status_error(r.status_code, r.headers, r.text[:500], "reading the batch results")
                async for text in r.aiter_lines():
                    if text.strip():
                        chunk.append(anthropic_batch.read_line(json.loads(text)))
                    if len(chunk) >= READ_CHUNK:
                        yield chunk
                        chunk = []
        except httpx.HTTPError as e:
            raise self._errors.transport_error(e, "reading the batch results") from None
        if chunk:
            yield chunk

    async def aclose(self) -> None:
        await self._http.aclose()
