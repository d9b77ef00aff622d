"""A local OpenAI-compatible teacher for demos, dry runs, tests and benchmarks.

Answers are deterministic functions of the messages and of how many answers to the same messages were
given before (the samples of one prompt are identical requests; so they get different answers, and a
fresh simulator answers a whole harvest as the last one did). Optional: latency, rate limits enforced per
one-second window (like providers that enforce a per-minute limit per second) with truthful
`x-ratelimit-*` headers, and faults (5xx, dropped connections, garbage bodies, answers slower than
any sane timeout, an exhausted billing quota), refusals and empty answers. It also serves OpenAI's Files +
Batch API and Anthropic's Message Batches (harvester.sim_batches), whose lines get the answers this
endpoint would give. `GET /sim/stats` tells what it received and answered.
"""

from __future__ import annotations

import asyncio
import gc
import hashlib
import json
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web

from . import loop
from .errors import HarvesterError
from .providers.openai import HEADERS as OPENAI_HEADERS
from .sim_cache import PrefixCache
from .sim_shapes import MAX_TOP_LOGPROBS, shape_answer

T = TypeVar("T")

_WORDS = ("the a of to and in is that for it as with on by this be are from at or an which can "
          "system model data energy light water cell value time process force change rate number "
          "structure function result example method theory point field signal memory network layer "
          "first second because therefore however also often usually simply important small large "
          "simple common useful several different each other more most many much well way part "
          "plant star river market language history music code proof graph tree wave heat atom").split()
_TOKEN = re.compile(r"\w+|[^\w\s]")


def count_tokens(text: str) -> int:
    """The simulator's tokenizer: words and punctuation marks (close to BPE for English)."""
    return len(_TOKEN.findall(text))


def prompt_tokens(messages: list[dict[str, Any]]) -> int:
    return 3 + sum(4 + count_tokens(str(m.get("content", ""))) for m in messages)


def prompt_key(messages: list[dict[str, Any]]) -> str:
    """What the simulator counts answers by: the messages, whatever the endpoint that carried them."""
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


REFUSAL = "I'm sorry, but I can't help with that request."


def answer_for(messages: list[dict[str, Any]], max_tokens: int | None, nth: int = 0) -> tuple[str, int, str]:
    """A deterministic answer, its token count and finish_reason: the `nth` answer (0-based) the
    simulator gives to these messages. The samples of one prompt are identical requests (harvester
    sends no sample index), so the count of answers already given is what tells them apart."""
    user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    text = json.dumps(messages, sort_keys=True) + (f"#{nth}" if nth else "")   # the 0th: as ever
    digest = hashlib.sha256(text.encode()).digest()
    rng = random.Random(digest)
    topic = " ".join(user.split()[:8]).rstrip("?.!,")
    sentences = [f"Here is an answer about {topic}."]
    for _ in range(rng.randint(2, 7)):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(6, 16))]
        sentences.append(" ".join(words).capitalize() + ".")
    text = " ".join(sentences) + f" [ref {digest[:4].hex()}]"
    tokens = _TOKEN.findall(text)
    if max_tokens is not None and len(tokens) > max_tokens:
        # Cut at the max_tokens-th token, as a real model stops mid-sentence.
        cut = [m.end() for m in _TOKEN.finditer(text)][max_tokens - 1]
        return text[:cut], max_tokens, "length"
    return text, len(tokens), "stop"


def reasoning_for(messages: list[dict[str, Any]]) -> str:
    """A deterministic reasoning trace, as reasoning models send apart from the answer."""
    user = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
    digest = hashlib.sha256(("think" + json.dumps(messages, sort_keys=True)).encode()).hexdigest()[:8]
    topic = " ".join(user.split()[:8]).rstrip("?.!,")
    return (f"The question is about {topic}. First recall what is known, then check it step by step, "
            f"then write a short answer. [think {digest}]")


def format_reset(seconds: float) -> str:
    """OpenAI's style: `20ms`, `1.5s`, `6m0s`."""
    if seconds < 1:
        return f"{max(1, round(seconds * 1000))}ms"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)}m{rest:.0f}s" if minutes else f"{rest:.3g}s"


