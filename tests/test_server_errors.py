"""What a third-party OpenAI-compatible server says when it refuses a request is kept, also when it
speaks FastAPI (`transformers serve`, many proxies): `{"detail": "..."}` or its validation list."""

from __future__ import annotations

import sqlite3

import pytest
from aiohttp import web
from conftest import cli

import harvester.sim
from harvester.sim import SimConfig, Simulator, running


class FastAPILike(Simulator):
    """The simulator, refusing the way a FastAPI server does: an unknown model is a 404 with a text
    `detail`; a parameter of the wrong type a 422 with FastAPI's validation list."""

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        if body.get("model") == "locked":   # words in brackets, as some servers write them
            return web.json_response({"detail": "Not authenticated: send [Authorization] [/]"}, status=401)
        if body.get("model") != "sim-teacher":
            return web.json_response({"detail": f"Model {body.get('model')} is not loaded"}, status=404)
        if not isinstance(body.get("top_k", 0), int):
            return web.json_response({"detail": [{"loc": ["body", "top_k"], "msg": "Input should be a valid integer",
                                                  "type": "int_parsing", "input": body["top_k"]}]}, status=422)
        return await super()._chat(request)


@pytest.fixture
def fastapi_like(monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as m:
        m.setattr(harvester.sim, "Simulator", FastAPILike)
        with running(SimConfig()) as s:
            yield s


def _errors(job) -> set[str]:
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        return {e for (e,) in c.execute("SELECT last_error FROM job")}


@pytest.mark.parametrize("teacher,reason", [
    ({"model": "qwen-7b"}, "HTTP 404: Model qwen-7b is not loaded"),
    ({"params": {"max_tokens": 50, "top_k": "five"}}, "HTTP 422: top_k: Input should be a valid integer"),
])
def test_the_reason_in_a_fastapi_error_body_is_kept(fastapi_like, make_job, teacher, reason) -> None:
    job = make_job(fastapi_like, n=3, teacher=teacher)
    r = cli("run", str(job), "--quiet")
    # Every prompt refused alike, nothing answered: the job file is wrong, the run stops quoting the
    # server, and the jobs stay pending (harvester.outage.RejectionWatch).
    assert r.returncode == 1, r.stderr
    assert reason in r.stderr
    assert _errors(job) == {None}
    assert "no detail" not in r.stdout + r.stderr


def test_a_server_reason_in_brackets_is_printed_as_it_is(fastapi_like, make_job) -> None:
    job = make_job(fastapi_like, n=2, teacher={"model": "locked"})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert "HTTP 401: the teacher wants an API key (Not authenticated: send [Authorization] [/])" in r.stderr
