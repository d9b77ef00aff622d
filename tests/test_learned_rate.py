"""A rate learned without headers (AIMD) is kept for the next run against the same teacher, which
starts from it instead of from the slow start: the real CLI, twice, against a simulator that enforces
a limit it does not announce."""

from __future__ import annotations

import json
import sqlite3

import pytest
from conftest import cli

from harvester.ratelimit import LEARN_START_RPS, RateLimiter


def _runs(job) -> list[dict]:
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        return [{"rate_limited": n, "limiter": json.loads(lim)}
                for n, lim in c.execute("SELECT rate_limited, limiter FROM run ORDER BY id")]


def test_the_next_run_starts_at_the_learned_rate(sim_factory, make_job) -> None:
    sim = sim_factory(rpm=1800, headers=False)            # 30 requests/s, unannounced
    limits = {"max_concurrency": 16}
    job = make_job(sim, n=150, teacher={"limits": limits, "params": {"max_tokens": 20}})
    assert cli("run", str(job), "--quiet").returncode == 0
    first = _runs(job)[-1]
    learned = first["limiter"]["learned"]
    assert first["limiter"]["started_from"] is None and first["rate_limited"] > 0   # found the limit the hard way
    assert learned["loss_rpm"] and learned["rpm"] != 60 * LEARN_START_RPS

    job = make_job(sim, n=300, teacher={"limits": limits, "params": {"max_tokens": 20}})   # 150 more prompts
    assert cli("run", str(job), "--quiet").returncode == 0
    second = _runs(job)[-1]
    assert second["limiter"]["started_from"] == {"rpm": pytest.approx(learned["rpm"]), "source": "last run"}
    # (it then meets fewer 429s than the first run's slow start did, on an idle machine: 6 against 1 at
    # 15 requests/s; not asserted, as a loaded machine's latency moves the learned rate around)

    # another teacher (another model at the same URL) starts from the slow start
    job = make_job(sim, n=5, teacher={"model": "another-model", "limits": limits, "params": {"max_tokens": 20}})
    assert cli("run", str(job), "--quiet").returncode == 0
    assert _runs(job)[-1]["limiter"]["started_from"] is None


def test_start_from_applies_only_where_the_rate_is_learned() -> None:
    now = [0.0]
    learned = RateLimiter(clock=lambda: now[0])
    assert learned.start_from(600.0, loss_rpm=700.0)
    snap = learned.snapshot()
    assert snap["limits"]["rpm"] == {"value": 600.0, "source": "learned", "effective": pytest.approx(600.0 * 0.995)}
    assert snap["started_from"] == {"rpm": 600.0, "source": "last run"} and not snap["slow_start"]
    configured = RateLimiter(rpm=100.0, clock=lambda: now[0])
    assert not configured.start_from(600.0) and configured.snapshot()["limits"]["rpm"]["value"] == 100.0
    assert configured.snapshot()["learned"] is None