@dataclass
class SimConfig:
    model: str = "sim-teacher"
    latency: float = 0.0              # mean seconds per answer
    jitter: float = 0.0               # uniform ± seconds around the mean
    rpm: float | None = None          # requests/min, enforced per 1-second window
    tpm: float | None = None          # tokens/min (prompt + max_tokens), enforced per 1-second window
    headers: bool = True              # send x-ratelimit-* headers
    error_rate: float = 0.0           # share of 5xx answers
    drop_rate: float = 0.0            # share of connections closed without an answer
    garbage_rate: float = 0.0         # share of 200s whose body is not JSON
    slow_rate: float = 0.0            # share of answers delayed by `slow_seconds`
    slow_seconds: float = 30.0
    api_key: str | None = None        # when set, requests must carry it (else 401)
    quota_exhausted: bool = False     # every request gets 429 insufficient_quota
    max_context: int | None = None    # prompt + max_tokens above this gets 400 context_length_exceeded
    reasoning: bool = False           # answer as a reasoning model: a `reasoning_content` trace first
    refusal_rate: float = 0.0         # share of answers that are a refusal (REFUSAL), to see filters at work
    empty_rate: float = 0.0           # share of answers that are empty
    check_model: bool = False         # a request for another model than `model` gets 404 model_not_found
    seed: int = 0
    log_path: str | None = None       # JSONL: a line per request received, rate_limited (429) or answered
    # Answers with a shape (harvester.sim_shapes): shares of JSON answers that are no answer
    invalid_json_rate: float = 0.0    # prose around the object: not JSON
    missing_field_rate: float = 0.0   # the schema's first required field left out
    truncated_json_rate: float = 0.0  # cut off mid-object, finish_reason "length"
    logprobs: bool = True             # answer logprobs when asked (False: as a server that ignores the parameter)
    # The prompt cache (harvester.sim_cache): long first messages seen lately are reported as cached tokens.
    cache_slots: int = 4              # first messages it holds (0: no cache)
    cache_ttl: float = 300.0          # seconds one stays after its last use
    # The batch APIs (harvester.sim_batches): OpenAI's Files + Batch API, Anthropic's Message Batches.
    batch_delay: float = 0.0          # seconds from a batch's creation to its end; its lines finish evenly over it
    batch_error_rate: float = 0.0     # share of batch lines failing transiently (500-like; may pass when sent again)
    batch_invalid_rate: float = 0.0   # share of custom_ids whose line always fails (400-like)
    batch_expire_after: float | None = None   # a batch expires this many seconds after creation (providers: 24 h)
    batch_enqueued_tokens: int | None = None  # prompt tokens of unfinished batches past which a new one is refused
    batch_max_lines: int | None = None        # requests per batch (None: OpenAI's 50,000, Anthropic's 100,000)
    batch_max_bytes: int | None = None        # bytes per input file / create body (None: 200 MB, 256 MB)


@dataclass
class Answer:
    text: str | None                  # None: the reasoning spent every token
    reasoning: str | None
    completion_tokens: int            # of the text
    reasoning_tokens: int
    finish: str                       # "stop" | "length"
    logprobs: list[dict[str, Any]] | None = None   # OpenAI's logprobs.content, when asked (harvester.sim_shapes)
    cached_tokens: int = 0            # of the prompt, served from the prompt cache (harvester.sim_cache)


@dataclass
class _Window:
    """A fixed one-second window and a per-minute bucket (for the headers), for one dimension."""

    per_minute: float
    second: int = -1
    used: float = 0.0
    level: float = 0.0
    at: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.level = self.per_minute

    def refill(self, now: float) -> None:
        sec = int(now)
        if sec != self.second:
            self.second, self.used = sec, 0.0
        self.level = min(self.per_minute, self.level + (now - self.at) * self.per_minute / 60)
        self.at = now

    def admits(self, amount: float) -> bool:
        return self.used + amount <= self.per_minute / 60 + 1e-9 and self.level >= amount - 1e-9

    def take(self, amount: float) -> None:
        self.used += amount
        self.level -= amount

    def reset_in(self) -> float:
        return (self.per_minute - self.level) * 60 / self.per_minute


