"""The batch protocol layer (harvester.providers.batch, openai_batch, anthropic_batch): pure readings of
literal objects shaped as openai-python 3.57.0 and anthropic-sdk-python 2.15.0 type them, every branch;
then a round trip of each protocol through the simulator, whose answers must equal its chat endpoint's."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest

from harvester import providers
from harvester.providers import anthropic_batch as an
from harvester.providers import openai_batch as oa
from harvester.providers.batch import FATES, BatchState, LineResult
from harvester.providers.chat import Answer, read_completion
from harvester.sim import Simulator

READER = providers.reader(providers.named("openai"))


def _completion(content: Any = "Hello.", finish: str | None = "stop", **message: Any) -> dict[str, Any]:
    return {"id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-x",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, **message},
                         "finish_reason": finish, "logprobs": None}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}}


def _oa_response(status: int, body: Any, cid: str = "j-1") -> dict[str, Any]:
    return {"id": "batch_req_1", "custom_id": cid, "error": None,
            "response": {"status_code": status, "request_id": "r1", "body": body}}


def _oa_error(code: str, message: str = "words", cid: str = "j-1") -> dict[str, Any]:
    return {"id": "batch_req_1", "custom_id": cid, "response": None, "error": {"code": code, "message": message}}


def _batch(status: str, **kw: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": "batch_1", "object": "batch", "endpoint": "/v1/chat/completions", "errors": None,
        "input_file_id": "file-in", "completion_window": "24h", "status": status, "output_file_id": None,
        "error_file_id": None, "created_at": 1_700_000_000, "in_progress_at": None, "expires_at": 1_700_086_400,
        "finalizing_at": None, "completed_at": None, "failed_at": None, "expired_at": None, "cancelling_at": None,
        "cancelled_at": None, "request_counts": {"total": 4, "completed": 2, "failed": 1},
        "metadata": {"harvester_batch": "job-t-3"}, "model": "gpt-x", "usage": None}
    return obj | kw


# --- shared ----------------------------------------------------------------------------------------------
def test_fates_and_limits() -> None:
    assert FATES == ("answered", "retry", "permanent", "fatal", "expired", "cancelled")
    assert (oa.LIMITS.max_requests, oa.LIMITS.max_bytes) == (50_000, 200 * 1024 * 1024)
    assert (an.LIMITS.max_requests, an.LIMITS.max_bytes) == (100_000, 256 * 1024 * 1024)
    line = LineResult("a", "retry")
    assert (line.answer, line.kind, line.detail, line.status) == (None, "", "", None)
    with pytest.raises(AttributeError):
        line.fate = "answered"   # type: ignore[misc]  # frozen


# --- OpenAI: what is sent --------------------------------------------------------------------------------
def test_openai_input_line_and_create_params() -> None:
    request = {"model": "gpt-x", "messages": [{"role": "user", "content": "Grüße 世界"}],
               "params": {"max_tokens": 50, "temperature": 0.2}}
    raw = oa.input_line("job-1", request)
    assert raw.endswith(b"\n") and raw.count(b"\n") == 1
    assert "Grüße 世界".encode() in raw and b": " not in raw and b", " not in raw   # UTF-8, compact
    assert json.loads(raw) == {"custom_id": "job-1", "method": "POST", "url": "/v1/chat/completions",
                               "body": {"model": "gpt-x", "messages": request["messages"], "max_tokens": 50,
                                        "temperature": 0.2}}
    assert json.loads(oa.input_line("j", {"model": "m", "messages": []}))["body"] == {"model": "m", "messages": []}
    assert oa.create_params("file-1", "job-t-1") == {
        "input_file_id": "file-1", "endpoint": "/v1/chat/completions", "completion_window": "24h",
        "metadata": {"harvester_batch": "job-t-1"}}
    with pytest.raises(ValueError):
        oa.create_params("file-1", "x" * 513)


# --- OpenAI: the Batch object ------------------------------------------------------------------------------
@pytest.mark.parametrize("status", ["validating", "in_progress", "finalizing", "cancelling", "some_new_word"])
def test_openai_open_batches(status: str) -> None:
    state = oa.read_batch(_batch(status))
    assert (state.status, state.ended, state.outcome) == (status, False, None)


@pytest.mark.parametrize("status", ["completed", "failed", "expired", "cancelled"])
def test_openai_ended_batches(status: str) -> None:
    state = oa.read_batch(_batch(status, output_file_id="file-out", error_file_id="file-err"))
    assert state == BatchState(id="batch_1", status=status, ended=True, outcome=status,  # type: ignore[arg-type]
                               total=4, succeeded=2, failed=1, output_ref="file-out", error_ref="file-err",
                               input_ref="file-in", tag="job-t-3", created_at=1_700_000_000.0, errors="")


def test_openai_batch_without_counts_metadata_or_files() -> None:
    state = oa.read_batch(_batch("validating", request_counts=None, metadata=None, created_at=None))
    assert (state.total, state.succeeded, state.failed, state.tag, state.created_at) == (0, 0, 0, None, None)
    assert (state.output_ref, state.error_ref) == (None, None)
    assert oa.read_batch(_batch("validating", metadata={"other": "x"})).tag is None


def test_openai_failed_batch_errors_in_the_providers_words() -> None:
    errors = {"object": "list", "data": [
        {"code": "invalid_json_line", "message": "This line is not parseable as valid JSON.", "line": 2,
         "param": None},
        {"code": "token_limit_exceeded", "message": "Enqueued token limit reached.", "line": None, "param": None}]}
    state = oa.read_batch(_batch("failed", errors=errors, request_counts={"total": 0, "completed": 0, "failed": 0}))
    assert state.errors == ("line 2: invalid_json_line: This line is not parseable as valid JSON.; "
                            "token_limit_exceeded: Enqueued token limit reached.")
    many = {"object": "list", "data": [{"code": "duplicate_custom_id", "message": "dup", "line": n}
                                       for n in range(1, 13)]}
    text = oa.read_batch(_batch("failed", errors=many)).errors
    assert text.startswith("line 1: duplicate_custom_id: dup; line 2:") and text.endswith("; and 7 more")
    assert "line 6:" not in text
    long = {"data": [{"code": "x", "message": "word " * 100, "line": 1}]}
    assert len(oa.read_batch(_batch("failed", errors=long)).errors) <= 161


# --- OpenAI: output and error lines --------------------------------------------------------------------------
def test_openai_answered_line_reads_as_the_sync_path() -> None:
    body = _completion("The answer.", reasoning_content="Because.")
    line = oa.read_line(_oa_response(200, body), READER)
    assert line == LineResult("j-1", "answered", read_completion(body), status=200)
    assert line.answer is not None and line.answer.reasoning == "Because." and line.answer.content == "The answer."
    cut = oa.read_line(_oa_response(200, _completion(None, "length")), READER)
    assert cut.fate == "answered" and cut.answer is not None and cut.answer.content == ""


def test_openai_unusable_200_lines() -> None:
    empty = oa.read_line(_oa_response(200, _completion(None, "stop")), READER)
    assert (empty.fate, empty.kind, empty.status) == ("retry", "bad_body", 200) and empty.answer is None
    garbage = oa.read_line(_oa_response(200, {"nothing": True}), READER)
    assert (garbage.fate, garbage.kind) == ("retry", "bad_body")
    filtered = oa.read_line(_oa_response(200, _completion("", "content_filter")), READER)
    assert (filtered.fate, filtered.kind) == ("permanent", "content_filter") and filtered.detail


@pytest.mark.parametrize(("status", "body", "fate", "kind"), [
    (400, {"error": {"message": "Invalid 'messages'.", "type": "invalid_request_error", "param": None,
                     "code": None}}, "permanent", "http_400"),
    (404, {"error": {"message": "The model `x` does not exist.", "type": "invalid_request_error",
                     "code": "model_not_found"}}, "permanent", "http_404"),
    (500, {"error": {"message": "The server had an error.", "type": "server_error"}}, "retry", "http_500"),
    (429, {"error": {"message": "Rate limit reached for requests.", "type": "requests"}}, "retry", "http_429"),
    (401, {"error": {"message": "Incorrect API key provided.", "code": "invalid_api_key"}}, "fatal", "http_401"),
    (429, {"error": {"message": "You exceeded your current quota, please check your plan and billing details.",
                     "type": "insufficient_quota", "code": "insufficient_quota"}}, "fatal", "quota_exhausted"),
])
def test_openai_error_status_lines(status: int, body: Any, fate: str, kind: str) -> None:
    line = oa.read_line(_oa_response(status, body, cid="e-7"), READER)
    assert (line.custom_id, line.fate, line.kind, line.status, line.answer) == ("e-7", fate, kind, status, None)
    assert line.detail == body["error"]["message"]


def test_openai_lines_not_executed() -> None:
    expired = oa.read_line(_oa_error("batch_expired", "This request could not be executed before the "
                                                      "completion window expired."), READER)
    assert (expired.fate, expired.kind, expired.status) == ("expired", "batch_expired", None)
    assert expired.detail.startswith("This request could not be executed")
    cancelled = oa.read_line(_oa_error("batch_cancelled", "cancelled"), READER)
    assert (cancelled.fate, cancelled.kind) == ("cancelled", "batch_cancelled")
    other = oa.read_line(_oa_error("server_overloaded", "try later"), READER)
    assert (other.fate, other.kind, other.detail) == ("retry", "server_overloaded", "try later")
    nameless = oa.read_line({"custom_id": "z", "response": None, "error": {"code": None, "message": None}}, READER)
    assert (nameless.fate, nameless.kind) == ("retry", "batch_error")
    neither = oa.read_line({"id": "x", "custom_id": "z", "response": None, "error": None}, READER)
    assert (neither.fate, neither.kind) == ("retry", "bad_line")
    no_status = oa.read_line({"custom_id": "z", "response": {"body": {}}, "error": None}, READER)
    assert (no_status.fate, no_status.kind) == ("retry", "bad_line")


# --- Anthropic: what is sent -----------------------------------------------------------------------------------
def test_anthropic_unsupported_params() -> None:
    ok = {"max_tokens": 10, "max_completion_tokens": 10, "temperature": 0.7, "top_p": 0.9, "top_k": 40,
          "stop": ["\n\n"], "n": 1}
    assert an.unsupported(ok) == []
    assert an.unsupported({"temperature": 0, "seed": None}) == []      # a null carries nothing
    assert an.unsupported({"n": 2, "seed": 1, "frequency_penalty": 0.5, "temperature": 1.5, "response_format":
                           {"type": "json_object"}, "logprobs": True, "top_p": 1}) == [
        "n", "seed", "frequency_penalty", "temperature", "response_format", "logprobs"]
    assert an.unsupported({"temperature": "hot"}) == ["temperature"]


def test_anthropic_message_params() -> None:
    request = {"model": "claude-x", "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
        {"role": "developer", "content": [{"type": "text", "text": "No "}, {"type": "text", "text": "lists."}]},
        {"role": "assistant", "content": [{"type": "text", "text": "Hello"}]},
        {"role": "user", "content": "Explain."}],
        "params": {"max_tokens": 300, "temperature": 0.3, "top_p": 0.8, "top_k": 5, "stop": "END"}}
    assert an.message_params(request, 1000) == {
        "model": "claude-x", "max_tokens": 300, "system": "Be brief.\n\nNo lists.",
        "messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                     {"role": "user", "content": "Explain."}],
        "temperature": 0.3, "top_p": 0.8, "top_k": 5, "stop_sequences": ["END"]}
    plain = an.message_params({"model": "m", "messages": [{"role": "user", "content": "Q"}]}, 1000)
    assert plain == {"model": "m", "max_tokens": 1000, "messages": [{"role": "user", "content": "Q"}]}
    both = {"model": "m", "messages": [], "params": {"max_tokens": 5, "max_completion_tokens": 7, "stop": ["a", "b"],
                                                      "temperature": None}}
    assert an.message_params(both, 1000) == {"model": "m", "max_tokens": 7, "messages": [],
                                             "stop_sequences": ["a", "b"]}
    newer = {"model": "m", "messages": [], "params": {"max_completion_tokens": 9}}
    assert an.message_params(newer, 1)["max_tokens"] == 9


@pytest.mark.parametrize("message", [
    {"role": "tool", "content": "42", "tool_call_id": "c1"},
    {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
    {"role": "user", "content": None},
])
def test_anthropic_message_params_refuses_what_it_cannot_say(message: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        an.message_params({"model": "m", "messages": [message]}, 10)


def test_anthropic_request_entry() -> None:
    request = {"model": "m", "messages": [{"role": "user", "content": "Q"}], "params": {}}
    assert an.request_entry("job_1-a", request, 64) == {
        "custom_id": "job_1-a", "params": {"model": "m", "max_tokens": 64, "messages": [{"role": "user",
                                                                                         "content": "Q"}]}}
    assert an.VERSION == "2023-06-01"
    for bad in ("has space", "", "x" * 65, "dot.ted"):
        with pytest.raises(ValueError):
            an.request_entry(bad, request, 64)


# --- Anthropic: the MessageBatch object -----------------------------------------------------------------------------
def _message_batch(status: str, cancel: str | None = None, **counts: int) -> dict[str, Any]:
    tally = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0} | counts
    ended = status == "ended"
    return {"id": "msgbatch_1", "type": "message_batch", "processing_status": status, "request_counts": tally,
            "ended_at": "2026-12-01T10:00:05Z" if ended else None, "created_at": "2026-12-01T10:00:00.250000Z",
            "expires_at": "2026-12-02T10:00:00Z", "archived_at": None, "cancel_initiated_at": cancel,
            "results_url": "https://api.example/v1/messages/batches/msgbatch_1/results" if ended else None}


def test_anthropic_open_batches() -> None:
    for status in ("in_progress", "canceling", "some_new_word"):
        state = an.read_batch(_message_batch(status, processing=5))
        assert (state.status, state.ended, state.outcome, state.total, state.succeeded) == (status, False, None, 5, 0)
        assert state.output_ref is None
    created = an.read_batch(_message_batch("in_progress", processing=1)).created_at
    assert created == pytest.approx(1_796_119_200.25)


def test_anthropic_ended_batches() -> None:
    done = an.read_batch(_message_batch("ended", succeeded=3, errored=1))
    assert done == BatchState(id="msgbatch_1", status="ended", ended=True, outcome="completed", total=4,
                              succeeded=3, failed=1, output_ref="https://api.example/v1/messages/batches/"
                              "msgbatch_1/results", error_ref=None, input_ref=None, tag=None,
                              created_at=pytest.approx(1_796_119_200.25), errors="")
    assert an.read_batch(_message_batch("ended", succeeded=2, expired=2)).outcome == "expired"
    cancelled = an.read_batch(_message_batch("ended", "2026-12-01T10:00:02Z", succeeded=2, canceled=2))
    assert (cancelled.outcome, cancelled.total) == ("cancelled", 4)
    # a cancel asked for after everything finished: still the user's (or the deadline's) cancel
    assert an.read_batch(_message_batch("ended", "2026-12-01T10:00:02Z", succeeded=4)).outcome == "cancelled"
    assert an.read_batch(_message_batch("ended", succeeded=1, expired=1, canceled=1)).outcome == "completed"
    naive = _message_batch("ended", succeeded=1) | {"created_at": "2026-12-01T10:00:00"}
    assert an.read_batch(naive).created_at == 1_796_119_200.0
    assert an.read_batch(_message_batch("ended") | {"created_at": "yesterday"}).created_at is None


# --- Anthropic: results lines ---------------------------------------------------------------------------------------
def _message(content: list[dict[str, Any]], stop: str | None = "end_turn", **usage: Any) -> dict[str, Any]:
    return {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-x", "content": content,
            "stop_reason": stop, "stop_sequence": None,
            "usage": {"input_tokens": 12, "output_tokens": 7, **usage}}


def _succeeded(message: dict[str, Any], cid: str = "k-1") -> dict[str, Any]:
    return {"custom_id": cid, "result": {"type": "succeeded", "message": message}}


def _text(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text, "citations": None}


def test_anthropic_succeeded_line() -> None:
    message = _message([{"type": "thinking", "thinking": "First,", "signature": "s"}, _text("The "),
                        {"type": "redacted_thinking", "data": "xx"},
                        {"type": "thinking", "thinking": "then.", "signature": "s"}, _text("answer.")],
                       cache_creation_input_tokens=100, cache_read_input_tokens=None,
                       output_tokens_details={"thinking_tokens": 4}, service_tier="batch")
    line = an.read_line(_succeeded(message))
    assert line == LineResult("k-1", "answered", Answer(
        "The answer.", "stop", "claude-x", 112, 7, "First,\n\nthen.",
        {"id": "msg_1", "cache_creation_input_tokens": 100, "cache_write_tokens": 100, "reasoning_tokens": 4}))
    plain = an.read_line(_succeeded(_message([_text("Hi")], cache_creation_input_tokens=0,
                                             cache_read_input_tokens=30)))
    assert plain.answer is not None and plain.answer.prompt_tokens == 42 and plain.answer.reasoning is None
    assert plain.answer.meta == {"id": "msg_1", "cache_creation_input_tokens": 0, "cache_read_input_tokens": 30,
                                 "cached_tokens": 30}   # harvester's own names too (pricing reads those)
    bare = an.read_line(_succeeded(_message([_text("Hi")])))
    assert bare.answer is not None and bare.answer.meta == {"id": "msg_1"} and bare.answer.prompt_tokens == 12


@pytest.mark.parametrize(("stop", "finish"), [
    ("end_turn", "stop"), ("stop_sequence", "stop"), ("max_tokens", "length"), ("tool_use", "tool_calls"),
    ("refusal", "content_filter"), ("model_context_window_exceeded", "length"), ("pause_turn", "pause_turn"),
    (None, None)])
def test_anthropic_stop_reasons(stop: str | None, finish: str | None) -> None:
    line = an.read_line(_succeeded(_message([_text("Some text.")], stop)))
    assert line.fate == "answered" and line.answer is not None and line.answer.finish_reason == finish


def test_anthropic_answers_without_text() -> None:
    empty = an.read_line(_succeeded(_message([_text("")])))
    assert (empty.fate, empty.kind, empty.answer) == ("retry", "bad_body", None)
    assert an.read_line(_succeeded(_message([]))).kind == "bad_body"
    cut = an.read_line(_succeeded(_message([{"type": "thinking", "thinking": "Hm", "signature": "s"}], "max_tokens")))
    assert cut.fate == "answered" and cut.answer is not None and (cut.answer.content, cut.answer.reasoning,
                                                                   cut.answer.finish_reason) == ("", "Hm", "length")
    refused = an.read_line(_succeeded(_message([_text(" ")], "refusal")))
    assert (refused.fate, refused.kind) == ("permanent", "content_filter")
    spoken = an.read_line(_succeeded(_message([_text("I can't help with that.")], "refusal")))
    assert spoken.fate == "answered"
    for broken in ({"content": "text", "usage": {"input_tokens": 1, "output_tokens": 1}},
                   _message([_text("x")]) | {"usage": {"input_tokens": "many", "output_tokens": 1}},
                   _message([{"type": "text", "text": None}]), None):
        line = an.read_line({"custom_id": "k", "result": {"type": "succeeded", "message": broken}})
        assert (line.fate, line.kind) == ("retry", "bad_body"), broken


def _errored(etype: str, message: str = "What went wrong.") -> dict[str, Any]:
    return {"custom_id": "k-2", "result": {"type": "errored", "error": {
        "type": "error", "error": {"type": etype, "message": message}, "request_id": "req_1"}}}


@pytest.mark.parametrize(("etype", "fate"), [
    ("invalid_request_error", "permanent"), ("not_found_error", "permanent"),
    ("authentication_error", "fatal"), ("permission_error", "fatal"), ("billing_error", "fatal"),
    ("rate_limit_error", "retry"), ("api_error", "retry"), ("overloaded_error", "retry"), ("timeout_error", "retry"),
    ("gateway_timeout_error", "retry"), ("brand_new_error", "retry")])
def test_anthropic_errored_lines(etype: str, fate: str) -> None:
    assert an.read_line(_errored(etype)) == LineResult("k-2", fate, kind=etype,  # type: ignore[arg-type]
                                                       detail="What went wrong.")


def test_anthropic_other_results() -> None:
    credit = an.read_line(_errored("invalid_request_error", "Your credit balance is too low to access the API."))
    assert (credit.fate, credit.kind) == ("fatal", "invalid_request_error")
    shapeless = an.read_line({"custom_id": "k", "result": {"type": "errored", "error": None}})
    assert (shapeless.fate, shapeless.kind) == ("retry", "unknown_error")
    canceled = an.read_line({"custom_id": "k-3", "result": {"type": "canceled"}})
    assert (canceled.custom_id, canceled.fate, canceled.kind) == ("k-3", "cancelled", "batch_cancelled")
    expired = an.read_line({"custom_id": "k-4", "result": {"type": "expired"}})
    assert (expired.fate, expired.kind, expired.status) == ("expired", "batch_expired", None)
    assert an.read_line({"custom_id": "k", "result": {"type": "vanished"}}).kind == "bad_line"
    assert an.read_line({"custom_id": "k"}).kind == "bad_line"


# --- round trips through the simulator ---------------------------------------------------------------------------
QUESTIONS = [f"Round trip {i}: say something about topic {i * 13}." for i in range(6)]


def _requests() -> dict[str, dict[str, Any]]:
    out = {f"q-{i}": {"model": "sim-teacher", "messages": [{"role": "user", "content": q}],
                      "params": {"max_tokens": 200, "temperature": 0.5}} for i, q in enumerate(QUESTIONS[:4])}
    out["short"] = {"model": "sim-teacher", "messages": [{"role": "user", "content": QUESTIONS[4]}],
                    "params": {"max_tokens": 4}}
    out["sys"] = {"model": "sim-teacher", "messages": [{"role": "system", "content": "Answer in one line."},
                                                       {"role": "user", "content": QUESTIONS[5]}],
                  "params": {"max_tokens": 200}}
    return out


def _sync(sim: Simulator, request: dict[str, Any]) -> Answer:
    body = {"model": request["model"], "messages": request["messages"], **request["params"]}
    return read_completion(httpx.post(sim.url + "/chat/completions", json=body, timeout=10).json())


def _poll(fetch: Callable[[], BatchState], timeout: float = 10.0) -> BatchState:
    deadline = time.monotonic() + timeout
    while not (state := fetch()).ended:
        assert time.monotonic() < deadline, state
        time.sleep(0.02)
    return state


def _oa_results(client: openai.OpenAI, state: BatchState) -> dict[str, LineResult]:
    out: dict[str, LineResult] = {}
    for ref in (state.output_ref, state.error_ref):
        if ref is not None:
            for raw in client.files.content(ref).text.splitlines():
                line = oa.read_line(json.loads(raw), READER)
                out[line.custom_id] = line
    return out


def _oa_submit(client: openai.OpenAI, requests: dict[str, dict[str, Any]], tag: str) -> BatchState:
    data = b"".join(oa.input_line(cid, r) for cid, r in requests.items())
    f = client.files.create(file=("in.jsonl", data), purpose="batch")
    return oa.read_batch(client.batches.create(**oa.create_params(f.id, tag)).model_dump())


def test_openai_round_trip_through_the_simulator(sim_factory: Callable[..., Simulator]) -> None:
    sim, fresh = sim_factory(batch_delay=0.1, reasoning=True), sim_factory(reasoning=True)
    client = openai.OpenAI(base_url=sim.url, api_key="sk-sim", max_retries=0)
    requests = _requests()
    created = _oa_submit(client, requests, "job-t-1")
    assert (created.status, created.ended, created.tag) == ("validating", False, "job-t-1")
    # the tag finds the batch in the listing, as a rerun after a crash would look for it
    assert [b.id for b in client.batches.list() if oa.read_batch(b.model_dump()).tag == "job-t-1"] == [created.id]
    state = _poll(lambda: oa.read_batch(client.batches.retrieve(created.id).model_dump()))
    assert (state.outcome, state.total, state.succeeded, state.failed) == ("completed", 6, 6, 0)
    assert state.input_ref is not None and state.error_ref is None and state.created_at
    results = _oa_results(client, state)
    assert set(results) == set(requests)
    for cid, request in requests.items():          # a fresh simulator gives the same series of answers
        assert results[cid] == LineResult(cid, "answered", _sync(fresh, request), status=200)
    assert results["short"].answer is not None and results["short"].answer.finish_reason == "length"
    assert all(r.answer is not None and r.answer.reasoning for r in results.values())


def test_openai_round_trip_line_errors_and_expiry(sim_factory: Callable[..., Simulator]) -> None:
    sim = sim_factory(batch_error_rate=0.3, batch_invalid_rate=0.2, seed=3)
    client = openai.OpenAI(base_url=sim.url, api_key="sk-sim", max_retries=0)
    requests = {f"x-{i}": {"model": "sim-teacher", "messages": [{"role": "user", "content": f"Prompt {i}"}],
                           "params": {"max_tokens": 50}} for i in range(30)}
    batch_id = _oa_submit(client, requests, "t-2").id
    state = _poll(lambda: oa.read_batch(client.batches.retrieve(batch_id).model_dump()))
    results = _oa_results(client, state)
    fates = {(r.fate, r.kind) for r in results.values()}
    assert fates == {("answered", ""), ("retry", "http_500"), ("permanent", "http_400")}
    assert state.succeeded == sum(r.fate == "answered" for r in results.values()) and state.failed

    slow = sim_factory(batch_delay=1.0, batch_expire_after=0.4)
    c2 = openai.OpenAI(base_url=slow.url, api_key="sk-sim", max_retries=0)
    slow_id = _oa_submit(c2, _requests(), "t-3").id
    expired = _poll(lambda: oa.read_batch(c2.batches.retrieve(slow_id).model_dump()))
    assert expired.outcome == "expired"
    fates2 = [r.fate for r in _oa_results(c2, expired).values()]
    assert sorted(set(fates2)) == ["answered", "expired"] and len(fates2) == 6


def test_anthropic_round_trip_through_the_simulator(sim_factory: Callable[..., Simulator]) -> None:
    sim, fresh = sim_factory(batch_delay=0.1, api_key="sk-sim", reasoning=True), sim_factory(reasoning=True)
    headers = {"x-api-key": "sk-sim", "anthropic-version": an.VERSION}
    requests = _requests()
    assert all(an.unsupported(r["params"]) == [] for r in requests.values())
    body = {"requests": [an.request_entry(cid, r, 1024) for cid, r in requests.items()]}
    created = httpx.post(sim.url + "/messages/batches", json=body, headers=headers, timeout=10)
    assert created.status_code == 200, created.text
    first = an.read_batch(created.json())
    assert (first.status, first.ended, first.total, first.output_ref) == ("in_progress", False, 6, None)
    state = _poll(lambda: an.read_batch(httpx.get(f"{sim.url}/messages/batches/{first.id}", headers=headers,
                                                  timeout=10).json()))
    assert (state.outcome, state.total, state.succeeded, state.failed) == ("completed", 6, 6, 0)
    assert state.output_ref is not None and state.created_at is not None
    assert abs(state.created_at - time.time()) < 30
    text = httpx.get(state.output_ref, headers=headers, timeout=10).text
    results = {line.custom_id: line for line in map(an.read_line, map(json.loads, text.splitlines()))}
    assert set(results) == set(requests)
    for cid, request in requests.items():
        line, sync = results[cid], _sync(fresh, request)
        assert line.fate == "answered" and line.answer is not None, line
        a = line.answer
        assert (a.content, a.finish_reason, a.model, a.prompt_tokens, a.completion_tokens, a.reasoning) == (
            sync.content, sync.finish_reason, sync.model, sync.prompt_tokens, sync.completion_tokens, sync.reasoning)
        assert a.meta["id"].startswith("msg_") and a.meta["cache_read_input_tokens"] == 0
    assert results["short"].answer is not None and results["short"].answer.finish_reason == "length"


def test_anthropic_round_trip_line_errors_and_cancel(sim_factory: Callable[..., Simulator]) -> None:
    sim = sim_factory(batch_delay=2.0, batch_error_rate=0.3, seed=5)   # seed 5: the first two lines err
    headers = {"x-api-key": "x", "anthropic-version": an.VERSION}
    requests = {"nothing": {"model": "sim-teacher", "messages": [], "params": {}}}   # refused when processed
    requests |= {f"c-{i}": {"model": "sim-teacher", "messages": [{"role": "user", "content": f"Prompt {i}"}],
                            "params": {}} for i in range(20)}
    body = {"requests": [an.request_entry(cid, r, 64) for cid, r in requests.items()]}
    batch_id = httpx.post(sim.url + "/messages/batches", json=body, headers=headers, timeout=10).json()["id"]
    time.sleep(0.5)
    cancel = httpx.post(f"{sim.url}/messages/batches/{batch_id}/cancel", headers=headers, timeout=10).json()
    assert an.read_batch(cancel).status == "canceling" and not an.read_batch(cancel).ended
    state = _poll(lambda: an.read_batch(httpx.get(f"{sim.url}/messages/batches/{batch_id}", headers=headers,
                                                  timeout=10).json()))
    assert state.outcome == "cancelled" and state.total == 21
    text = httpx.get(state.output_ref or "", headers=headers, timeout=10).text
    results = [an.read_line(json.loads(raw)) for raw in text.splitlines()]
    fates = {r.fate for r in results}
    assert {"answered", "cancelled", "retry"} <= fates <= {"answered", "cancelled", "permanent", "retry"}
    assert all(r.kind == "api_error" for r in results if r.fate == "retry")
    assert all(r.kind == "invalid_request_error" for r in results if r.fate == "permanent")
    nothing = next(r for r in results if r.custom_id == "nothing")   # processed first: a line error
    assert (nothing.fate, nothing.kind) in {("permanent", "invalid_request_error"), ("retry", "api_error")}
    assert state.succeeded == sum(r.fate == "answered" for r in results)

    done = sim_factory(batch_invalid_rate=1.0)
    body = {"requests": [an.request_entry("p-1", requests["c-1"], 64)]}
    batch = httpx.post(done.url + "/messages/batches", json=body, headers=headers, timeout=10).json()
    ended = _poll(lambda: an.read_batch(httpx.get(f"{done.url}/messages/batches/{batch['id']}", headers=headers,
                                                  timeout=10).json()))
    line = an.read_line(json.loads(httpx.get(ended.output_ref or "", headers=headers, timeout=10).text))
    assert (line.fate, line.kind, ended.failed) == ("permanent", "invalid_request_error", 1)
    assert "invalid" in line.detail
