"""Secrets: with a distinctive API key in the environment and a run full of errors, the key appears
nowhere: not in the store's files, the CLI's output (with the openai SDK's debug logging on), the
export, the report, `status`/`quota` dumps, exception text or tracebacks, nor in any URL the teacher saw.

The teacher here is worse than a real one: it echoes the Authorization header back in every error
body (some proxies and gateways do), so the test also proves that harvester scrubs what it records.
"""

from __future__ import annotations

import json
import traceback
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from conftest import cli

import harvester.sim
from harvester import Harvester, load_job
from harvester.errors import FatalError, TeacherError
from harvester.sim import SimConfig, Simulator
from harvester.teacher import Teacher

KEY = f"sk-harvester-{uuid.uuid4().hex}-DISTINCTIVE"
WRONG_KEY = f"sk-wrong-{uuid.uuid4().hex}-ALSO-SECRET"
SECRETS = (KEY, WRONG_KEY, KEY[13:45], WRONG_KEY[9:41])  # the hex cores too, in case of truncation
ENV = "HARVESTER_SECRET_TEST_KEY"


class EchoingSimulator(Simulator):
    """The simulator, but every error body quotes the request's Authorization header and URL."""

    def __init__(self, config: SimConfig | None = None) -> None:
        super().__init__(config)
        self.urls: list[str] = []
        self.auth_seen: set[str] = set()

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        self.urls.append(str(request.url))
        auth = request.headers.get("Authorization", "")
        self.auth_seen.add(auth)
        response = await super()._chat(request)
        if response.status >= 400:
            return web.json_response({"error": {"message": f"request with {auth} to {request.url} failed: "
                                                           f"{response.text}", "type": "echo", "code": auth}},
                                     status=response.status,
                                     headers={k: v for k, v in response.headers.items()
                                              if k.lower() != "content-type"})
        return response


@contextmanager
def echoing_sim(monkeypatch: pytest.MonkeyPatch, **kwargs: Any) -> Iterator[EchoingSimulator]:
    with monkeypatch.context() as m:
        m.setattr(harvester.sim, "Simulator", EchoingSimulator)
        ctx = harvester.sim.running(SimConfig(**kwargs))
        sim = ctx.__enter__()
    try:
        yield sim  # type: ignore[misc]
    finally:
        ctx.__exit__(None, None, None)


def _leaks(text: str | bytes, where: str) -> list[str]:
    data = text.encode("utf-8", "replace") if isinstance(text, str) else text
    return [f"{where}: contains {s[:12]}..." for s in SECRETS if s.encode() in data]


def _scan_tree(folder: Path) -> list[str]:
    found = []
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            found += _leaks(path.read_bytes(), str(path.relative_to(folder)))
    return found


def test_the_key_appears_nowhere(monkeypatch: pytest.MonkeyPatch, make_job, tmp_path: Path) -> None:
    leaks: list[str] = []
    outputs: list[str] = []
    env = {ENV: KEY, "OPENAI_LOG": "debug"}  # the SDK's own debug logging, on stderr

    with echoing_sim(monkeypatch, api_key=KEY, error_rate=0.15, garbage_rate=0.05, drop_rate=0.03,
                     max_context=120, seed=5) as sim:
        job = make_job(sim, n=60, teacher={"api_key_env": ENV, "params": {"max_tokens": 40},
                                           "limits": {"max_concurrency": 4, "rpm": 60000}},
                       retry={"max_attempts": 2, "initial_wait": 0.01, "max_wait": 0.02},
                       quota={"requests_total": 100000})
        with (job.parent / "prompts.jsonl").open("a") as f:   # permanent 400s: their message is stored
            for i in range(3):
                f.write(json.dumps({"prompt": f"long {i} " + "word " * 200}) + "\n")

        # A run with errors of every kind, then every command that prints or writes something.
        for args in (("run", str(job), "--quiet"), ("run", str(job)), ("status", str(job)),
                     ("status", str(job), "--json"), ("quota", str(job), "--json"), ("quota", str(job)),
                     ("run", str(job), "--dry-run"), ("export", str(job)), ("report", str(job))):
            r = cli(*args, env=env, timeout=120)
            assert r.returncode in (0, 1), (args, r.stderr[-2000:])
            outputs.append(f"$ {' '.join(args)}\n{r.stdout}\n{r.stderr}")
        status = json.loads(cli("status", str(job), "--json", env=env).stdout)
        assert status["failed_by_kind"].get("http_400") == 3 and status["errors_by_kind"], status
        assert any("http_5" in k for k in status["errors_by_kind"]), status

        # The wrong key: the teacher says 401 and echoes it; the run stops with a message.
        with (job.parent / "prompts.jsonl").open("a") as f:
            for i in range(20):
                f.write(json.dumps({"prompt": f"A new question {i}"}) + "\n")
        bad = cli("run", str(job), "--quiet", env={**env, ENV: WRONG_KEY}, timeout=120)
        assert bad.returncode == 1 and "HTTP 401" in bad.stderr, bad.stderr[-2000:]
        outputs.append(bad.stdout + bad.stderr)

        # Exception text, from the Python API and from the teacher client directly.
        monkeypatch.setenv(ENV, WRONG_KEY)
        h = Harvester(load_job(job))
        result = h.run_sync(handle_signals=False)
        assert result.reason == "fatal"
        outputs += [result.message, repr(result), json.dumps(h.status(), default=str),
                    json.dumps(h.quota(), default=str), h.job.model_dump_json(), repr(h.job)]
        h.close()
        monkeypatch.setenv(ENV, KEY)
        errors = _teacher_errors(load_job(job).teacher)
        assert any(isinstance(e, FatalError) for e in errors) and len(errors) >= 2
        assert KEY in str(errors[0].__context__)  # the teacher did echo it: harvester's text dropped it
        for e in errors:
            outputs += [str(e), repr(e), repr(e.args), "".join(traceback.format_exception(e))]
        assert sim.auth_seen >= {f"Bearer {KEY}", f"Bearer {WRONG_KEY}"}  # the keys were really sent
        urls = list(sim.urls)

    assert "openai._base_client" in outputs[0] and "DEBUG" in outputs[0]  # the SDK's debug logs were on
    for i, text in enumerate(outputs):
        leaks += _leaks(text, f"output {i}: {text[:60]!r}")
    leaks += [f"url {u}" for u in urls if any(s in u for s in SECRETS)]
    leaks += _scan_tree(job.parent / "data")            # the store (db, -wal, -shm) and the export
    assert (job.parent / "data" / "t" / "train.jsonl").exists() and (job.parent / "data" / "t-report.html").exists()
    assert leaks == []


def _teacher_errors(config: Any) -> list[TeacherError]:
    """Errors from the teacher client: a 400 whose body echoes the key, then a 401 for a wrong key."""
    import asyncio
    import os

    async def go() -> list[TeacherError]:
        out: list[TeacherError] = []
        request = {"model": "sim-teacher", "messages": [{"role": "user", "content": "x " * 300}], "params": {}}
        for key in (KEY, WRONG_KEY):
            os.environ[ENV] = key
            teacher = Teacher(config)
            try:
                await teacher.complete(request)
            except TeacherError as e:
                out.append(e)
            finally:
                await teacher.aclose()
        return out
    return asyncio.run(go())


def test_tracebacks_never_show_locals() -> None:
    """An unexpected crash prints a traceback; its frames' locals would hold the key (the client's
    headers), so the CLI must not show them whatever typer's default."""
    from harvester.cli import app
    assert app.pretty_exceptions_show_locals is False
