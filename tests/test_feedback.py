"""The provider room's reading of answers: status, headers and body in, a Feedback out.

Pure functions and data: no server, no limiter (tests/test_ratelimit.py drives the limiter with the
parsed values; tests/test_providers.py runs provider-like teachers end to end)."""

from __future__ import annotations

import json
from email.utils import formatdate

import httpx
import pytest

from harvester import providers
from harvester.providers.feedback import outcome_of, parse_reset, parse_retry_after

READ = providers.reader()
WALL = 1_700_000_000.0      # 2023-11-14T22:13:20Z


# --------------------------------------------------------------------------- times

@pytest.mark.parametrize("value,expected", [
    ("1s", 1.0), ("6m0s", 360.0), ("20ms", 0.02), ("1h2m3.5s", 3723.5), ("0.5s", 0.5),
    ("1.5s", 1.5), ("59.6s", 59.6), ("2", 2.0), (" 7s ", 7.0), ("100us", 1e-4),
])
def test_parse_reset_durations(value: str, expected: float) -> None:
    assert parse_reset(value) == pytest.approx(expected)


@pytest.mark.parametrize("value", ["", "soon", "1x", "s", "1s2", "-"])
def test_parse_reset_garbage_is_none(value: str) -> None:
    assert parse_reset(value) is None


def test_parse_reset_timestamps_are_relative_to_now() -> None:
    now = 1_700_000_000.0      # 2023-11-14T22:13:20Z
    assert parse_reset("2023-11-14T22:13:25Z", now_wall=now) == pytest.approx(5.0)
    assert parse_reset("2023-11-14T22:13:20.5+00:00", now_wall=now) == pytest.approx(0.5)
    assert parse_reset("2023-11-14T22:13:00Z", now_wall=now) == 0.0     # already past
    assert parse_reset("1700000003", now_wall=now) == pytest.approx(3.0)  # epoch seconds


def test_parse_retry_after() -> None:
    now = 1_700_000_000.0
    assert parse_retry_after({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5   # ms wins
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"Retry-After": "4"}) == 4.0                            # mixed-case dict
    assert parse_retry_after(httpx.Headers({"Retry-After-Ms": "250"})) == 0.25
    assert parse_retry_after({"retry-after": formatdate(now + 7, usegmt=True)}, now_wall=now) == pytest.approx(7.0)
    assert parse_retry_after({"retry-after": "whenever"}) is None
    assert parse_retry_after({}) is None


def test_is_quota_exhausted() -> None:
    openai_quota = {"error": {"message": "You exceeded your current quota, please check your plan and billing "
                                         "details.", "type": "insufficient_quota", "code": "insufficient_quota"}}
    assert READ.is_quota_exhausted(429, openai_quota)
    assert READ.is_quota_exhausted(429, '{"error": {"code": "insufficient_quota"}}')
    assert READ.is_quota_exhausted(403, {"error": {"code": "billing_hard_limit_reached"}})
    assert READ.is_quota_exhausted(429, "Rate limit reached for gpt-4o-mini on requests per day (RPD): Limit 200")
    assert READ.is_quota_exhausted(400, {"error": {"message": "Your credit balance is too low to access the API."}})
    assert READ.is_quota_exhausted(402, None)
    rate_limit = {"error": {"message": "Rate limit reached for gpt-4o on tokens per min (TPM): Limit 30000, "
                                       "Used 29000. Please try again in 2s.", "code": "rate_limit_exceeded"}}
    assert not READ.is_quota_exhausted(429, rate_limit)
    assert not READ.is_quota_exhausted(429, "Quota exceeded for metric: generate_content_requests per minute")
    # Gemini's OpenAI-compatible endpoint: OpenAI's quota sentence for a per-minute limit (a list body) ...
    gemini = [{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": (
        "You exceeded your current quota, please check your plan and billing details. * Quota exceeded for "
        "metric: generativelanguage.googleapis.com/generate_content_free_tier_requests, limit: 10. "
        "Please retry in 36.239822151s."), "details": [
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": [
                {"quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier"}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "36s"}]}}]
    assert not READ.is_quota_exhausted(429, gemini)
    assert READ.retry_delay_in_body(gemini) == pytest.approx(36.24, abs=0.01)       # the first one stated
    # ... and for the day's quota, which no retry within the run can fix
    daily = json.loads(json.dumps(gemini).replace("PerMinute", "PerDay"))
    assert READ.is_quota_exhausted(429, daily)
    assert READ.retry_delay_in_body("Please try again in 20ms.") == 0.02
    assert READ.retry_delay_in_body({"error": {"message": "Rate limit. Please retry in 1.5s"}}) == 1.5
    assert (READ.retry_delay_in_body({"error": {"message": "slow down"}}) is None
            and READ.retry_delay_in_body(None) is None)
    assert not READ.is_quota_exhausted(429, None)
    assert not READ.is_quota_exhausted(403, {"error": {"message": "Project does not have access to model"}})
    assert not READ.is_quota_exhausted(500, openai_quota)


