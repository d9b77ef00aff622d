"""End to end, the real CLI against the simulator (which reports cached tokens for a repeated long
first message, harvester.sim_cache): every cent right, schedules, and the dry run's list and expected cost."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import cli, popen_cli

from harvester.sim import Simulator

PRICES = {"input_per_mtok": 1.00, "output_per_mtok": 4.00, "cached_input_per_mtok": 0.10}
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda".split()


def write_job(folder: Path, sim: Simulator, n: int, *, name: str = "t", systems: int = 5, **overrides: Any) -> Path:
    """`n` prompts under `systems` long system prompts (~1,400 tokens: cached by the simulator), interleaved."""
    rng = random.Random(7)
    heads = [f"You are tutor {k}. " + " ".join(rng.choice(WORDS) for _ in range(1400)) for k in range(systems)]
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"system": heads[i % systems], "prompt": f"Question {i}: explain topic {i}."}) + "\n")
    job: dict[str, Any] = {"name": name, "prompts": [{"path": "prompts.jsonl"}],
                           "teacher": {"base_url": sim.url, "model": "sim-teacher", "api_key_env": None,
                                       "params": {"max_tokens": 60}, "limits": {"max_concurrency": 4}},
                           "quota": {"usd_total": 100.0, "prices": PRICES}}
    for key, value in overrides.items():
        job[key] = {**job[key], **value} if isinstance(value, dict) and isinstance(job.get(key), dict) else value
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def ledger(job: Path, name: str = "t") -> dict[str, float]:
    with sqlite3.connect(job.parent / "data" / f"{name}.db") as c:
        c.row_factory = sqlite3.Row
        row = c.execute("SELECT * FROM usagetotal WHERE window = 'total'").fetchone()
        return dict(row)


def by_hand(log: Path, prices: dict[str, float]) -> tuple[float, int]:
    """The cost of what the simulator answered, from its own log: fresh, cached and output tokens at their rates."""
    usd, answered = 0.0, 0
    for line in log.read_text().splitlines():
        e = json.loads(line)
        if e["event"] == "answered":
            fresh = e["prompt_tokens"] - e["cached_tokens"]
            usd += (fresh * prices["input_per_mtok"] + e["cached_tokens"] * prices["cached_input_per_mtok"]
                    + e["completion_tokens"] * prices["output_per_mtok"]) / 1e6
            answered += 1
    return usd, answered


def test_the_ledger_costs_what_the_simulators_log_says_at_the_cached_rate(
        tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    log = tmp_path / "sim.jsonl"
    sim = sim_factory(log_path=str(log))
    job = write_job(tmp_path / "job", sim, 300)
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stderr
    expected, answered = by_hand(log, PRICES)
    assert answered == 300
    got = ledger(job)
    assert got["cached_tokens"] == sim.stats()["cached_tokens"] > 0.8 * sim.stats()["prompt_tokens"]
    assert abs(got["usd"] - expected) <= 0.01 * answered / 10_000          # within a cent per 10,000 requests
    flat = sim.stats()["prompt_tokens"] * 1.00 / 1e6 + sim.stats()["completion_tokens"] * 4.00 / 1e6
    assert abs(got["usd_list"] - flat) <= 0.01 * answered / 10_000
    assert abs(got["usd_list"] - got["saved_cache"] - got["usd"]) < 1e-9
    q = cli("quota", str(job))
    assert q.returncode == 0, q.stderr
    text = " ".join(q.stdout.split())
    assert f"paid ${got['usd']:.4f} of ${got['usd_list']:.4f} at list price" in text, text
    assert f"caching saved ${got['saved_cache']:.4f}" in text
    s = cli("status", str(job), "--json")
    assert json.loads(s.stdout)["cost"]["usd_list"] == got["usd_list"]


def test_a_usd_budget_that_flat_pricing_would_stop_early_is_used_to_its_end(
        tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    # What the harvest costs, cached and flat: measured on a store of its own
    probe = write_job(tmp_path / "probe", sim_factory(latency=0.05), 200, name="probe")
    assert cli("run", str(probe), "--quiet").returncode == 0
    spent = ledger(probe, "probe")
    cached, flat = spent["usd"], spent["usd_list"]
    # room for the worst case of the requests in flight, and of those answered but not yet written (~$0.009 each)
    budget = round(cached + 0.1, 4)
    assert budget < flat / 1.5
    # Priced flat (cached tokens at the fresh rate), the same harvest stops at the budget...
    flat_job = write_job(tmp_path / "flat", sim_factory(latency=0.05), 200, name="flat",
                         quota={"usd_total": budget, "prices": {**PRICES, "cached_input_per_mtok": 1.00}})
    r = cli("run", str(flat_job), "--quiet")
    assert r.returncode == 3, (r.stdout, r.stderr)
    assert "quota usd_total reached" in r.stderr
    # ... and priced by what the provider reported, it is answered whole within it.
    sim = sim_factory(latency=0.05)
    job = write_job(tmp_path / "cached", sim, 200, quota={"usd_total": budget, "prices": PRICES})
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert "200/200 done" in r.stdout and sim.stats()["answered"] == 200
    assert ledger(job)["usd"] <= budget


def test_deepseek_peak_hours_cost_twice_the_off_peak_ones(tmp_path: Path,
                                                          sim_factory: Callable[..., Simulator]) -> None:
    paid = {}
    for label, now in (("peak", "2026-12-01T02:00:00Z"), ("off_peak", "2026-12-01T12:00:00Z")):
        job = write_job(tmp_path / label, sim_factory(), 20, quota={"usd_total": 10.0, "prices": None},
                        teacher={"model": "deepseek-v4-pro", "limits": {"max_concurrency": 1}})
        r = cli("run", str(job), "--quiet", env={"HARVESTER_NOW": now})
        assert r.returncode == 0, r.stderr
        paid[label] = ledger(job)
    assert paid["peak"]["usd"] == pytest_approx(2 * paid["off_peak"]["usd"])
    assert paid["peak"]["usd_list"] == pytest_approx(paid["off_peak"]["usd_list"])
    assert paid["peak"]["saved_hour"] == 0 and paid["off_peak"]["saved_hour"] == pytest_approx(paid["off_peak"]["usd"])


def pytest_approx(x: float) -> Any:
    return pytest.approx(x, rel=1e-9)


def _hhmm(t: datetime) -> str:
    return f"{t:%H:%M}"


def test_outside_its_window_a_run_sends_nothing_and_says_when_it_starts(
        tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    sim = sim_factory()
    now = datetime.now(UTC)
    start, end = now + timedelta(hours=2), now + timedelta(hours=3)
    job = write_job(tmp_path / "job", sim, 10, schedule={"hours_utc": [f"{_hhmm(start)}-{_hhmm(end)}"]})
    r = cli("run", str(job), "--quiet", "--no-wait")
    assert r.returncode == 6, (r.stdout, r.stderr)
    said = " ".join(r.stderr.split())   # (the date comes first when it opens another day)
    assert "outside the schedule: nothing was sent; it opens at" in said
    assert f"{_hhmm(start)} UTC (schedule.hours_utc)" in said
    assert sim.stats()["requests"] == 0
    assert not (job.parent / "data").exists()             # nothing written either
    # Without --no-wait it waits, saying until when, and sends nothing meanwhile
    p = popen_cli("run", str(job), "--quiet")
    try:
        deadline = time.monotonic() + 60
        line = ""
        assert p.stderr is not None
        while time.monotonic() < deadline and "waiting until" not in line:
            line = p.stderr.readline()
        assert "waiting until" in line and f"{_hhmm(start)} UTC (schedule.hours_utc)" in line
        time.sleep(1.0)
        assert p.poll() is None and sim.stats()["requests"] == 0
    finally:
        p.send_signal(signal.SIGINT)
        p.wait(30)
    assert p.returncode == 130


def test_a_window_that_contains_now_runs_and_one_about_to_open_starts_by_itself(
        tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    sim = sim_factory()
    now = datetime.now(UTC)
    job = write_job(tmp_path / "now", sim, 10,
                    schedule={"hours_utc": [f"{_hhmm(now - timedelta(hours=1))}-{_hhmm(now + timedelta(hours=1))}"]})
    r = cli("run", str(job), "--quiet", "--no-wait")
    assert r.returncode == 0, r.stderr
    assert sim.stats()["answered"] == 10
    # A run started at 16:29:52 (HARVESTER_NOW) for the 16:30-00:30 window waits (8 s less its start-up), then runs
    sim2 = sim_factory()
    job = write_job(tmp_path / "soon", sim2, 10, schedule={"hours_utc": ["16:30-00:30"]})
    started = time.time()
    r = cli("run", str(job), "--quiet", env={"HARVESTER_NOW": "2026-12-01T16:29:52Z"})
    assert r.returncode == 0, r.stderr
    assert "waiting until 16:30 UTC (schedule.hours_utc)" in r.stderr
    assert sim2.stats()["answered"] == 10
    assert sim2.stats()["first_request"] >= started + 7.9      # nothing before 16:30 by its clock


def test_at_the_end_of_its_window_a_run_stops_sending_and_with_no_wait_exits(
        tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    sim = sim_factory(latency=0.3)
    job = write_job(tmp_path / "job", sim, 400, schedule={"hours_utc": ["16:30-00:30"]},
                    teacher={"limits": {"max_concurrency": 2}})
    r = cli("run", str(job), "--quiet", "--no-wait", env={"HARVESTER_NOW": "2026-12-02T00:29:35Z"})
    assert r.returncode == 6, (r.stdout, r.stderr)
    assert "the schedule's window closed" in r.stderr and "it opens again at 16:30 UTC" in r.stderr
    answered = sim.stats()["answered"]
    assert 0 < answered < 400
    assert sim.stats()["requests"] == answered            # what was in flight finished, nothing more was sent
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        assert c.execute("SELECT count(*) FROM job WHERE status = 'done'").fetchone()[0] == answered


def test_the_dry_run_shows_list_and_expected_cost(tmp_path: Path, sim_factory: Callable[..., Simulator]) -> None:
    job = write_job(tmp_path / "job", sim_factory(), 100)
    assert cli("run", str(job), "--quiet", "--limit", "30").returncode == 0
    r = cli("run", str(job), "--dry-run")
    assert r.returncode == 0, r.stderr
    text = " ".join(r.stdout.split())
    assert "expected at list price (from 30" in text and "% of input cached" in text, text
    from harvester import Harvester
    with Harvester.from_file(job) as h:
        e = h.estimate()["expected"]
    assert e is not None and e["usd"] is not None and e["usd_list"] is not None
    assert e["cached_share"] > 0.5 and e["usd"] < 0.5 * e["usd_list"]
    assert f"${e['usd_list']:.4f}" in text and f"${e['usd']:.4f}" in text