class Simulator:
    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.rng = random.Random(self.config.seed)
        self.requests = 0
        self.answered = 0
        self.by_status: Counter[int] = Counter()
        self.answers_per_prompt: Counter[str] = Counter()
        self.injected: Counter[str] = Counter()        # refusals and empty answers given
        self.tokens: Counter[str] = Counter()
        self.first_request: float | None = None
        self.last_request: float | None = None
        self._requests_w = _Window(self.config.rpm) if self.config.rpm else None
        self._tokens_w = _Window(self.config.tpm) if self.config.tpm else None
        self.prompt_cache = PrefixCache(count_tokens, slots=self.config.cache_slots, ttl=self.config.cache_ttl)
        self._log = open(self.config.log_path, "a", encoding="utf-8") if self.config.log_path else None
        self._runner: web.AppRunner | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.url = ""
        from .sim_batches import BatchProtocols  # here: that module builds on this one's functions
        self.batches = BatchProtocols(self)

    # --- HTTP -------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=16 * 1024 * 1024)
        app.router.add_post("/v1/chat/completions", self._chat)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/sim/stats", self._stats)
        self.batches.add_routes(app)
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{bound}/v1"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._log is not None:
            self._log.close()

    def stats(self, detail: bool = False) -> dict[str, Any]:
        """What was received and answered; `detail`: also the answers per batch custom_id."""
        batches = self._on_loop(lambda: self.batches.stats(detail))  # batches advance as time passes
        answered = self.answers_per_prompt
        return {"requests": self.requests, "answered": self.answered,
                "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
                "rate_limited": self.by_status.get(429, 0),
                "distinct_prompts_answered": len(answered),
                "prompts_answered_more_than_once": sum(1 for c in answered.values() if c > 1),
                "refusals": self.injected["refusal"], "empty_answers": self.injected["empty"],
                "prompt_tokens": self.tokens["prompt"], "completion_tokens": self.tokens["completion"],
                "cached_tokens": self.tokens["cached"],
                "first_request": self.first_request, "last_request": self.last_request, **batches}

    def _on_loop(self, fn: Callable[[], T]) -> T:
        """Run `fn` on the server's event loop: the state it reads is changed there (tests call stats()
        from their own thread)."""
        loop = self._loop
        try:
            here = asyncio.get_running_loop()
        except RuntimeError:
            here = None
        if loop is None or here is loop or not loop.is_running():
            return fn()

        async def call() -> T:
            return fn()
        return asyncio.run_coroutine_threadsafe(call(), loop).result(30)

    async def _stats(self, request: web.Request) -> web.Response:
        return web.json_response(self.stats(detail=request.query.get("detail") == "1"))

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [
            {"id": self.config.model, "object": "model", "created": 0, "owned_by": "harvester-sim"}]})

    def _error(self, status: int, message: str, code: str, headers: dict[str, str] | None = None) -> web.Response:
        self.by_status[status] += 1
        return web.json_response({"error": {"message": message, "type": code, "code": code}},
                                 status=status, headers=headers)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        cfg = self.config
        now = time.monotonic()
        self.requests += 1
        self.first_request = self.first_request or time.time()
        self.last_request = time.time()
        if cfg.api_key is not None and request.headers.get("Authorization") != f"Bearer {cfg.api_key}":
            return self._error(401, "Incorrect API key provided.", "invalid_api_key")
        try:
            body = await request.json()
            messages = body["messages"]
            assert isinstance(messages, list) and messages
        except Exception:  # noqa: BLE001
            return self._error(400, "The request body is not a valid chat completion request.", "invalid_request")
        if cfg.check_model and body.get("model") != cfg.model:
            return self._error(404, f"The model `{body.get('model')}` does not exist or you do not have access "
                               "to it.", "model_not_found")
        max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
        p_tokens = prompt_tokens(messages)
        if cfg.max_context is not None and p_tokens + (max_tokens or 0) > cfg.max_context:
            return self._error(400, f"This model's maximum context length is {cfg.max_context} tokens.",
                               "context_length_exceeded")
        if cfg.quota_exhausted:
            return self._error(429, "You exceeded your current quota, please check your plan and billing "
                               "details.", "insufficient_quota")
        if isinstance(body.get("top_logprobs"), int) and body["top_logprobs"] > MAX_TOP_LOGPROBS:
            return self._error(400, f"Invalid 'top_logprobs': integer above maximum value. Expected a value <= "
                               f"{MAX_TOP_LOGPROBS}, but got {body['top_logprobs']} instead.",
                               "integer_above_max_value")
        key = prompt_key(messages)
        headers = self._admit(now, p_tokens + (max_tokens or 0))
        if headers is None:
            self._write_log(key, "rate_limited")
            return self._rate_limited(now)
        # what a shaped request asked for, so that tests can see what reached the teacher
        asked = {k: body[k] for k in ("response_format", "logprobs", "top_logprobs") if k in body}
        if "response_format" in asked:
            asked["system"] = next((m.get("content") for m in messages if m.get("role") == "system"), None)
        self._write_log(key, "received", **asked)
        roll = self.rng.random()
        delay = max(0.0, cfg.latency + self.rng.uniform(-cfg.jitter, cfg.jitter)) if cfg.latency else 0.0
        if roll < cfg.slow_rate:
            delay = cfg.slow_seconds
        if delay:
            await asyncio.sleep(delay)
        roll -= cfg.slow_rate
        if 0 <= roll < cfg.drop_rate:
            self.by_status[0] += 1
            if request.transport is not None:
                request.transport.close()
            raise asyncio.CancelledError  # aiohttp drops the connection without an answer
        roll -= cfg.drop_rate
        if 0 <= roll < cfg.error_rate:
            status = self.rng.choice((500, 502, 503))
            return self._error(status, "The server had an error while processing your request.", "server_error")
        roll -= cfg.error_rate
        answer = self.compose(messages, max_tokens, key, body)
        answer.cached_tokens = self.prompt_cache.cached_tokens(messages, now)
        if 0 <= roll < cfg.garbage_rate:
            self.by_status[200] += 1
            return web.Response(text="<html><body>502 Bad Gateway</body></html>", status=200,
                                content_type="application/json", headers=headers)
        self.by_status[200] += 1
        self.record_answer(key, p_tokens, answer)
        return web.json_response(self.completion_body(key, p_tokens, answer), headers=headers)

    # --- the answers themselves: one path for the chat endpoint and for batch lines -------------
    def compose(self, messages: list[dict[str, Any]], max_tokens: int | None, key: str,
                body: dict[str, Any] | None = None) -> Answer:
        """The answer the simulator gives now to these messages (keyed `key`): the next of their series;
        shaped as the request `body` asks (JSON of a schema, logprobs: harvester.sim_shapes)."""
        cfg = self.config
        reasoning = reasoning_for(messages) if cfg.reasoning else None
        r_tokens = count_tokens(reasoning) if reasoning else 0
        nth = self.answers_per_prompt[key]   # answers given to these messages before: the sample, in effect
        # Refusals and empty answers are decided by (messages, nth), not by the fault dice: the same
        # harvest against a fresh simulator meets the same ones.
        pick = random.Random(f"inject:{key}:{nth}:{cfg.seed}").random() if cfg.refusal_rate or cfg.empty_rate else 1.0
        text: str | None
        if max_tokens is not None and reasoning and r_tokens >= max_tokens:  # spent all on thinking
            text, c_tokens, finish, r_tokens = None, 0, "length", max_tokens
        elif pick < cfg.refusal_rate:
            text, c_tokens, finish = REFUSAL, count_tokens(REFUSAL), "stop"
            self.injected["refusal"] += 1
        elif pick < cfg.refusal_rate + cfg.empty_rate:
            text, c_tokens, finish = "", 0, "stop"
            self.injected["empty"] += 1
        else:
            text, c_tokens, finish = answer_for(messages, None if max_tokens is None else max_tokens - r_tokens, nth)
        answer = Answer(text, reasoning, c_tokens, r_tokens, finish)
        return shape_answer(cfg, body, messages, key, nth, answer,
                            None if max_tokens is None else max_tokens - r_tokens)

    def record_answer(self, key: str, p_tokens: int, answer: Answer, **log: Any) -> None:
        """Count an answer given (synchronous or in a batch): what /sim/stats and the log tell."""
        self.answered += 1
        self.answers_per_prompt[key] += 1
        self.tokens["prompt"] += p_tokens
        self.tokens["cached"] += answer.cached_tokens
        self.tokens["completion"] += answer.completion_tokens + answer.reasoning_tokens
        # what was billed, for a test or a person to price by hand
        self._write_log(key, "answered", prompt_tokens=p_tokens, cached_tokens=answer.cached_tokens,
                        completion_tokens=answer.completion_tokens + answer.reasoning_tokens, **log)

    def completion_body(self, key: str, p_tokens: int, answer: Answer) -> dict[str, Any]:
        """A chat.completion object, as the chat endpoint (and a batch output line) carries it."""
        reasoning, r_tokens = answer.reasoning, answer.reasoning_tokens
        c_tokens = answer.completion_tokens
        message = {"role": "assistant", "content": answer.text,
                   **({"reasoning_content": reasoning} if reasoning else {})}
        usage = {"prompt_tokens": p_tokens, "completion_tokens": c_tokens + r_tokens,
                 "total_tokens": p_tokens + c_tokens + r_tokens,
                 "prompt_tokens_details": {"cached_tokens": answer.cached_tokens},   # as OpenAI always sends it
                 **({"completion_tokens_details": {"reasoning_tokens": r_tokens}} if reasoning else {})}
        return {"id": f"chatcmpl-{key}", "object": "chat.completion", "created": int(time.time()),
                "model": self.config.model, "system_fingerprint": "fp_sim",
                "choices": [{"index": 0, "message": message, "finish_reason": answer.finish,
                             "logprobs": None if answer.logprobs is None else {"content": answer.logprobs,
                                                                               "refusal": None}}],
                "usage": usage}

    def _admit(self, now: float, tokens: int) -> dict[str, str] | None:
        """Rate-limit headers if the request is admitted; None if it must get a 429."""
        windows = [(w, amount) for w, amount in ((self._requests_w, 1), (self._tokens_w, tokens)) if w]
        for w, _ in windows:
            w.refill(now)
        if not all(w.admits(amount) for w, amount in windows):
            return None
        for w, amount in windows:
            w.take(amount)
        return self._headers()

    def _headers(self) -> dict[str, str]:
        if not self.config.headers:
            return {}
        out: dict[str, str] = {}
        for names, w in zip(OPENAI_HEADERS, (self._requests_w, self._tokens_w)):   # the names: OpenAI's room
            if w is not None:
                out[names.limit] = str(int(w.per_minute))
                out[names.remaining] = str(max(0, math.floor(w.level)))
                out[names.reset] = format_reset(w.reset_in())
        return out

    def _rate_limited(self, now: float) -> web.Response:
        wait = max(0.001, math.floor(now) + 1 - now)
        headers = {"retry-after-ms": str(math.ceil(wait * 1000)), "retry-after": str(math.ceil(wait)),
                   **self._headers()}
        return self._error(429, "Rate limit reached: too many requests or tokens in this second.",
                           "rate_limit_exceeded", headers)

    def _write_log(self, key: str, event: str, **extra: Any) -> None:
        if self._log is not None:
            self._log.write(json.dumps({"t": time.time(), "prompt": key, "event": event, **extra}) + "\n")
            self._log.flush()


