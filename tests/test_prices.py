"""Prices with cached input, cache writes, batches and hours of their own (harvester.pricing, hours,
schedule, cacheorder), and reading the providers' cache counts: the pure cores, exhaustively."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from harvester import providers
from harvester.cacheorder import grouped
from harvester.config import Schedule, job_from_dict
from harvester.errors import ConfigError
from harvester.hours import parse_span, parse_weekdays
from harvester.pricing import TokenUsage, cost, highest, rates_at, worst_usd
from harvester.providers.base import ModelPrice, Rates
from harvester.providers.chat import cache_usage, read_completion
from harvester.quota import prices_for
from harvester.schedule import run_schedule
from harvester.store.rows import JobSpec

TUESDAY = datetime(2026, 12, 1, tzinfo=UTC)   # a Tuesday


def at(day: datetime, hhmm: str) -> datetime:
    h, m = map(int, hhmm.split(":"))
    return day.replace(hour=h, minute=m)


def test_a_span_crossing_midnight_belongs_to_the_day_it_starts() -> None:
    night = parse_span("16:30-00:30", parse_weekdays(["fri"]))
    friday = TUESDAY + timedelta(days=3)
    assert night.contains(at(friday, "16:30")) and night.contains(at(friday, "23:59"))
    assert night.contains(at(friday + timedelta(days=1), "00:29"))       # Saturday's first half hour
    assert not night.contains(at(friday + timedelta(days=1), "00:30"))
    assert not night.contains(at(friday, "00:10"))                       # Thursday's night, not Friday's
    assert not night.contains(at(friday, "16:29"))
    assert parse_span("00:00-00:00").contains(at(TUESDAY, "13:00"))      # the whole day
    for bad in ("16:30", "25:00-01:00", "10:60-11:00", "soon"):
        with pytest.raises(ValueError, match="HH:MM-HH:MM|time of day"):
            parse_span(bad)
    with pytest.raises(ValueError, match="not a weekday: 'someday'"):
        parse_weekdays(["mon", "someday"])


def test_cached_tokens_cost_their_rate_and_the_savings_add_up() -> None:
    price = ModelPrice(Rates(1.00, 4.00, cached_input=0.10))
    c = cost(price, TokenUsage(input=10_000, output=1_000, cached=8_000), TUESDAY)
    assert c.list == pytest.approx((10_000 * 1.00 + 1_000 * 4.00) / 1e6)
    assert c.paid == pytest.approx((2_000 * 1.00 + 8_000 * 0.10 + 1_000 * 4.00) / 1e6)
    assert c.saved_cache == pytest.approx(8_000 * 0.90 / 1e6)
    assert c.saved_hour == c.saved_batch == 0
    half = cost(price, TokenUsage(10_000, 1_000, 8_000), TUESDAY, batch_factor=0.5)
    assert half.paid == pytest.approx(c.paid / 2) and half.saved_batch == pytest.approx(c.paid / 2)
    # cached counts larger than the prompt (a confused server) never price below zero
    assert cost(price, TokenUsage(100, 0, cached=500), TUESDAY).paid == pytest.approx(100 * 0.10 / 1e6)


def test_anthropic_cache_writes_cost_more_and_the_worst_case_covers_them() -> None:
    _, price = providers.price_for("claude-sonnet-4-20250514") or (None, None)
    assert price is not None and price.rates.cache_write == pytest.approx(3.75)
    c = cost(price, TokenUsage(input=2_000, output=0, cache_write=2_000), TUESDAY)
    assert c.paid == pytest.approx(2_000 * 3.75 / 1e6) and c.saved_cache < 0     # a premium, not a saving
    assert worst_usd(price, 2_000, 0) == pytest.approx(c.paid)                   # the reservation covers it


def test_deepseek_peak_hours_cost_twice_and_the_list_price_is_the_peak() -> None:
    _, price = providers.price_for("deepseek-v4-pro") or (None, None)
    assert price is not None
    peak, label = rates_at(price, at(TUESDAY, "02:00"))
    off, none = rates_at(price, at(TUESDAY, "12:00"))
    assert label == "peak" and none is None and peak.input == pytest.approx(2 * off.input)
    assert rates_at(price, at(TUESDAY + timedelta(days=4), "02:00"))[1] is None   # Saturday: off-peak all day
    assert highest(price).input == peak.input
    usage = TokenUsage(1_000_000, 100_000, cached=600_000)
    at_peak, at_night = cost(price, usage, at(TUESDAY, "08:00")), cost(price, usage, at(TUESDAY, "20:00"))
    assert at_peak.paid == pytest.approx(2 * at_night.paid)
    assert at_peak.list == at_night.list and at_peak.saved_hour == 0 and at_night.saved_hour > 0
    assert at_night.list - at_night.saved_cache - at_night.saved_hour == pytest.approx(at_night.paid)


def test_every_built_in_price_is_sourced_and_dated() -> None:
    for p in providers.PROVIDERS:
        if p.prices:
            assert p.prices_source and p.prices_source.startswith("https://") and p.prices_read_on, p.name
            for model, price in p.prices.items():
                r = price.rates
                assert r.cached_input is None or r.cached_input <= r.input, model


def _job(**quota: object) -> dict[str, object]:
    return {"name": "t", "teacher": {"model": "deepseek-v4-pro", "api_key_env": None}, "prompts": [{"path": "p.jsonl"}],
            "quota": quota}


def test_quota_prices_override_the_table_rate_by_rate(tmp_path: object) -> None:
    job = job_from_dict(_job(prices={"cached_input_per_mtok": 0.01}))
    price = prices_for(job)
    assert price is not None and price.rates.cached_input == 0.01 and price.rates.input == 0.66
    assert price.windows and price.windows[0].label == "peak"           # the table's hours stay
    flat = prices_for(job_from_dict(_job(prices={"windows": []})))
    assert flat is not None and not flat.windows
    own = prices_for(job_from_dict(_job(prices={"input_per_mtok": 1, "output_per_mtok": 2, "windows": [
        {"hours_utc": ["22:00-06:00"], "weekdays": ["sat", "sun"], "input_per_mtok": 0.5, "label": "weekend night"}]})))
    assert own is not None
    saturday = TUESDAY + timedelta(days=4)
    # a rate left out is the standard one: the table's cached input here
    assert rates_at(own, at(saturday, "23:00")) == (Rates(0.5, 2, 0.022, None), "weekend night")
    assert rates_at(own, at(TUESDAY, "23:00"))[1] is None
    with pytest.raises(ConfigError, match="no built-in prices for model 'my-model'; give input_per_mtok"):
        d = _job(prices={"cached_input_per_mtok": 0.1})
        d["teacher"] = {"model": "my-model", "api_key_env": None}
        prices_for(job_from_dict(d))
    with pytest.raises(ConfigError, match=r"quota\.prices\.windows\[0\]\.hours_utc: not a span of hours"):
        job_from_dict(_job(prices={"windows": [{"hours_utc": ["from six"]}]}))


def test_cache_counts_are_read_in_every_providers_words() -> None:
    assert cache_usage({"prompt_tokens": 2006, "prompt_tokens_details": {"cached_tokens": 1920}}) == \
        {"cached_tokens": 1920}
    assert cache_usage({"prompt_cache_hit_tokens": 1500, "prompt_cache_miss_tokens": 20}) == {"cached_tokens": 1500}
    assert cache_usage({"cache_read_input_tokens": 900, "cache_creation_input_tokens": 300}) == \
        {"cached_tokens": 900, "cache_write_tokens": 300}
    assert cache_usage({"prompt_tokens_details": {"cached_tokens": 0}}) == {}
    assert cache_usage({"prompt_tokens_details": None, "prompt_cache_hit_tokens": "7"}) == {}
    assert cache_usage(None) == {}
    body = {"choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1100, "completion_tokens": 3, "prompt_tokens_details": {"cached_tokens": 1024}}}
    assert read_completion(body).meta["cached_tokens"] == 1024


def test_a_schedule_says_when_it_opens_and_closes() -> None:
    s = run_schedule(Schedule(hours_utc=["16:30-00:30"]), None, "m")
    assert s is not None
    noon = at(TUESDAY, "12:00")
    assert not s.open(noon) and s.next_open(noon) == at(TUESDAY, "16:30")
    assert s.describe(at(TUESDAY, "16:30"), noon) == "16:30 UTC (schedule.hours_utc)"
    assert s.open(at(TUESDAY, "23:00")) and s.closes(at(TUESDAY, "23:00")) == at(TUESDAY + timedelta(days=1), "00:30")
    weekend = run_schedule(Schedule(weekdays=["sat", "sun"]), None, "m")
    assert weekend is not None and weekend.next_open(noon) == TUESDAY + timedelta(days=4)
    assert weekend.describe(TUESDAY + timedelta(days=4), noon).startswith("Sat 2026-12-05 00:00 UTC")
    _, deepseek = providers.price_for("deepseek-v4-pro") or (None, None)
    off = run_schedule(Schedule(off_peak=True), deepseek, "deepseek-v4-pro")
    assert off is not None and off.label == "off-peak"
    assert not off.open(at(TUESDAY, "02:00")) and off.next_open(at(TUESDAY, "02:00")) == at(TUESDAY, "04:00")
    assert off.open(at(TUESDAY, "05:00")) and off.closes(at(TUESDAY, "05:00")) == at(TUESDAY, "06:00")
    _, flat = providers.price_for("gpt-4o") or (None, None)
    with pytest.raises(ConfigError, match="schedule.off_peak: the price of model 'gpt-4o' has no cheaper hours"):
        run_schedule(Schedule(off_peak=True), flat, "gpt-4o")
    with pytest.raises(ValueError, match="either off_peak: true or hours_utc"):
        Schedule(off_peak=True, hours_utc=["01:00-02:00"])


def _spec(seq: int, system: str | None) -> JobSpec:
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": f"q{seq}"}]
    return JobSpec(f"id{seq}", f"p{seq}", seq, 0, {"messages": messages}, "", {})


def test_jobs_sharing_a_first_message_are_sent_together_in_plan_order() -> None:
    specs = [_spec(0, "A"), _spec(1, "B"), _spec(2, None), _spec(3, "A"), _spec(4, "B"), _spec(5, "A")]
    order = sorted(grouped(specs), key=lambda s: (s.group_seq, s.seq))
    assert [s.seq for s in order] == [0, 3, 5, 1, 4, 2]
    assert [s.group_seq for s in grouped([_spec(i, "A") for i in range(3)], enabled=False)] == [0, 1, 2]
