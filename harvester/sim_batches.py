"""The simulator's batch APIs: OpenAI's Files + Batch API and Anthropic's Message Batches.

Shapes follow the official SDKs' types field by field: openai-python 3.57.0 (`openai.types.Batch`,
`BatchRequestCounts`, `BatchError`, `BatchUsage`, `FileObject`, `FileDeleted`, `batch_create_params`,
the `SyncCursorPage` that `batches.list` returns) and anthropic-sdk-python 2.15.0
(`anthropic.types.messages.MessageBatch`, `MessageBatchRequestCounts`, `MessageBatchIndividualResponse`
and its four results, `DeletedMessageBatch`, `batch_create_params`, `anthropic.types.Message`, the
`SyncPage` that `messages.batches.list` returns).

A batch line gets the answer the chat endpoint would give to the same messages at that moment
(`Simulator.compose`), and is counted as one (`/sim/stats`), so samples, refusals and the log work
the same in both modes. Time is simulated lazily: nothing runs in the background; whenever a batch is
looked at (any request, or /sim/stats) the lines whose time has come are answered, in order. A batch
ends `batch_delay` seconds after its creation, its lines finishing evenly over that span, so a poll
midway sees part of them done; `batch_expire_after` cuts it short (the lines done are kept).

What the documentation says and the simulator does:
- OpenAI: `validating` (the first tenth of the delay; the input is checked then, and a batch that fails
  the checks or the enqueued-token limit turns `failed` with `errors.data`), `in_progress`
  (`request_counts` grow as lines finish), `finalizing` (the last tenth), `completed`. Successful lines
  go to the output file, failed ones to the error file, a file only when it has lines. On expiry the
  unanswered lines go to the error file with `batch_expired`; a cancelled batch keeps the lines done
  before `cancelling` ended and writes nothing for the others. `request_counts` count lines executed.
- Anthropic: `in_progress` → `canceling` → `ended`; `request_counts` stay `processing` until the batch
  ends (as the SDK documents), `results_url` appears then, and every request has one result line:
  `succeeded`, `errored`, `canceled` or `expired`. `params` are checked when a line is processed (the
  documentation: asynchronously), `custom_id`s and the batch's size at creation.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from aiohttp import BodyPartReader, web

from .sim import prompt_key, prompt_tokens

if TYPE_CHECKING:
    from .sim import Answer, Simulator

Protocol = Literal["openai", "anthropic"]
DAY = 24 * 3600.0
LIMITS = {"openai": (50_000, 200 * 1024 * 1024), "anthropic": (100_000, 256 * 1024 * 1024)}  # lines, bytes
FILE_MAX_BYTES = 512 * 1024 * 1024           # OpenAI's limit on any uploaded file (a batch's input: LIMITS)
OPENAI_ENDPOINT = "/v1/chat/completions"      # the only endpoint the simulator answers in a batch
_CUSTOM_ID = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")   # Anthropic's documented custom_id pattern


def rfc3339(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, tz=UTC).isoformat().replace("+00:00", "Z")


def _id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


@dataclass
class File:
    id: str
    filename: str
    purpose: str
    content: bytes
    created_at: float = field(default_factory=time.time)

    def obj(self) -> dict[str, Any]:
        return {"id": self.id, "object": "file", "bytes": len(self.content), "created_at": int(self.created_at),
                "filename": self.filename, "purpose": self.purpose, "status": "processed",
                "expires_at": int(self.created_at + 30 * DAY) if self.purpose.startswith("batch") else None,
                "status_details": None}


@dataclass
class Line:
    custom_id: str
    body: dict[str, Any]              # OpenAI: the chat request's body; Anthropic: the Messages params
    due: float = 0.0                  # when it is answered (wall clock)
    outcome: str | None = None        # succeeded | errored | expired | canceled
    result: dict[str, Any] | None = None   # the output/error file line (OpenAI), the `result` (Anthropic)


@dataclass
class Batch:
    protocol: Protocol
    id: str
    lines: list[Line]
    created_at: float
    delay: float
    expires_at: float
    model: str | None = None
    input_file_id: str = ""
    metadata: dict[str, str] | None = None
    status: str = "validating"        # OpenAI's statuses; Anthropic's are derived from them
    errors: list[dict[str, Any]] = field(default_factory=list)   # OpenAI validation errors
    input_tokens: int = 0             # prompt tokens of all its lines: the enqueued tokens
    times: dict[str, float] = field(default_factory=dict)   # in_progress, finalizing, completed, ...
    cancel_at: float | None = None
    done: int = 0                     # lines processed (they are processed in order)
    output_file_id: str | None = None
    error_file_id: str | None = None

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "failed", "expired", "cancelled")

    def counts(self) -> Counter[str]:
        return Counter(line.outcome for line in self.lines if line.outcome)


class BatchProtocols:
    """Both protocols' state (files, batches) and handlers, on one Simulator."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.files: dict[str, File] = {}
        self.batches: dict[str, Batch] = {}            # in creation order
        self.created: Counter[str] = Counter()         # batches created, per protocol
        self.ended: Counter[str] = Counter()           # "openai:completed", "anthropic:ended", ...
        self.lines: Counter[str] = Counter()           # received, answered, errored, expired, canceled
        self.per_custom_id: Counter[str] = Counter()   # answers given per custom_id
        self.attempts: Counter[str] = Counter()        # lines processed per custom_id (transient errors re-roll)
        # Called with each new batch before the create call answers: a test's way to crash its client in the
        # gap between the provider creating a batch and the client recording it.
        self.on_created: Callable[[Batch], None] | None = None

    def add_routes(self, app: web.Application) -> None:
        r = app.router
        r.add_post("/v1/files", self._file_create)
        r.add_get("/v1/files", self._file_list)
        r.add_get("/v1/files/{id}", self._file_get)
        r.add_delete("/v1/files/{id}", self._file_delete)
        r.add_get("/v1/files/{id}/content", self._file_content)
        r.add_post("/v1/batches", self._oa_create)
        r.add_get("/v1/batches", self._oa_list)
        r.add_get("/v1/batches/{id}", self._oa_get)
        r.add_post("/v1/batches/{id}/cancel", self._oa_cancel)
        r.add_post("/v1/messages/batches", self._an_create)
        r.add_get("/v1/messages/batches", self._an_list)
        r.add_get("/v1/messages/batches/{id}", self._an_get)
        r.add_delete("/v1/messages/batches/{id}", self._an_delete)
        r.add_post("/v1/messages/batches/{id}/cancel", self._an_cancel)
        r.add_get("/v1/messages/batches/{id}/results", self._an_results)

    def limits(self, protocol: Protocol) -> tuple[int, int]:
        lines, size = LIMITS[protocol]
        cfg = self.sim.config
        return cfg.batch_max_lines or lines, cfg.batch_max_bytes or size

    # --- stats ------------------------------------------------------------------------------------
    def stats(self, detail: bool = False) -> dict[str, Any]:
        self.advance_all()
        out: dict[str, Any] = {
            "batches_created": dict(self.created),
            "batches_ended": dict(sorted(self.ended.items())),
            "batches_open": sum(1 for b in self.batches.values() if not b.ended),
            "batch_lines_received": self.lines["received"],
            "batch_lines_answered": self.lines["answered"],
            "batch_lines_errored": self.lines["errored"],
            "batch_lines_expired": self.lines["expired"],
            "batch_lines_canceled": self.lines["canceled"],
            "batch_custom_ids_answered": len(self.per_custom_id),
            "batch_custom_ids_answered_more_than_once": sum(1 for c in self.per_custom_id.values() if c > 1),
        }
        if detail:
            out["batch_answers_per_custom_id"] = dict(self.per_custom_id)
        return out

    # --- time -------------------------------------------------------------------------------------
    def advance_all(self) -> None:
        now = time.time()
        for b in self.batches.values():
            self.advance(b, now)

    def _new_batch(self, protocol: Protocol, lines: list[Line], **kw: Any) -> Batch:
        cfg = self.sim.config
        now = time.time()
        expire = cfg.batch_expire_after if cfg.batch_expire_after is not None else DAY
        b = Batch(protocol, _id("batch_" if protocol == "openai" else "msgbatch_"), lines, now,
                  max(0.0, cfg.batch_delay), now + expire, **kw)
        # OpenAI: a tenth validating, eight tenths answering, a tenth finalizing; Anthropic: all answering.
        start, span = (0.1, 0.8) if protocol == "openai" else (0.0, 1.0)
        for i, line in enumerate(lines):
            line.due = now + b.delay * (start + span * (i + 1) / len(lines))
        self.batches[b.id] = b
        self.created[protocol] += 1
        self.lines["received"] += len(lines)
        if self.on_created is not None:
            self.on_created(b)
        return b

    def advance(self, b: Batch, now: float) -> None:
        """Bring `b` to what time `now` has made of it."""
        if b.ended:
            return
        if b.status == "validating":
            start = b.created_at + 0.1 * b.delay if b.protocol == "openai" else b.created_at
            if now < start:
                return
            if not b.errors and b.protocol == "openai":   # Anthropic refuses such a batch at creation
                self._check_enqueued(b)
            if b.errors:
                self._finish(b, "failed", start)
                return
            b.status, b.times["in_progress"] = "in_progress", start
        stop = b.cancel_at if b.cancel_at is not None else min(now, b.expires_at)
        while b.done < len(b.lines) and b.lines[b.done].due <= stop:
            self._process(b, b.lines[b.done])
            b.done += 1
        if b.cancel_at is not None:
            # in-flight lines are done, the rest is dropped; a grace of a tenth of the delay, as cancelling
            # takes a while at the providers
            if now >= b.cancel_at + 0.1 * b.delay:
                self._finish(b, "cancelled", b.cancel_at + 0.1 * b.delay)
            return
        if b.done < len(b.lines):
            if now >= b.expires_at:
                self._finish(b, "expired", b.expires_at)
            return
        last = b.lines[-1].due if b.lines else b.created_at
        end = b.created_at + b.delay if b.protocol == "openai" else last
        if now >= end:
            b.times.setdefault("finalizing", last)
            self._finish(b, "completed", end)
        elif b.status != "finalizing":
            b.status, b.times["finalizing"] = "finalizing", last

    def _check_enqueued(self, b: Batch) -> None:
        """OpenAI's enqueued-token limit: the prompt tokens of unfinished batches, this one's included."""
        limit = self.sim.config.batch_enqueued_tokens
        if limit is None:
            return
        queued = sum(o.input_tokens for o in self.batches.values()
                     if o is not b and o.protocol == b.protocol and not o.ended and o.status != "validating")
        if queued + b.input_tokens > limit:
            b.errors.append({"code": "token_limit_exceeded", "line": None, "param": None,
                             "message": f"Enqueued token limit reached for {b.model or self.sim.config.model} in "
                                        f"organization org-sim. Limit: {limit:,} enqueued tokens. Please try again "
                                        "once some in_progress batches have been completed."})

    def _finish(self, b: Batch, status: str, at: float) -> None:
        left = b.lines[b.done:]
        if status in ("expired", "cancelled"):
            outcome = "expired" if status == "expired" else "canceled"
            for line in left:
                line.outcome = outcome
                if b.protocol == "anthropic":
                    line.result = {"type": outcome}
                elif status == "expired":   # OpenAI writes expired lines to the error file, not cancelled ones
                    line.result = {"id": _id("batch_req_"), "custom_id": line.custom_id, "response": None,
                                   "error": {"code": "batch_expired", "message": "This request could not be "
                                             "executed before the completion window expired."}}
            self.lines[outcome] += len(left)
        b.status = status
        b.times[status] = at
        if b.protocol == "openai" and status != "failed":
            ok = [line.result for line in b.lines if line.outcome == "succeeded"]
            bad = [line.result for line in b.lines if line.outcome != "succeeded" and line.result is not None]
            b.output_file_id = self._result_file(b, "output", ok)
            b.error_file_id = self._result_file(b, "error", bad)
        self.ended[f"{b.protocol}:{status}"] += 1

    def _result_file(self, b: Batch, kind: str, rows: list[Any]) -> str | None:
        if not rows:
            return None
        f = File(_id("file-"), f"{b.id}_{kind}.jsonl", "batch_output",
                 "".join(json.dumps(r) + "\n" for r in rows).encode())
        self.files[f.id] = f
        return f.id

    # --- answering a line -------------------------------------------------------------------------
    def _process(self, b: Batch, line: Line) -> None:
        cfg = self.sim.config
        cid = line.custom_id
        attempt = self.attempts[cid]
        self.attempts[cid] += 1
        problem: tuple[int, str, str] | None = None        # status, type/code, message
        if random.Random(f"batch-invalid:{cid}:{cfg.seed}").random() < cfg.batch_invalid_rate:
            problem = (400, "invalid_request_error", "The request is invalid (simulated permanent line error).")
        elif random.Random(f"batch-error:{cid}:{attempt}:{cfg.seed}").random() < cfg.batch_error_rate:
            problem = (500, "server_error", "The server had an error while processing your request.")
        messages, max_tokens = None, None
        if problem is None:
            if b.protocol == "openai":
                messages, max_tokens, problem = self._openai_request(line.body)
            else:
                messages, max_tokens, problem = self._anthropic_request(line.body)
        if problem is None and messages is not None:
            p_tokens = prompt_tokens(messages)
            if cfg.max_context is not None and p_tokens + (max_tokens or 0) > cfg.max_context:
                problem = (400, "context_length_exceeded",
                           f"This model's maximum context length is {cfg.max_context} tokens.")
        if problem is not None or messages is None:
            status, code, message = problem or (400, "invalid_request_error", "invalid request")
            line.outcome = "errored"
            line.result = self._error_line(b, line, status, code, message)
            self.lines["errored"] += 1
            return
        key = prompt_key(messages)
        answer = self.sim.compose(messages, max_tokens, key, line.body if b.protocol == "openai" else None)
        self.sim.record_answer(key, p_tokens, answer, custom_id=cid, batch=b.id)
        self.lines["answered"] += 1
        self.per_custom_id[cid] += 1
        line.outcome = "succeeded"
        if b.protocol == "openai":
            line.result = {"id": _id("batch_req_"), "custom_id": cid, "error": None,
                           "response": {"status_code": 200, "request_id": secrets.token_hex(16),
                                        "body": self.sim.completion_body(key, p_tokens, answer)}}
        else:
            line.result = {"type": "succeeded", "message": self._message(key, p_tokens, answer)}

    def _openai_request(self, body: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, int | None,
                                                              tuple[int, str, str] | None]:
        cfg = self.sim.config
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return None, None, (400, "invalid_request_error", ("The request body is not a valid chat completion "
                                                                "request: `messages` must be a non-empty array."))
        if cfg.check_model and body.get("model") != cfg.model:
            return None, None, (404, "model_not_found", (f"The model `{body.get('model')}` does not exist or "
                                                          "you do not have access to it."))
        return messages, body.get("max_completion_tokens", body.get("max_tokens")), None

    def _anthropic_request(self, params: dict[str, Any]) -> tuple[list[dict[str, Any]] | None, int | None,
                                                                   tuple[int, str, str] | None]:
        """The Messages params as the chat messages answer_for reads: `system` first, text blocks joined."""
        cfg = self.sim.config
        bad = (400, "invalid_request_error")
        if not isinstance(params.get("model"), str):
            return None, None, (*bad, "model: Field required")
        max_tokens = params.get("max_tokens")
        if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
            return None, None, (*bad, "max_tokens: Field required (an integer of at least 1)")
        raw = params.get("messages")
        if not isinstance(raw, list) or not raw:
            return None, None, (*bad, "messages: at least one message is required")
        messages: list[dict[str, Any]] = []
        system = params.get("system")
        if system:
            messages.append({"role": "system", "content": _text(system)})
        for i, m in enumerate(raw):
            if not isinstance(m, dict) or m.get("role") not in ("user", "assistant"):
                return None, None, (*bad, f"messages.{i}.role: Input should be 'user' or 'assistant'")
            messages.append({"role": m["role"], "content": _text(m.get("content", ""))})
        if cfg.check_model and params["model"] != cfg.model:
            return None, None, (404, "not_found_error", f"model: {params['model']}")
        return messages, max_tokens, None

    def _error_line(self, b: Batch, line: Line, status: int, code: str, message: str) -> dict[str, Any]:
        if b.protocol == "openai":
            kind = "server_error" if status >= 500 else "invalid_request_error"
            return {"id": _id("batch_req_"), "custom_id": line.custom_id, "error": None,
                    "response": {"status_code": status, "request_id": secrets.token_hex(16),
                                 "body": {"error": {"message": message, "type": kind, "param": None,
                                                    "code": None if code == kind else code}}}}
        kind = "api_error" if status >= 500 else ("not_found_error" if status == 404 else "invalid_request_error")
        return {"type": "errored", "error": {"type": "error", "error": {"type": kind, "message": message},
                                             "request_id": "req_" + secrets.token_hex(12)}}

    def _message(self, key: str, p_tokens: int, answer: Answer) -> dict[str, Any]:
        content: list[dict[str, Any]] = []
        if answer.reasoning:
            content.append({"type": "thinking", "thinking": answer.reasoning, "signature": "sim"})
        if answer.text is not None:
            content.append({"type": "text", "text": answer.text, "citations": None})
        return {"id": f"msg_{key}", "type": "message", "role": "assistant", "content": content,
                "model": self.sim.config.model,
                "stop_reason": "max_tokens" if answer.finish == "length" else "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": p_tokens,
                          "output_tokens": answer.completion_tokens + answer.reasoning_tokens,
                          "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0,
                          "service_tier": "batch"}}

    # --- OpenAI: files ----------------------------------------------------------------------------
    def _oa_auth(self, request: web.Request) -> web.Response | None:
        key = self.sim.config.api_key
        if key is not None and request.headers.get("Authorization") != f"Bearer {key}":
            return _oa_error(401, "Incorrect API key provided.", "invalid_request_error", "invalid_api_key")
        return None

    async def _file_create(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            return _oa_error(400, "The request must be multipart/form-data with `file` and `purpose`.")
        purpose, name, content = None, "upload.jsonl", None
        # read part by part: an input file may be far larger than the chat endpoint's body limit
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):     # a nested multipart: no such field in the API
                return _oa_error(400, "Unexpected nested multipart body.")
            if part.name == "purpose":
                purpose = (await part.read()).decode()
            elif part.name == "file":
                name = getattr(part, "filename", None) or name
                chunks, size = [], 0
                while chunk := await part.read_chunk(1 << 20):   # part.read() stops at the chat body limit
                    size += len(chunk)
                    if size > FILE_MAX_BYTES:
                        return _oa_error(413, f"The file exceeds the maximum size of {FILE_MAX_BYTES:,} bytes.")
                    chunks.append(chunk)
                content = b"".join(chunks)
        if content is None or not purpose:
            return _oa_error(400, "Missing required parameter: 'file' and 'purpose'.", param="file")
        f = File(_id("file-"), name, purpose, content)
        self.files[f.id] = f
        return web.json_response(f.obj())

    def _file(self, request: web.Request) -> File | web.Response:
        f = self.files.get(request.match_info["id"])
        if f is None:
            return _oa_error(404, f"No such File object: {request.match_info['id']}", param="id")
        return f

    async def _file_get(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        f = self._file(request)
        return f if isinstance(f, web.Response) else web.json_response(f.obj())

    async def _file_list(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        files = [f for f in self.files.values() if request.query.get("purpose") in (None, f.purpose)]
        if request.query.get("order", "desc") == "desc":
            files.reverse()
        return _cursor_page(request, files, File.obj, 10_000, 10_000)

    async def _file_delete(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        f = self._file(request)
        if isinstance(f, web.Response):
            return f
        del self.files[f.id]
        return web.json_response({"id": f.id, "object": "file", "deleted": True})

    async def _file_content(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        f = self._file(request)
        if isinstance(f, web.Response):
            return f
        return web.Response(body=f.content, content_type="application/octet-stream")

    # --- OpenAI: batches --------------------------------------------------------------------------
    async def _oa_create(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        try:
            body = await request.json()
            assert isinstance(body, dict)
        except Exception:  # noqa: BLE001
            return _oa_error(400, "We could not parse the JSON body of your request.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str):
                return _oa_error(400, f"Missing required parameter: '{name}'.", param=name)
        if body["endpoint"] != OPENAI_ENDPOINT:
            return _oa_error(400, f"Invalid value for 'endpoint': the simulator answers {OPENAI_ENDPOINT} only.",
                             param="endpoint")
        if body["completion_window"] != "24h":
            return _oa_error(400, "Invalid value for 'completion_window': only '24h' is supported.",
                             param="completion_window")
        metadata = body.get("metadata")
        if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and all(
                isinstance(k, str) and isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                for k, v in metadata.items())):
            return _oa_error(400, "Invalid 'metadata': at most 16 string pairs, keys of at most 64 characters, "
                             "values of at most 512.", param="metadata")
        f = self.files.get(body["input_file_id"])
        if f is None:
            return _oa_error(404, f"No such File object: {body['input_file_id']}", param="input_file_id")
        if f.purpose != "batch":
            return _oa_error(400, f"File {f.id} was not uploaded with purpose 'batch'.", param="input_file_id")
        lines, errors, model, tokens = self._parse_input(f.content)
        b = self._new_batch("openai", lines, model=model, input_file_id=f.id, metadata=metadata)
        b.errors, b.input_tokens = errors, tokens
        return web.json_response(self._oa_obj(b))

    def _parse_input(self, content: bytes) -> tuple[list[Line], list[dict[str, Any]], str | None, int]:
        """The input file's lines and, as OpenAI checks them while `validating`, its errors."""
        max_lines, max_bytes = self.limits("openai")
        errors: list[dict[str, Any]] = []

        def error(code: str, message: str, line: int | None = None, param: str | None = None) -> None:
            if len(errors) < 100:        # the providers report a sample, not every error of a huge file
                errors.append({"code": code, "message": message, "line": line, "param": param})
        if len(content) > max_bytes:
            error("file_too_large", f"The input file is {len(content):,} bytes; at most {max_bytes:,} are allowed.")
        rows = [(n, raw) for n, raw in enumerate(content.decode("utf-8", "replace").splitlines(), 1) if raw.strip()]
        if not rows:
            error("empty_file", "The input file is empty.")
        if len(rows) > max_lines:
            error("too_many_tasks", f"The input file has {len(rows):,} requests; at most {max_lines:,} are allowed "
                  "per batch.")
        lines: list[Line] = []
        seen: set[str] = set()
        models: set[str] = set()
        tokens = 0
        for n, raw in rows:
            try:
                row = json.loads(raw)
                assert isinstance(row, dict)
            except Exception:  # noqa: BLE001
                error("invalid_json_line", "This line is not parseable as valid JSON.", n)
                continue
            cid, body = row.get("custom_id"), row.get("body")
            if not isinstance(cid, str) or not cid:
                error("missing_required_parameter", "Missing required parameter: 'custom_id'.", n, "custom_id")
                continue
            if cid in seen:
                error("duplicate_custom_id", "The custom_id for this request is a duplicate of another request. "
                      "The custom_id parameter must be unique for each request in a batch.", n, "custom_id")
                continue
            seen.add(cid)
            if row.get("method") != "POST":
                error("invalid_method", "The method of every request must be POST.", n, "method")
            if row.get("url") != OPENAI_ENDPOINT:
                error("url_mismatch", f"The url of this request ({row.get('url')!r}) does not match the batch's "
                      f"endpoint ({OPENAI_ENDPOINT}).", n, "url")
            if not isinstance(body, dict):
                error("missing_required_parameter", "Missing required parameter: 'body'.", n, "body")
                continue
            if isinstance(body.get("model"), str):
                models.add(body["model"])
                if len(models) > 1:
                    error("model_mismatch", "Every request of a batch must use the same model.", n, "body.model")
            messages = body.get("messages")
            if isinstance(messages, list):
                tokens += prompt_tokens(messages)
            lines.append(Line(cid, body))
        return lines, errors, next(iter(sorted(models)), None), tokens

    def _oa_obj(self, b: Batch) -> dict[str, Any]:
        t = b.times
        counted = b.status != "validating" and b.status != "failed"
        c = b.counts()
        usage = None
        if b.ended and b.status != "failed":
            i = sum(r["response"]["body"]["usage"]["prompt_tokens"] for r in _ok_rows(b))
            o = sum(r["response"]["body"]["usage"]["completion_tokens"] for r in _ok_rows(b))
            reasoning = sum(r["response"]["body"]["usage"].get("completion_tokens_details", {})
                            .get("reasoning_tokens", 0) for r in _ok_rows(b))
            usage = {"input_tokens": i, "input_tokens_details": {"cached_tokens": 0}, "output_tokens": o,
                     "output_tokens_details": {"reasoning_tokens": reasoning}, "total_tokens": i + o}

        def ts(name: str) -> int | None:
            return int(t[name]) if name in t else None
        return {"id": b.id, "object": "batch", "endpoint": OPENAI_ENDPOINT, "model": b.model,
                "errors": {"object": "list", "data": b.errors} if b.errors else None,
                "input_file_id": b.input_file_id, "completion_window": "24h", "status": b.status,
                "output_file_id": b.output_file_id, "error_file_id": b.error_file_id,
                "created_at": int(b.created_at), "in_progress_at": ts("in_progress"),
                "expires_at": int(b.expires_at), "finalizing_at": ts("finalizing"),
                "completed_at": ts("completed"), "failed_at": ts("failed"), "expired_at": ts("expired"),
                "cancelling_at": ts("cancelling"), "cancelled_at": ts("cancelled"),
                "request_counts": {"total": len(b.lines) if counted else 0, "completed": c["succeeded"],
                                   "failed": c["errored"]},
                "usage": usage, "metadata": b.metadata}

    def _oa_batch(self, request: web.Request) -> Batch | web.Response:
        b = self.batches.get(request.match_info["id"])
        if b is None or b.protocol != "openai":
            return _oa_error(404, f"No batch found with id '{request.match_info['id']}'.", param="batch_id")
        self.advance(b, time.time())
        return b

    async def _oa_get(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        b = self._oa_batch(request)
        return b if isinstance(b, web.Response) else web.json_response(self._oa_obj(b))

    async def _oa_list(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        self.advance_all()
        newest_first = [b for b in reversed(self.batches.values()) if b.protocol == "openai"]
        return _cursor_page(request, newest_first, self._oa_obj, 20, 100)

    async def _oa_cancel(self, request: web.Request) -> web.Response:
        if (denied := self._oa_auth(request)) is not None:
            return denied
        b = self._oa_batch(request)
        if isinstance(b, web.Response):
            return b
        if b.ended or b.cancel_at is not None:
            return _oa_error(409, f"Cannot cancel a batch with status '{b.status}'.")
        self._cancel(b)
        return web.json_response(self._oa_obj(b))

    def _cancel(self, b: Batch) -> None:
        now = time.time()
        self.advance(b, now)                # the lines due by now are done; the others never will be
        if b.ended:                         # it ended just now: nothing left to cancel
            return
        b.cancel_at = now
        b.status, b.times["cancelling"] = "cancelling", now
        self.advance(b, now)                # with no delay, cancelled at once

    # --- Anthropic ----------------------------------------------------------------------------------
    def _an_auth(self, request: web.Request) -> web.Response | None:
        key = self.sim.config.api_key
        if key is None:
            return None       # a simulator started without a key accepts any request, as its chat endpoint
        if "x-api-key" not in request.headers:
            return _an_error(401, "authentication_error", "x-api-key header is required")
        if request.headers["x-api-key"] != key:
            return _an_error(401, "authentication_error", "invalid x-api-key")
        if not request.headers.get("anthropic-version"):
            return _an_error(400, "invalid_request_error", "anthropic-version: header is required")
        return None

    async def _an_create(self, request: web.Request) -> web.Response:
        if (denied := self._an_auth(request)) is not None:
            return denied
        max_lines, max_bytes = self.limits("anthropic")
        raw = await _read_limited(request, max_bytes)
        if raw is None:
            return _an_error(413, "request_too_large", f"Request exceeds the maximum size of {max_bytes:,} bytes.")
        try:
            body = json.loads(raw)
            requests = body["requests"]
            assert isinstance(requests, list)
        except Exception:  # noqa: BLE001
            return _an_error(400, "invalid_request_error", "requests: Field required (a list of "
                             "{custom_id, params})")
        if not requests:
            return _an_error(400, "invalid_request_error", "requests: List should have at least 1 item")
        if len(requests) > max_lines:
            return _an_error(400, "invalid_request_error", f"requests: a batch holds at most {max_lines:,} "
                             f"requests; this one has {len(requests):,}")
        lines: list[Line] = []
        seen: set[str] = set()
        tokens = 0
        for i, r in enumerate(requests):
            cid = r.get("custom_id") if isinstance(r, dict) else None
            if not isinstance(cid, str) or not _CUSTOM_ID.match(cid):
                return _an_error(400, "invalid_request_error", f"requests.{i}.custom_id: String should match "
                                 f"pattern '{_CUSTOM_ID.pattern}'")
            if cid in seen:
                return _an_error(400, "invalid_request_error", f"requests.{i}.custom_id: Duplicate custom_id "
                                 f"'{cid}'; custom_id must be unique within a batch")
            if not isinstance(r.get("params"), dict):
                return _an_error(400, "invalid_request_error", f"requests.{i}.params: Field required")
            seen.add(cid)
            params = r["params"]
            msgs = params.get("messages") if isinstance(params.get("messages"), list) else []
            system = [{"role": "system", "content": _text(params["system"])}] if params.get("system") else []
            tokens += prompt_tokens(system + msgs)
            lines.append(Line(cid, params))
        limit = self.sim.config.batch_enqueued_tokens
        if limit is not None:
            queued = sum(b.input_tokens for b in self.batches.values() if b.protocol == "anthropic" and not b.ended)
            if queued + tokens > limit:   # Anthropic refuses at once: a rate limit on the processing queue
                return _an_error(429, "rate_limit_error", f"Number of enqueued batch tokens exceeds the limit of "
                                 f"{limit:,}; retry once some batches have ended.")
        b = self._new_batch("anthropic", lines, model=self.sim.config.model, input_tokens=tokens)
        self.advance(b, time.time())
        return web.json_response(self._an_obj(b, request))

    def _an_obj(self, b: Batch, request: web.Request) -> dict[str, Any]:
        c = b.counts()
        ended = b.ended
        status = "ended" if ended else ("canceling" if b.cancel_at is not None else "in_progress")
        counts = {"processing": 0 if ended else len(b.lines),   # the others stay 0 until the batch ends
                  "succeeded": c["succeeded"] if ended else 0, "errored": c["errored"] if ended else 0,
                  "canceled": c["canceled"] if ended else 0, "expired": c["expired"] if ended else 0}
        end = next((b.times[s] for s in ("completed", "expired", "cancelled") if s in b.times), None)
        results = f"{request.scheme}://{request.host}/v1/messages/batches/{b.id}/results" if ended else None
        return {"id": b.id, "type": "message_batch", "processing_status": status, "request_counts": counts,
                "ended_at": rfc3339(end), "created_at": rfc3339(b.created_at), "expires_at": rfc3339(b.expires_at),
                "archived_at": None, "cancel_initiated_at": rfc3339(b.cancel_at), "results_url": results}

    def _an_batch(self, request: web.Request) -> Batch | web.Response:
        if (denied := self._an_auth(request)) is not None:
            return denied
        b = self.batches.get(request.match_info["id"])
        if b is None or b.protocol != "anthropic":
            return _an_error(404, "not_found_error", f"Message Batch {request.match_info['id']} not found")
        self.advance(b, time.time())
        return b

    async def _an_get(self, request: web.Request) -> web.Response:
        b = self._an_batch(request)
        return b if isinstance(b, web.Response) else web.json_response(self._an_obj(b, request))

    async def _an_list(self, request: web.Request) -> web.Response:
        if (denied := self._an_auth(request)) is not None:
            return denied
        self.advance_all()
        items = [b for b in reversed(self.batches.values()) if b.protocol == "anthropic"]   # newest first
        try:
            limit = int(request.query.get("limit", 20))
            assert 1 <= limit <= 1000
        except (ValueError, AssertionError):
            return _an_error(400, "invalid_request_error", "limit: Input should be between 1 and 1000")
        ids = [b.id for b in items]
        after, before = request.query.get("after_id"), request.query.get("before_id")
        if after and before:
            return _an_error(400, "invalid_request_error", "give after_id or before_id, not both")
        for cursor in (after, before):
            if cursor and cursor not in ids:
                return _an_error(400, "invalid_request_error", f"Message Batch {cursor} not found")
        if before:          # the page just before (newer than) `before`
            end = ids.index(before)
            page, has_more = items[max(0, end - limit):end], end - limit > 0
        else:
            start = ids.index(after) + 1 if after else 0
            page, has_more = items[start:start + limit], start + limit < len(items)
        return web.json_response({"data": [self._an_obj(b, request) for b in page], "has_more": has_more,
                                  "first_id": page[0].id if page else None,
                                  "last_id": page[-1].id if page else None})

    async def _an_cancel(self, request: web.Request) -> web.Response:
        b = self._an_batch(request)
        if isinstance(b, web.Response):
            return b
        if b.ended or b.cancel_at is not None:
            return _an_error(400, "invalid_request_error", f"Message Batch {b.id} cannot be canceled: it has "
                             f"already {'ended' if b.ended else 'been canceled'}")
        self._cancel(b)
        return web.json_response(self._an_obj(b, request))

    async def _an_delete(self, request: web.Request) -> web.Response:
        b = self._an_batch(request)
        if isinstance(b, web.Response):
            return b
        if not b.ended:
            return _an_error(400, "invalid_request_error", f"Message Batch {b.id} is still processing; cancel it "
                             "first, it can be deleted once it has ended")
        del self.batches[b.id]
        return web.json_response({"id": b.id, "type": "message_batch_deleted"})

    async def _an_results(self, request: web.Request) -> web.Response:
        b = self._an_batch(request)
        if isinstance(b, web.Response):
            return b
        if not b.ended:
            return _an_error(400, "invalid_request_error", f"Message Batch {b.id} has not ended yet; its results "
                             "are available once processing_status is 'ended'")
        body = "".join(json.dumps({"custom_id": line.custom_id, "result": line.result}) + "\n" for line in b.lines)
        return web.Response(text=body, content_type="application/binary")


def _ok_rows(b: Batch) -> list[dict[str, Any]]:
    return [line.result for line in b.lines if line.outcome == "succeeded" and line.result is not None]


def _text(content: Any) -> str:
    """Anthropic content: a string, or blocks whose text parts make the string the chat endpoint gets."""
    if isinstance(content, list):
        return "".join(str(block.get("text", "")) for block in content
                       if isinstance(block, dict) and block.get("type") == "text")
    return str(content)


def _cursor_page(request: web.Request, items: list[Any], obj: Any, default: int, most: int) -> web.Response:
    """OpenAI's cursor list: `limit`, `after` (an id), `first_id`/`last_id`/`has_more`."""
    try:
        limit = int(request.query.get("limit", default))
        assert 1 <= limit <= most
    except (ValueError, AssertionError):
        return _oa_error(400, f"Invalid 'limit': it must be between 1 and {most}.", param="limit")
    start = 0
    after = request.query.get("after")
    if after:
        ids = [item.id for item in items]
        if after not in ids:
            return _oa_error(400, f"Invalid 'after': no object with id '{after}'.", param="after")
        start = ids.index(after) + 1
    page = items[start:start + limit]
    return web.json_response({"object": "list", "data": [obj(item) for item in page],
                              "first_id": page[0].id if page else None, "last_id": page[-1].id if page else None,
                              "has_more": start + limit < len(items)})


def _oa_error(status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
              param: str | None = None) -> web.Response:
    return web.json_response({"error": {"message": message, "type": kind, "param": param, "code": code}},
                             status=status)


def _an_error(status: int, kind: str, message: str) -> web.Response:
    return web.json_response({"type": "error", "error": {"type": kind, "message": message},
                              "request_id": "req_" + secrets.token_hex(12)}, status=status)


async def _read_limited(request: web.Request, limit: int) -> bytes | None:
    """The body, or None past `limit` bytes (read here: the app's limit is the chat endpoint's)."""
    chunks, size = [], 0
    async for chunk in request.content.iter_chunked(1 << 20):
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)