# --------------------------------------------------------------------------- outcomes and verdicts

def test_status_to_outcome_table() -> None:
    assert [outcome_of(s) for s in (200, 201, 400, 401, 404, 429, 500, 502, 503, 529)] == [
        "ok", "ok", "error", "error", "error", "rate_limited", "error", "error", "overloaded", "overloaded"]
    assert outcome_of(None, timed_out=True) == "timeout" and outcome_of(None) == "error"


@pytest.mark.parametrize("status,body,verdict", [
    (429, {"error": {"message": "Rate limit reached for requests"}}, "retry"),
    (408, None, "retry"), (409, None, "retry"), (425, None, "retry"), (500, None, "retry"), (503, "busy", "retry"),
    (401, {"error": {"message": "Incorrect API key"}}, "fatal_auth"), (403, None, "fatal_auth"),
    (429, {"error": {"code": "insufficient_quota"}}, "fatal_billing"), (402, None, "fatal_billing"),
    (400, {"error": {"message": "bad"}}, "permanent"), (404, None, "permanent"), (422, None, "permanent"),
])
def test_verdicts(status: int, body: object, verdict: str) -> None:
    assert READ.verdict(status, body) == verdict


def test_a_failure_reads_its_retry_after_once_headers_first_then_the_body() -> None:
    body = {"error": {"message": "Rate limit. Please retry in 1.5s"}}
    fb = READ.failure(429, httpx.Headers({"Retry-After-Ms": "250"}), body, now_wall=WALL)
    assert (fb.outcome, fb.verdict, fb.retry_after) == ("rate_limited", "retry", 0.25)
    assert READ.failure(429, {}, body, now_wall=WALL).retry_after == 1.5
    assert READ.failure(503, {"retry-after": "2"}, None, now_wall=WALL).retry_after == 2.0
    assert READ.failure(400, {"retry-after": "2"}, None, now_wall=WALL).retry_after is None   # not a wait


def test_a_permanent_error_about_the_prompt() -> None:
    too_long = {"error": {"message": "This model's maximum context length is 8192 tokens", "code": None}}
    assert READ.failure(400, {}, too_long, now_wall=WALL).about_prompt
    assert READ.failure(413, {}, "too big", now_wall=WALL).about_prompt
    assert not READ.failure(404, {}, {"detail": "Not Found"}, now_wall=WALL).about_prompt
    assert READ.failure(422, {}, {"detail": [{"loc": ["body", "temperature"], "msg": "too high"}]},
                        now_wall=WALL).detail == "temperature: too high"


# --------------------------------------------------------------------------- limits stated in headers

def openai_headers(limit: int, remaining: int, reset: str, tokens: tuple[int, int, str] | None = None) -> dict:
    h = {"x-ratelimit-limit-requests": str(limit), "x-ratelimit-remaining-requests": str(remaining),
         "x-ratelimit-reset-requests": reset}
    if tokens:
        h |= {"x-ratelimit-limit-tokens": str(tokens[0]), "x-ratelimit-remaining-tokens": str(tokens[1]),
              "x-ratelimit-reset-tokens": tokens[2]}
    return h