@contextmanager
def running(config: SimConfig | None = None, port: int = 0) -> Iterator[Simulator]:
    """Run a simulator on 127.0.0.1 in a background thread (for the demo and tests)."""
    sim = Simulator(config)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    error: list[BaseException] = []

    def serve() -> None:
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(sim.start(port=port))
        except BaseException as e:  # noqa: BLE001 - reported to the caller below
            error.append(e)
            ready.set()
            return
        ready.set()
        loop.run_forever()
        loop.run_until_complete(sim.stop())
        loop.close()

    thread = threading.Thread(target=serve, name="harvester-sim", daemon=True)
    thread.start()
    ready.wait(30)
    if error:
        raise error[0]
    try:
        yield sim
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)


def serve_forever(config: SimConfig, host: str = "127.0.0.1", port: int = 8765,
                  ready_file: Path | None = None) -> None:
    """`harvester sim`: serve until interrupted; prints the URL (and writes it to `ready_file`)."""

    async def main() -> None:
        sim = Simulator(config)
        try:
            url = await sim.start(host, port)
        except OSError as e:  # most often: another simulator (or anything) already listens there
            await sim.stop()
            raise HarvesterError(f"--port {port}: cannot listen on {host}:{port} ({e.strerror or e}); is another "
                                 "`harvester sim` running? Stop it, or choose another port (--port 0: any free "
                                 "port)") from None
        gc.freeze()  # a process of its own: its clock must not stall on full collections (harvester.gcpause)
        print(f"harvester sim: OpenAI-compatible teacher at {url}  (stats: {url[:-3]}/sim/stats)", flush=True)
        shown = {k: v for k, v in asdict(config).items() if v not in (None, 0.0, False)}
        if "api_key" in shown:
            shown["api_key"] = "required (value not shown)"   # never print a key
        print(f"  {json.dumps(shown)}", flush=True)
        if ready_file is not None:
            ready_file.write_text(url)
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    try:
        loop.run(main())   # uvloop when installed: the simulator must not be the bottleneck of a benchmark
    except KeyboardInterrupt:
        pass
