"""A teacher that never answered once: reported within seconds (not after retry.outage_after), naming
the base_url and the cause, with exit 4 and every job still pending. And the progress line counts
answers, not attempts, as throughput.

The pure watch (harvester.outage) with made-up times; then the real CLI against a closed port, a host
name that cannot resolve (.invalid never does: no network needed) and TLS spoken to a plain-HTTP server.
"""

from __future__ import annotations

import json
import re
import socket
import time
from pathlib import Path

import pytest
from conftest import cli

from harvester.outage import OutageWatch

# Realistic retry settings (the defaults), so that the run would take minutes without the watch.
RETRY = {"max_attempts": 6, "initial_wait": 0.5, "max_wait": 60, "outage_after": 300}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the watch --------------------------------------------------------------------------------
def test_never_reached_is_unreachable_after_a_few_attempts_over_a_short_span() -> None:
    w = OutageWatch(300.0)
    w.failed(0.0, "a", "connection_refused", message="connection to http://h/v1 failed: connection refused")
    assert w.suspect() and not w.down(0.0)               # jobs keep backing off instead of failing
    w.failed(0.5, "a", "connection_refused")
    w.failed(1.0, "b", "connection_refused")
    assert not w.down(1.9)                               # 3 attempts, but not yet over 2 s
    assert w.down(2.0)
    text = w.describe(2.0)
    assert "never answered" in text and "connection refused" in text and "3 attempts in 2.0 s" in text


def test_a_teacher_heard_from_once_is_not_unreachable() -> None:
    w = OutageWatch(300.0)
    w.failed(0.0, "a", "http_503", status=503)           # it answered, with an error: reachable
    for t in range(10):
        w.failed(float(t), "b", "connection_refused")
    assert not w.down(20.0)
    w2 = OutageWatch(300.0)
    w2.heard_from()                                      # a 429
    w2.failed(0.0, "a", "dns")
    w2.failed(5.0, "a", "dns")
    w2.failed(9.0, "a", "dns")
    assert not w2.down(10.0) and not w2.suspect()
    assert not OutageWatch(None).suspect()


def test_dropped_connections_need_several_different_jobs() -> None:
    w = OutageWatch(300.0)
    for t, job in enumerate("abcabcabc"):                # a prompt may crash a server: 3 jobs are not enough
        w.failed(float(t), job, "connection")
    assert not w.down(10.0) and not w.suspect()
    w.failed(10.0, "d", "connection")
    assert w.down(10.0)


# --- end to end -------------------------------------------------------------------------------
def _run(job: Path) -> tuple[int, str, float]:
    t0 = time.monotonic()
    r = cli("run", str(job), timeout=60)                 # not --quiet: the progress lines go to stderr
    return r.returncode, r.stdout + r.stderr, time.monotonic() - t0


def _states(job: Path) -> dict:
    r = cli("status", str(job), "--json")
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


@pytest.mark.parametrize("where,cause", [
    ("http://127.0.0.1:{port}/v1", "connection refused"),
    ("http://nonexistent.invalid/v1", "does not resolve"),
    ("https://127.0.0.1:{sim_port}/v1", "TLS handshake failed"),
], ids=["refused", "dns", "tls"])
def test_a_teacher_never_reached_stops_the_run_within_seconds(where, cause, sim, make_job) -> None:
    url = where.format(port=free_port(), sim_port=sim.url.rsplit(":", 1)[1].split("/")[0])
    job = make_job(sim, n=12, teacher={"base_url": url, "provider": "simulator", "limits": {"max_concurrency": 4}},
                   retry=RETRY)
    code, out, took = _run(job)
    assert code == 4, out
    # Seconds, not retry.outage_after's 5 minutes: the verdict after ~2 s of attempts (the process's own
    # start-up and exit are slow on a loaded CI machine: bounded loosely).
    span = re.search(r"\((\d+) attempts in ([\d.]+) s\)", out)
    assert span and int(span[1]) >= 3 and 2.0 <= float(span[2]) < 5.0, out
    assert took < 30, out
    assert url in out and cause in out and "never answered" in out and "rerun" in out
    assert "Traceback" not in out
    # attempts are not throughput: nothing was answered, and the progress line says so
    assert re.search(r"\b0 answers/min", out) and "req/min" not in out, out
    s = _states(job)
    assert (s["pending"], s["failed"], s["done"], s["leased"]) == (12, 0, 0, 0), s
    assert sim.stats()["requests"] == 0 or cause == "TLS handshake failed"
