"""Provider quirks, end to end: the real CLI against small teachers on 127.0.0.1 that answer the way
some OpenAI-compatible endpoints do, rather than the way the simulator does."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections import Counter
from collections.abc import Iterator

import pytest
from aiohttp import web
from conftest import cli


class GeminiLike:
    """Answers every prompt's first request with a per-minute 429 the way Gemini's OpenAI-compatible
    endpoint does: OpenAI's "exceeded your current quota" sentence, a JSON list body, no rate-limit
    headers, the delay in the body. Then answers it."""

    def __init__(self) -> None:
        self.seen: Counter[str] = Counter()
        self.limited = 0
        self.url = ""

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        prompt = body["messages"][-1]["content"]
        self.seen[prompt] += 1
        if self.seen[prompt] == 1:
            self.limited += 1
            return web.json_response([{"error": {
                "code": 429, "status": "RESOURCE_EXHAUSTED",
                "message": "You exceeded your current quota, please check your plan and billing details. "
                           "Please retry in 0.2s.",
                "details": [{"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                             "violations": [{"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
                            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "0s"}]}}],
                status=429)
        return web.json_response({"id": "x", "object": "chat.completion", "model": body["model"], "choices": [
            {"index": 0, "message": {"role": "assistant", "content": f"About {prompt}: fine."},
             "finish_reason": "stop"}], "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})


@pytest.fixture
def gemini_like() -> Iterator[GeminiLike]:
    teacher = GeminiLike()
    loop = asyncio.new_event_loop()
    app = web.Application()
    app.router.add_post("/v1beta/openai/chat/completions", teacher.chat)
    runner = web.AppRunner(app)
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        teacher.url = f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/v1beta/openai"  # type: ignore[union-attr]
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    yield teacher
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)


def test_a_per_minute_limit_in_quota_words_is_waited_out_not_fatal(gemini_like: GeminiLike, make_job) -> None:
    n = 6
    job = make_job(gemini_like, n=n, teacher={"model": "gemini-2.0-flash", "terms": {"training_use": "allowed"},
                                              "limits": {"max_concurrency": 2}})
    r = cli("run", str(job), "--quiet", timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr                  # was exit 1: "quota exhausted"
    assert gemini_like.limited == n and set(gemini_like.seen.values()) == {2}
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        assert c.execute("SELECT count(*) FROM job WHERE status = 'done'").fetchone() == (n,)
        waits = [ra for (ra,) in c.execute("SELECT retry_after FROM attempt WHERE http_status = 429")]
    assert waits == [pytest.approx(0.2)] * n                      # the delay stated in the body
