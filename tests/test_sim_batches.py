"""The simulator's batch APIs over loopback: OpenAI's Files + Batch API driven by the official openai client,
Anthropic's Message Batches by httpx in the anthropic SDK's shapes. A batch line gets the answer the chat
endpoint gives; lines finish progressively; cancel and expiry keep what was done; per-line errors,
validation failures, limits, list pagination and the counters tests rely on (no custom_id answered twice)."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from conftest import popen_cli

from harvester.sim import Simulator

AN_HEADERS = {"x-api-key": "sk-sim", "anthropic-version": "2023-06-01"}
QUESTIONS = [f"Question number {i}: explain topic {i * 37} briefly." for i in range(8)]


def _line(cid: str, content: str, max_tokens: int | None = 200, system: str | None = None,
          url: str = "/v1/chat/completions") -> dict[str, Any]:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": content}]
    body: dict[str, Any] = {"model": "sim-teacher", "messages": messages}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"custom_id": cid, "method": "POST", "url": url, "body": body}


def _jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


def _client(sim: Simulator, key: str = "sk-sim") -> openai.OpenAI:
    return openai.OpenAI(base_url=sim.url, api_key=key, max_retries=0)


def _submit(client: openai.OpenAI, rows: list[Any], **kw: Any) -> Any:
    f = client.files.create(file=("batch.jsonl", _jsonl(rows)), purpose="batch")
    return client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h", **kw)


def _wait(fetch: Callable[[], Any], done: Callable[[Any], bool], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value) or time.monotonic() > deadline:
            return value
        time.sleep(0.02)


def _oa_wait(client: openai.OpenAI, batch_id: str) -> Any:
    terminal = ("completed", "failed", "expired", "cancelled")
    return _wait(lambda: client.batches.retrieve(batch_id), lambda b: b.status in terminal)


def _lines(client: openai.OpenAI, file_id: str | None) -> dict[str, dict[str, Any]]:
    if file_id is None:
        return {}
    return {row["custom_id"]: row for row in map(json.loads, client.files.content(file_id).text.splitlines())}


def _an_request(cid: str, content: str, max_tokens: int = 200, system: Any = None) -> dict[str, Any]:
    params: dict[str, Any] = {"model": "sim-teacher", "max_tokens": max_tokens,
                              "messages": [{"role": "user", "content": content}]}
    if system is not None:
        params["system"] = system
    return {"custom_id": cid, "params": params}


def _an(sim: Simulator, method: str, path: str, **kw: Any) -> httpx.Response:
    return httpx.request(method, sim.url + path, headers=kw.pop("headers", AN_HEADERS), timeout=10, **kw)


def _an_wait(sim: Simulator, batch_id: str) -> dict[str, Any]:
    return _wait(lambda: _an(sim, "GET", f"/messages/batches/{batch_id}").json(),
                 lambda b: b["processing_status"] == "ended")


def _an_results(sim: Simulator, batch: dict[str, Any]) -> dict[str, dict[str, Any]]:
    text = httpx.get(batch["results_url"], headers=AN_HEADERS, timeout=10).text   # an absolute URL, as the API's
    return {row["custom_id"]: row["result"] for row in map(json.loads, text.splitlines())}


def _sync(sim: Simulator, messages: list[dict[str, Any]], max_tokens: int | None = 200) -> Any:
    extra = {"max_tokens": max_tokens} if max_tokens is not None else {}
    return _client(sim).chat.completions.create(model="sim-teacher", messages=messages, **extra)


# --- OpenAI -------------------------------------------------------------------------------------------
def test_openai_batch_answers_as_the_chat_endpoint_would(sim_factory) -> None:
    sim, fresh = sim_factory(batch_delay=0.2), sim_factory()
    client = _client(sim)
    rows = [_line(f"q-{i}", q) for i, q in enumerate(QUESTIONS[:4])]
    rows.append(_line("short", QUESTIONS[4], max_tokens=5))                      # cut: finish_reason length
    rows.append(_line("sys", QUESTIONS[5], system="Answer in one line."))
    rows += [_line("twice-a", QUESTIONS[6]), _line("twice-b", QUESTIONS[6])]     # two samples of one prompt
    f = client.files.create(file=("in.jsonl", _jsonl(rows)), purpose="batch")
    assert (f.object, f.purpose, f.bytes, f.filename) == ("file", "batch", len(_jsonl(rows)), "in.jsonl")
    assert client.files.retrieve(f.id).id == f.id
    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"harvester_job": "t"})
    assert (batch.status, batch.object, batch.metadata) == ("validating", "batch", {"harvester_job": "t"})
    assert batch.expires_at - batch.created_at == 24 * 3600

    done = _oa_wait(client, batch.id)
    assert done.status == "completed" and done.error_file_id is None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (8, 8, 0)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.model == "sim-teacher"
    out = _lines(client, done.output_file_id)
    assert set(out) == {r["custom_id"] for r in rows}
    for row in rows:
        line = out[row["custom_id"]]
        assert line["error"] is None and line["response"]["status_code"] == 200 and line["id"].startswith("batch_req_")
        body = line["response"]["body"]
        sync = _sync(fresh, row["body"]["messages"], row["body"]["max_tokens"])  # a fresh simulator: same series
        assert body["choices"][0]["message"]["content"] == sync.choices[0].message.content
        assert body["choices"][0]["finish_reason"] == sync.choices[0].finish_reason
        assert body["usage"]["prompt_tokens"] == sync.usage.prompt_tokens
        assert body["usage"]["completion_tokens"] == sync.usage.completion_tokens
    assert out["short"]["response"]["body"]["choices"][0]["finish_reason"] == "length"
    a, b = (out[c]["response"]["body"]["choices"][0]["message"]["content"] for c in ("twice-a", "twice-b"))
    assert a != b                                                     # samples differ, as on the chat endpoint
    usage = done.usage
    assert usage is not None and usage.input_tokens == sum(
        o["response"]["body"]["usage"]["prompt_tokens"] for o in out.values())

    output = client.files.retrieve(done.output_file_id)
    assert output.purpose == "batch_output"
    assert client.files.delete(f.id).deleted is True
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)
    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)                               # it has ended

    stats = sim.stats()
    assert stats["batches_created"] == {"openai": 1} and stats["batches_ended"] == {"openai:completed": 1}
    assert stats["batch_lines_answered"] == 8 and stats["answered"] == 8 and stats["requests"] == 0
    assert stats["distinct_prompts_answered"] == 7 and stats["prompts_answered_more_than_once"] == 1
    assert stats["batch_custom_ids_answered"] == 8 and stats["batch_custom_ids_answered_more_than_once"] == 0


def test_openai_lines_finish_progressively(sim_factory) -> None:
    sim = sim_factory(batch_delay=1.0)
    client = _client(sim)
    batch = _submit(client, [_line(f"p-{i}", QUESTIONS[i]) for i in range(8)])
    seen = []
    while (b := client.batches.retrieve(batch.id)).status not in ("completed", "failed"):
        seen.append((b.status, b.request_counts.completed, b.request_counts.total))
        time.sleep(0.04)
    assert seen[0][0] == "validating" and seen[0][2] == 0
    assert any(s == "in_progress" and 0 < c < 8 and t == 8 for s, c, t in seen)   # partial counts mid-way
    statuses = [s for s, _, _ in seen]
    assert statuses == sorted(statuses, key=["validating", "in_progress", "finalizing"].index)
    assert b.status == "completed" and b.request_counts.completed == 8
    assert sim.stats()["batch_lines_answered"] == 8


def test_openai_cancel_keeps_the_lines_done(sim_factory) -> None:
    sim = sim_factory(batch_delay=1.5)
    client = _client(sim)
    batch = _submit(client, [_line(f"c-{i}", QUESTIONS[i]) for i in range(8)])
    _wait(lambda: client.batches.retrieve(batch.id), lambda b: b.request_counts.completed >= 3)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    done = _oa_wait(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None
    kept = _lines(client, done.output_file_id)
    assert 3 <= len(kept) < 8 == done.request_counts.total and done.request_counts.completed == len(kept)
    assert all(line["response"]["status_code"] == 200 for line in kept.values())
    time.sleep(0.3)                                                    # nothing more is answered afterwards
    stats = sim.stats()
    assert stats["batch_lines_answered"] == len(kept) and stats["batch_lines_canceled"] == 8 - len(kept)
    assert stats["batches_ended"] == {"openai:cancelled": 1}


def test_openai_expiry_keeps_the_lines_done_and_reports_the_rest(sim_factory) -> None:
    sim = sim_factory(batch_delay=1.0, batch_expire_after=0.5)
    client = _client(sim)
    batch = _submit(client, [_line(f"e-{i}", QUESTIONS[i]) for i in range(8)])
    assert batch.expires_at - batch.created_at <= 1
    done = _oa_wait(client, batch.id)
    assert done.status == "expired" and done.expired_at is not None
    ok, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert ok and errors and set(ok) | set(errors) == {f"e-{i}" for i in range(8)} and not set(ok) & set(errors)
    assert all(e["response"] is None and e["error"]["code"] == "batch_expired" for e in errors.values())
    assert sorted(ok, key=lambda c: int(c[2:])) == [f"e-{i}" for i in range(len(ok))]   # answered in file order
    assert sim.stats()["batch_lines_expired"] == len(errors)


def test_openai_per_line_errors_transient_and_permanent(sim_factory) -> None:
    sim = sim_factory(batch_error_rate=0.3, batch_invalid_rate=0.2, seed=7)
    client = _client(sim)
    n = 40
    done = _oa_wait(client, _submit(client, [_line(f"x-{i}", f"Prompt {i}") for i in range(n)]).id)
    assert done.status == "completed"           # line errors do not fail the batch
    ok, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert len(ok) + len(errors) == n and (done.request_counts.completed, done.request_counts.failed) == (
        len(ok), len(errors))
    codes = {cid: e["response"]["status_code"] for cid, e in errors.items()}
    assert set(codes.values()) == {400, 500}
    for e in errors.values():
        err = e["response"]["body"]["error"]
        assert err["type"] == ("server_error" if e["response"]["status_code"] == 500 else "invalid_request_error")

    # sent again (same custom_ids): the permanent ones fail the same way; transient ones roll again
    again = _oa_wait(client, _submit(client, [_line(cid, f"Prompt {cid[2:]}") for cid in codes]).id)
    ok2, errors2 = _lines(client, again.output_file_id), _lines(client, again.error_file_id)
    permanent = {cid for cid, code in codes.items() if code == 400}
    assert permanent <= set(errors2) and all(errors2[c]["response"]["status_code"] == 400 for c in permanent)
    assert ok2 and set(ok2) <= {cid for cid, code in codes.items() if code == 500}

    # deterministic by custom_id and seed: a fresh simulator with the same seed fails the same lines
    other = sim_factory(batch_error_rate=0.3, batch_invalid_rate=0.2, seed=7)
    c2 = _client(other)
    first = _oa_wait(c2, _submit(c2, [_line(f"x-{i}", f"Prompt {i}") for i in range(n)]).id)
    assert {c: e["response"]["status_code"] for c, e in _lines(c2, first.error_file_id).items()} == codes
    stats = sim.stats()
    assert stats["batch_lines_errored"] == len(errors) + len(errors2)
    assert stats["batch_custom_ids_answered_more_than_once"] == 0      # a failed line is not an answer


def test_batch_lines_meet_the_chat_endpoints_checks_and_reasoning(sim_factory) -> None:
    sim, fresh = sim_factory(check_model=True, max_context=60, reasoning=True), sim_factory(reasoning=True)
    client = _client(sim)
    rows = [_line("ok", QUESTIONS[0], max_tokens=40), _line("long", "word " * 80, max_tokens=40)]
    done = _oa_wait(client, _submit(client, rows).id)
    ok, errors = _lines(client, done.output_file_id), _lines(client, done.error_file_id)
    assert set(ok) == {"ok"} and errors["long"]["response"]["status_code"] == 400
    assert errors["long"]["response"]["body"]["error"]["code"] == "context_length_exceeded"
    wrong_model = _line("model", "Hi")
    wrong_model["body"]["model"] = "gpt-none"      # one model per batch (else model_mismatch): a batch of its own
    other = _oa_wait(client, _submit(client, [wrong_model]).id)
    error = _lines(client, other.error_file_id)["model"]["response"]
    assert error["status_code"] == 404 and error["body"]["error"]["code"] == "model_not_found"
    message = ok["ok"]["response"]["body"]["choices"][0]["message"]
    sync = _sync(fresh, rows[0]["body"]["messages"], 40).choices[0].message
    assert message["content"] == sync.content and message["reasoning_content"] == sync.model_extra["reasoning_content"]

    batch = _an(sim, "POST", "/messages/batches", json={"requests": [
        _an_request("think", QUESTIONS[1], max_tokens=40), _an_request("long", "word " * 80, max_tokens=40)]}).json()
    results = _an_results(sim, _an_wait(sim, batch["id"]))
    assert [b["type"] for b in results["think"]["message"]["content"]] == ["thinking", "text"]
    assert results["long"]["error"]["error"]["type"] == "invalid_request_error"


def test_openai_validation_failures(sim_factory) -> None:
    sim = sim_factory(batch_max_lines=5, batch_max_bytes=2000, batch_enqueued_tokens=200)
    client = _client(sim)
    rows = [_line("a", "Hello"), "{not json", _line("a", "Hello again"), _line("b", "Hi", url="/v1/embeddings")]
    failed = _oa_wait(client, _submit(client, rows).id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.output_file_id is None
    errors = {(e.code, e.line) for e in failed.errors.data}
    assert errors == {("invalid_json_line", 2), ("duplicate_custom_id", 3), ("url_mismatch", 4)}
    assert failed.request_counts.total == 0

    too_many = _oa_wait(client, _submit(client, [_line(f"m-{i}", "Hi") for i in range(6)]).id)
    assert too_many.status == "failed" and [e.code for e in too_many.errors.data] == ["too_many_tasks"]
    empty = _oa_wait(client, _submit(client, []).id)
    assert [e.code for e in empty.errors.data] == ["empty_file"]
    big = _oa_wait(client, _submit(client, [_line(f"b-{i}", "word " * 200) for i in range(2)]).id)
    assert [e.code for e in big.errors.data] == ["file_too_large"]

    # the enqueued-token limit: a batch in flight holds its prompt tokens until it ends
    slow = sim_factory(batch_delay=2.0, batch_enqueued_tokens=60)
    c2 = _client(slow)
    first = _submit(c2, [_line(f"t-{i}", QUESTIONS[i]) for i in range(3)])        # 3 x 15 prompt tokens
    _wait(lambda: c2.batches.retrieve(first.id), lambda b: b.status == "in_progress")
    second = _oa_wait(c2, _submit(c2, [_line(f"u-{i}", QUESTIONS[i]) for i in range(2)]).id)
    assert second.status == "failed" and second.errors.data[0].code == "token_limit_exceeded"
    assert "Enqueued token limit reached" in second.errors.data[0].message
    assert c2.batches.retrieve(first.id).status == "in_progress"
    assert sim.stats()["batch_lines_answered"] == 0

    # the create call's own checks answer at once
    f = client.files.create(file=("x.jsonl", _jsonl([_line("a", "Hi")])), purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-missing", endpoint="/v1/chat/completions", completion_window="24h")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_missing")


def test_openai_list_pagination_and_key(sim_factory) -> None:
    sim = sim_factory(api_key="sk-sim")
    client = _client(sim)
    ids = [_submit(client, [_line("only", f"Prompt {i}")], metadata={"n": str(i)}).id for i in range(5)]
    page = client.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more is True
    assert [b.id for b in client.batches.list(limit=2)] == ids[::-1]      # the SDK follows the `after` cursor
    raw = httpx.get(sim.url + "/batches", params={"limit": 2, "after": ids[1]},
                    headers={"Authorization": "Bearer sk-sim"}).json()
    assert (raw["object"], [b["id"] for b in raw["data"]], raw["first_id"], raw["last_id"], raw["has_more"]) == (
        "list", [ids[0]], ids[0], ids[0], False)
    with pytest.raises(openai.AuthenticationError):
        _client(sim, key="wrong").batches.list()
    with pytest.raises(openai.AuthenticationError):
        _client(sim, key="wrong").files.create(file=("a.jsonl", b"{}\n"), purpose="batch")


# --- Anthropic ----------------------------------------------------------------------------------------
def test_anthropic_batch_answers_as_the_chat_endpoint_would(sim_factory) -> None:
    sim, fresh = sim_factory(batch_delay=1.0, api_key="sk-sim"), sim_factory()
    requests = [_an_request(f"q-{i}", q) for i, q in enumerate(QUESTIONS[:3])]
    requests.append(_an_request("short", QUESTIONS[3], max_tokens=5))
    requests.append(_an_request("sys", QUESTIONS[4], system="Answer in one line."))
    requests.append(_an_request("blocks", QUESTIONS[5], system=[{"type": "text", "text": "Answer in one line."}]))
    requests.append({"custom_id": "bad", "params": {"model": "sim-teacher", "messages": []}})   # no max_tokens
    created = _an(sim, "POST", "/messages/batches", json={"requests": requests})
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["type"] == "message_batch" and batch["id"].startswith("msgbatch_")
    assert batch["processing_status"] == "in_progress" and batch["results_url"] is None
    assert batch["request_counts"] == {"processing": 7, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
    too_early = _an(sim, "GET", f"/messages/batches/{batch['id']}/results")
    assert too_early.status_code == 400 and too_early.json()["error"]["type"] == "invalid_request_error"
    assert _an(sim, "DELETE", f"/messages/batches/{batch['id']}").status_code == 400   # still processing

    ended = _an_wait(sim, batch["id"])
    assert ended["processing_status"] == "ended"
    assert ended["request_counts"] == {"processing": 0, "succeeded": 6, "errored": 1, "canceled": 0, "expired": 0}
    created_at, ended_at = (datetime.fromisoformat(ended[k]) for k in ("created_at", "ended_at"))
    assert created_at < ended_at and ended["expires_at"] and ended["cancel_initiated_at"] is None
    assert ended["archived_at"] is None and ended["results_url"].endswith(f"/v1/messages/batches/{batch['id']}/results")
    results = _an_results(sim, ended)
    assert set(results) == {r["custom_id"] for r in requests}
    for r in requests[:-1]:
        p = r["params"]
        system = p.get("system")
        if isinstance(system, list):
            system = system[0]["text"]
        messages = ([{"role": "system", "content": system}] if system else []) + p["messages"]
        sync = _sync(fresh, messages, p["max_tokens"])
        result = results[r["custom_id"]]
        assert result["type"] == "succeeded"
        message = result["message"]
        assert (message["type"], message["role"], message["model"]) == ("message", "assistant", "sim-teacher")
        assert message["id"].startswith("msg_") and message["stop_sequence"] is None
        assert message["content"][0]["type"] == "text"
        # "blocks" has the messages of "sys": its second answer, as the fresh simulator's second answer
        assert message["content"][0]["text"] == sync.choices[0].message.content
        assert message["usage"]["output_tokens"] == sync.usage.completion_tokens
        assert message["usage"]["input_tokens"] == sync.usage.prompt_tokens
        assert message["stop_reason"] == {"stop": "end_turn", "length": "max_tokens"}[sync.choices[0].finish_reason]
    assert results["short"]["message"]["stop_reason"] == "max_tokens"
    assert results["blocks"]["message"]["content"][0]["text"] != results["sys"]["message"]["content"][0]["text"]
    bad = results["bad"]
    assert bad["type"] == "errored" and bad["error"]["type"] == "error"
    assert bad["error"]["error"]["type"] == "invalid_request_error"

    deleted = _an(sim, "DELETE", f"/messages/batches/{batch['id']}")
    assert deleted.json() == {"id": batch["id"], "type": "message_batch_deleted"}
    assert _an(sim, "GET", f"/messages/batches/{batch['id']}").json()["error"]["type"] == "not_found_error"
    stats = sim.stats()
    assert stats["batches_created"] == {"anthropic": 1} and stats["batches_ended"] == {"anthropic:completed": 1}
    assert (stats["batch_lines_answered"], stats["batch_lines_errored"]) == (6, 1)


def test_anthropic_headers_and_create_checks(sim_factory) -> None:
    sim = sim_factory(api_key="sk-sim", batch_max_lines=3, batch_max_bytes=4000, batch_enqueued_tokens=40,
                      batch_delay=2.0)
    body = {"requests": [_an_request("a", "Hello")]}
    missing = _an(sim, "POST", "/messages/batches", json=body, headers={"anthropic-version": "2023-06-01"})
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    wrong = _an(sim, "POST", "/messages/batches", json=body, headers={**AN_HEADERS, "x-api-key": "nope"})
    assert wrong.status_code == 401
    no_version = _an(sim, "POST", "/messages/batches", json=body, headers={"x-api-key": "sk-sim"})
    assert no_version.status_code == 400 and "anthropic-version" in no_version.json()["error"]["message"]
    for requests in ([_an_request("a", "Hi"), _an_request("a", "Ho")],            # duplicate custom_id
                     [_an_request("not valid!", "Hi")],                             # custom_id pattern
                     [_an_request(f"n{i}", "Hi") for i in range(4)],                # over batch_max_lines
                     []):
        r = _an(sim, "POST", "/messages/batches", json={"requests": requests})
        assert r.status_code == 400 and r.json()["type"] == "error", requests
    big = _an(sim, "POST", "/messages/batches", json={"requests": [_an_request("big", "word " * 1000)]})
    assert big.status_code == 413 and big.json()["error"]["type"] == "request_too_large"
    assert _an(sim, "POST", "/messages/batches",
               json={"requests": [_an_request("t1", QUESTIONS[0])]}).status_code == 200
    assert _an(sim, "POST", "/messages/batches",
               json={"requests": [_an_request("t2", QUESTIONS[1])]}).status_code == 200
    over = _an(sim, "POST", "/messages/batches", json={"requests": [_an_request("t3", QUESTIONS[2])]})
    assert over.status_code == 429 and over.json()["error"]["type"] == "rate_limit_error"
    assert sim.stats()["batches_created"] == {"anthropic": 2}

    open_sim = sim_factory()                                   # started without a key: any request is served
    assert httpx.post(open_sim.url + "/messages/batches", json=body).status_code == 200


def test_anthropic_progress_cancel_and_expiry(sim_factory) -> None:
    sim = sim_factory(batch_delay=2.0)
    requests = [_an_request(f"c-{i}", QUESTIONS[i]) for i in range(8)]
    batch = _an(sim, "POST", "/messages/batches", json={"requests": requests}).json()
    time.sleep(0.7)
    midway = _an(sim, "GET", f"/messages/batches/{batch['id']}").json()
    # the SDK documents the counts other than `processing` as 0 until the batch ends
    assert midway["processing_status"] == "in_progress" and midway["request_counts"]["processing"] == 8
    answered = sim.stats()["batch_lines_answered"]
    assert 0 < answered < 8                                    # ...but lines are being answered
    canceling = _an(sim, "POST", f"/messages/batches/{batch['id']}/cancel").json()
    assert canceling["processing_status"] == "canceling" and canceling["cancel_initiated_at"]
    ended = _an_wait(sim, batch["id"])
    counts = ended["request_counts"]
    assert counts["succeeded"] >= answered and counts["succeeded"] + counts["canceled"] == 8 and counts["canceled"]
    results = _an_results(sim, ended)
    assert sorted(r["type"] for r in results.values()) == sorted(["succeeded"] * counts["succeeded"]
                                                                  + ["canceled"] * counts["canceled"])
    assert _an(sim, "POST", f"/messages/batches/{batch['id']}/cancel").status_code == 400

    expiring = sim_factory(batch_delay=1.0, batch_expire_after=0.5)
    batch = _an(expiring, "POST", "/messages/batches", json={"requests": requests}).json()
    ended = _an_wait(expiring, batch["id"])
    counts = ended["request_counts"]
    assert counts["succeeded"] and counts["expired"] and counts["succeeded"] + counts["expired"] == 8
    results = _an_results(expiring, ended)
    assert {r["type"] for r in results.values()} == {"succeeded", "expired"}
    assert ended["ended_at"] == ended["expires_at"]
    assert expiring.stats()["batch_lines_expired"] == counts["expired"]


def test_anthropic_list_pagination(sim_factory) -> None:
    sim = sim_factory()
    ids = [_an(sim, "POST", "/messages/batches", json={"requests": [_an_request("x", f"Prompt {i}")]}).json()["id"]
           for i in range(5)]
    newest = ids[::-1]
    first = _an(sim, "GET", "/messages/batches", params={"limit": 2}).json()
    assert [b["id"] for b in first["data"]] == newest[:2] and first["has_more"] is True
    assert (first["first_id"], first["last_id"]) == (newest[0], newest[1])
    seen, after = [], None
    while True:                                    # as the SDK's SyncPage follows `after_id=last_id`
        page = _an(sim, "GET", "/messages/batches",
                   params={"limit": 2, **({"after_id": after} if after else {})}).json()
        seen += [b["id"] for b in page["data"]]
        if not page["has_more"]:
            break
        after = page["last_id"]
    assert seen == newest
    back = _an(sim, "GET", "/messages/batches", params={"limit": 2, "before_id": newest[3]}).json()
    assert [b["id"] for b in back["data"]] == newest[1:3] and back["has_more"] is True
    assert _an(sim, "GET", "/messages/batches", params={"limit": 0}).status_code == 400


# --- both ---------------------------------------------------------------------------------------------
def test_stats_count_answers_per_custom_id_across_batches(sim_factory, tmp_path: Path) -> None:
    log = tmp_path / "sim.jsonl"
    sim = sim_factory(log_path=str(log))
    client = _client(sim)
    _oa_wait(client, _submit(client, [_line("j1", QUESTIONS[0]), _line("j2", QUESTIONS[1])]).id)
    _oa_wait(client, _submit(client, [_line("j2", QUESTIONS[1])]).id)          # j2 answered a second time
    _an_wait(sim, _an(sim, "POST", "/messages/batches",
                      json={"requests": [_an_request("k1", QUESTIONS[2])]}).json()["id"])
    _sync(sim, [{"role": "user", "content": QUESTIONS[0]}])                      # the chat endpoint counts too
    stats = httpx.get(sim.url[:-3] + "/sim/stats", params={"detail": "1"}).json()
    assert stats["batch_answers_per_custom_id"] == {"j1": 1, "j2": 2, "k1": 1}
    assert stats["batch_custom_ids_answered"] == 3 and stats["batch_custom_ids_answered_more_than_once"] == 1
    assert stats["batch_lines_received"] == 4 and stats["batch_lines_answered"] == 4 and stats["answered"] == 5
    assert stats["distinct_prompts_answered"] == 3 and stats["prompts_answered_more_than_once"] == 2
    assert stats["batches_created"] == {"openai": 2, "anthropic": 1} and stats["batches_open"] == 0
    answered = [json.loads(x) for x in log.read_text().splitlines() if '"answered"' in x]
    assert sorted(e["custom_id"] for e in answered if "custom_id" in e) == ["j1", "j2", "j2", "k1"]
    assert "batch_answers_per_custom_id" not in sim.stats()


def test_the_sim_command_takes_the_batch_flags(tmp_path: Path) -> None:
    ready = tmp_path / "url"
    proc = popen_cli("sim", "--port", "0", "--ready-file", str(ready), "--batch-max-lines", "2",
                     "--batch-delay", "0.1", "--batch-expire-after", "600")
    try:
        deadline = time.monotonic() + 30
        while not (ready.exists() and ready.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        client = openai.OpenAI(base_url=ready.read_text(), api_key="x", max_retries=0)
        ok = _oa_wait(client, _submit(client, [_line("a", "Hi"), _line("b", "Ho")]).id)
        assert ok.status == "completed" and ok.expires_at - ok.created_at in (600, 601)
        over = _oa_wait(client, _submit(client, [_line(c, "Hi") for c in "abc"]).id)
        assert over.status == "failed" and over.errors.data[0].code == "too_many_tasks"
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