def test_openai_headers() -> None:
    fb = READ.reply(200, httpx.Headers(openai_headers(3000, 2999, "20ms", tokens=(2_000_000, 1_999_800, "6ms"))),
                    prompt_tokens=5, completion_tokens=7, latency=0.3, now_wall=WALL)
    assert [(h.dimension, h.limit, h.remaining, h.reset, h.per_minute) for h in fb.limits] == [
        ("requests", 3000, 2999, pytest.approx(0.02), True),
        ("tokens", 2_000_000, 1_999_800, pytest.approx(0.006), True)]
    assert (fb.outcome, fb.prompt_tokens, fb.completion_tokens, fb.latency) == ("ok", 5, 7, 0.3)


def test_anthropic_headers() -> None:
    h = {}
    for kind, limit in (("requests", 50), ("input-tokens", 40_000), ("output-tokens", 8_000)):
        h[f"anthropic-ratelimit-{kind}-limit"] = str(limit)
        h[f"anthropic-ratelimit-{kind}-remaining"] = str(limit - 1)
        h[f"anthropic-ratelimit-{kind}-reset"] = "2023-11-14T22:13:21Z"   # 1 s after WALL
    hints = {x.dimension: x for x in READ.limits(h, WALL)}
    assert set(hints) == {"requests", "input_tokens", "output_tokens"}
    assert (hints["requests"].limit, hints["requests"].reset, hints["requests"].per_minute) == (50, 1.0, True)
    assert hints["input_tokens"].limit == 40_000 and hints["output_tokens"].limit == 8_000


def test_a_per_day_limit_header_is_not_taken_as_per_minute() -> None:
    (day,) = READ.limits(openai_headers(14_400, 14_000, "2h46m40s"), WALL)
    assert not day.per_minute and day.remaining == 14_000
    # Early in the day (Groq: requests per day and tokens per minute under the same names) the
    # reset is short, but refilling 1 request in 6 s means a day's window; the tokens are per minute.
    req, tok = READ.limits(openai_headers(14_400, 14_399, "6s", tokens=(18_000, 17_900, "333ms")), WALL)
    assert not req.per_minute and tok.per_minute
    # A per-minute limit whose reset is rounded up to whole seconds is still per minute.
    (rpm,) = READ.limits(openai_headers(4_000, 3_999, "1s"), WALL)
    assert rpm.per_minute


def test_groq_is_known_to_count_requests_per_day() -> None:
    groq = providers.identify(None, "https://api.groq.com/openai/v1")
    assert groq is not None and groq.name == "groq"
    # late in Groq's day the numbers alone look like a minute's; its room knows better
    req, tok = providers.reader(groq).limits(openai_headers(1_000, 400, "30s", tokens=(6_000, 5_000, "1s")), WALL)
    assert not req.per_minute and tok.per_minute
    req, _ = READ.limits(openai_headers(1_000, 400, "30s", tokens=(6_000, 5_000, "1s")), WALL)
    assert req.per_minute                       # elsewhere the same headers are a per-minute limit


def test_no_headers_no_limits() -> None:
    assert READ.limits({}, WALL) == () and READ.limits({"content-type": "application/json"}, WALL) == ()


# --------------------------------------------------------------------------- the registry

def test_the_registry_finds_providers_by_name_alias_and_host() -> None:
    assert providers.named("Gemini").name == "google" and providers.named("sim").name == "simulator"
    assert providers.at("https://api.anthropic.com/v1").name == "anthropic"
    assert providers.identify("deepseek", "http://127.0.0.1:1/v1").name == "deepseek"
    assert providers.at("http://10.0.0.7:8000/v1") is None and providers.named("nobody") is None
    names = [p.name for p in providers.PROVIDERS]
    assert len(names) == len(set(names))


def test_builtin_prices_longest_prefix_wins() -> None:
    provider, price = providers.price_for("openai/gpt-4o-mini-2024-07-18")
    assert provider.name == "openai" and (price.rates.input, price.rates.output) == (0.15, 0.60)
    assert providers.price_for("gpt-4o-2024-08-06")[1].rates == providers.Rates(2.50, 10.00, cached_input=1.25)
    assert providers.price_for("my-local-model") is None
