"""Crash safety: SIGKILL the real `harvester run` at random moments, rerun it each time, and check the
result against the simulator's own log. The harness is bench/soak_crash.py (the long soak runs it
with more prompts and trials); here it runs CI-sized: 20 kills over 1,500 prompts, about a minute.

What "agrees" means for the quota ledger: the ledger counts every attempt, reserved before it is
sent; a reservation a kill left open is counted at its worst case once its run is stale, sent or not
(harvester cannot know whether the request left). So, once no reservation is open,
    ledger requests = simulator requests + reservations open at a kill whose request never arrived,
and those never-sent ones are at most max_concurrency per kill (a request is reserved only once the
limiter admitted it). Hence simulator requests <= ledger requests <= that + kills x max_concurrency.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from soak_crash import run_soak  # noqa: E402

CONCURRENCY = 8


def test_sigkill_at_random_moments_loses_nothing_and_pays_nothing_twice(tmp_path: Path) -> None:
    r = run_soak(tmp_path, prompts=1500, trials=20, concurrency=CONCURRENCY, latency=0.02, jitter=0.02,
                 lease_seconds=2.0, seed=6)
    report = "\n".join([str(r.summary()), *(str(t) for t in r.per_trial)])
    assert r.problems == [], report
    assert r.kills >= 20, report
    # every prompt answered exactly once in the export
    assert r.export_rows == 1500 and r.sim["distinct_prompts_answered"] == 1500, report
    # answers the simulator sent but the store lost: each one held by the killed run at its kill
    assert r.unexplained_losses == 0, report
    assert r.answers_lost == r.answers_paid_twice, report
    assert r.answers_lost <= sum(t.leased_at_kill for t in r.per_trial if t.killed), report
    assert all(t.lost <= t.leased_at_kill for t in r.per_trial if t.killed), report
    assert r.integrity_ok, report
    # the ledger against the simulator's count (see the module docstring)
    led = r.ledger
    assert led["requests_reserved"] == 0, report
    assert led["requests"] == led["simulator_requests"] + led["unsent_at_kills"], report
    assert led["max_unsent_at_a_kill"] <= CONCURRENCY, report
    assert led["simulator_requests"] <= led["requests"] <= led["simulator_requests"] + r.kills * CONCURRENCY, report
