"""Many workers, one teacher: limiter shares, the worker registry, and several processes on one store.

The PostgreSQL side (many hosts) is in test_postgres.py; everything here runs on SQLite too."""

from __future__ import annotations

import heapq
import random
import subprocess
import sys
import time

import pytest
from conftest import cli
from workerprocs import sim_process, start_workers  # noqa: F401 (a fixture)

from harvester.providers import Feedback, LimitHint
from harvester.ratelimit import SHARED_JITTER, Permit, RateLimiter
from harvester.workers import Peers, dead_after, heartbeat_interval, origin, process_gone


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def limiter(clock: FakeClock, **kw) -> RateLimiter:
    kw.setdefault("probe", 0)
    return RateLimiter(clock=clock, **kw)


def max_per_second(times: list[float], width: float = 1.0) -> int:
    times = sorted(times)
    best = lo = 0
    for hi, t in enumerate(times):
        while times[lo] <= t - width:
            lo += 1
        best = max(best, hi - lo + 1)
    return best


def run_together(limiters: list[RateLimiter], clock: FakeClock, seconds: float, seed: int = 0) -> list[float]:
    """Every limiter admits as fast as it may (waking up to 5 ms late); the admission times of all."""
    rnd = random.Random(seed)
    end = clock.now + seconds
    wake = [(clock.now, i) for i in range(len(limiters))]
    times: list[float] = []
    while wake:
        t, i = heapq.heappop(wake)
        clock.now = max(clock.now, t)
        if clock.now >= end:
            continue
        r = limiters[i].try_acquire(10, 10)
        if isinstance(r, Permit):
            times.append(clock.now)
            limiters[i].complete(r, Feedback("ok", status=200, prompt_tokens=10, completion_tokens=10, latency=0.05))
            heapq.heappush(wake, (clock.now, i))
        else:
            heapq.heappush(wake, (clock.now + r + rnd.uniform(0, 0.005), i))
    return times


# --------------------------------------------------------------------------- limiter shares
def test_a_share_scales_configured_limits_and_the_concurrency_cap() -> None:
    clock = FakeClock()
    rl = limiter(clock, rpm=600, tpm=60_000, max_concurrency=64)
    rl.set_share(0.25)
    snap = rl.snapshot()
    assert snap["share"] == 0.25 and snap["concurrency_cap"] == 16
    assert snap["limits"]["rpm"]["value"] == 600                       # the provider's figure, unchanged
    assert snap["limits"]["rpm"]["effective"] == pytest.approx(150 * 0.995)
    assert snap["limits"]["tpm"]["effective"] == pytest.approx(15_000 * 0.995)
    rl.set_share(1 / 3)
    assert rl.snapshot()["concurrency_cap"] == 21                      # floored: together at most 63
    rl.set_share(1.0)
    assert rl.snapshot()["limits"]["rpm"]["effective"] == pytest.approx(600 * 0.995)
    for bad in (0.0, -0.5, 1.5):
        with pytest.raises(ValueError):
            rl.set_share(bad)


def test_tiny_shares_keep_one_request_in_flight() -> None:
    rl = limiter(FakeClock(), max_concurrency=4)
    rl.set_share(0.1)
    assert rl.snapshot()["concurrency_cap"] == 1


@pytest.mark.parametrize("n", [2, 3, 4, 7])
def test_n_workers_with_a_share_each_stay_within_the_limit_together(n: int) -> None:
    clock = FakeClock()
    limiters = [limiter(clock, rpm=2400) for _ in range(n)]           # 40 requests/s, for the whole key
    for rl in limiters:
        rl.set_share(1 / n)
    times = run_together(limiters, clock, 30.0)
    # Within the limit, with headroom for their requests' independent delays on the way there.
    assert max_per_second(times, width=1.0 + SHARED_JITTER) <= 40
    assert len(times) >= 0.95 * 30 * n * (40 // n) / (1.0 + SHARED_JITTER)   # and they use it


def test_header_limits_are_scaled_but_remaining_is_not_scaled_again() -> None:
    clock = FakeClock()
    rl = limiter(clock)                                                # limits come from headers
    rl.set_share(0.5)
    p = rl.try_acquire(1, 1)
    clock.now += 0.01
    rl.complete(p, Feedback("ok", 200, limits=(LimitHint("requests", 6000, 5000, 1.0),), latency=0.01))
    lim = rl.snapshot()["limits"]["rpm"]
    assert (lim["value"], lim["source"]) == (6000, "headers")
    assert lim["effective"] == pytest.approx(3000 * 0.995)            # half of the key's limit
    # `remaining` counts every worker's requests already: 2 left means 2, not 1 (nor 4).
    clock.now += 0.5                                                   # the bucket refills (~5 held)
    q = rl.try_acquire(1, 1)
    assert isinstance(q, Permit)
    rl.complete(q, Feedback("ok", 200, limits=(LimitHint("requests", 6000, 2, 1.0),), latency=0.01))
    got = 0
    while isinstance(r := rl.try_acquire(1, 1), Permit):
        got += 1
        rl.complete(r, Feedback("ok", status=200, latency=0.01))
    assert got == 2


def test_workers_learning_an_unknown_limit_together_converge_to_it() -> None:
    """No limits known: each worker's AIMD learns the pool's rate and sends its share of it."""
    rnd = random.Random(3)
    clock = FakeClock(0.0)
    n, per_second = 4, 60
    limiters = [RateLimiter(clock=clock) for _ in range(n)]
    for rl in limiters:
        rl.set_share(1 / n)
    used: dict[int, int] = {}
    pending: list[tuple[float, int, int, Permit, bool]] = []
    wake = [(0.0, i) for i in range(n)]
    ok_times: list[float] = []
    n429 = k = 0
    while clock.now < 60.0:
        t_wake = wake[0][0] if wake else float("inf")
        t_done = pending[0][0] if pending else float("inf")
        if t_done <= t_wake:
            clock.now, _, i, p, ok = heapq.heappop(pending)
            if ok:
                limiters[i].complete(p, Feedback("ok", status=200, prompt_tokens=50, completion_tokens=200,
                                                 latency=0.3))
            else:
                limiters[i].complete(p, Feedback("rate_limited", status=429))
            heapq.heappush(wake, (clock.now, i))
            continue
        clock.now, i = heapq.heappop(wake)
        r = limiters[i].try_acquire(50, 256)
        if isinstance(r, Permit):
            sec = int(clock.now)
            ok = used.get(sec, 0) < per_second
            used[sec] = used.get(sec, 0) + ok
            n429 += not ok
            if ok:
                ok_times.append(clock.now)
            k += 1
            heapq.heappush(pending, (clock.now + (rnd.uniform(0.1, 0.5) if ok else 0.02), k, i, r, ok))
            heapq.heappush(wake, (clock.now, i))
        else:
            heapq.heappush(wake, (clock.now + r, i))
    steady = len([t for t in ok_times if t >= 25.0]) / 35.0
    assert 0.75 * per_second <= steady <= per_second
    assert n429 <= 0.06 * (len(ok_times) + n429)


# --------------------------------------------------------------------------- the registry
def worker(i: int, hb: float, owner: str | None = None, **kw) -> dict:
    return {"id": i, "owner": owner or f"elsewhere:{1000 + i}:abc", "origin": "another-machine",
            "heartbeat_at": hb, **kw}


def test_heartbeat_timing() -> None:
    assert heartbeat_interval(600) == 2.0 and dead_after(600) == 7.0
    assert heartbeat_interval(1.5) == 0.5 and dead_after(1.5) == 2.5


def test_peers_share_join_barrier_and_who_may_hand_jobs_back() -> None:
    peers = Peers(run_id=5)
    share = peers.update(100.0, [worker(3, 99.0), worker(4, 99.5), worker(5, 100.0)])
    assert share == pytest.approx(1 / 3) and peers.registered == 100.0
    assert [w["id"] for w in peers.not_yet_counting_us()] == [3, 4]   # they have not counted us yet
    peers.update(101.0, [worker(3, 100.5), worker(4, 99.5), worker(5, 101.0)])
    assert [w["id"] for w in peers.not_yet_counting_us()] == [4]
    assert peers.seen_alive == {"elsewhere:1003:abc"}
    # worker 3 dies: still live for `dead_after`; then gone, but it died while we ran: wait for its leases
    assert peers.update(110.0, [worker(5, 110.0)]) == pytest.approx(1 / 3)   # a larger share waits a second
    assert peers.update(110.5, [worker(5, 110.5)]) == pytest.approx(1 / 3)
    assert peers.update(111.0, [worker(5, 111.0)]) == 1.0
    assert peers.update(112.0, [worker(5, 112.0), worker(6, 111.9)]) == 0.5   # a smaller one at once
    assert peers.may_hand_back(["elsewhere:1003:abc"])
    assert not peers.may_hand_back(["elsewhere:1004:abc"])   # never heard from since we started
    assert not peers.may_hand_back([])


def test_a_process_gone_on_this_machine_is_dead_at_once() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    me = origin()
    assert process_gone({"owner": f"h:{child.pid}:x", "origin": me})
    assert not process_gone({"owner": f"h:{child.pid}:x", "origin": "another-machine"})
    alive = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert not process_gone({"owner": f"h:{alive.pid}:x", "origin": me})
        alive.kill()
        time.sleep(0.2)
        assert process_gone({"owner": f"h:{alive.pid}:x", "origin": me})   # a zombie: killed, not reaped
    finally:
        alive.wait()
    peers = Peers(run_id=1)
    assert peers.update(10.0, [worker(1, 10.0), {**worker(2, 9.9, owner=f"h:{child.pid}:x"), "origin": me}]) == 1.0


# --------------------------------------------------------------------------- processes on SQLite
def test_three_processes_on_one_sqlite_store_share_the_rate_limit(sim_process, make_job) -> None:
    n, rpm = 200, 2400
    sim = sim_process(rpm=rpm)
    job = make_job(sim, n=n, teacher={"limits": {"rpm": rpm, "max_concurrency": 8}})
    assert cli("run", str(job), "--dry-run").returncode == 0
    procs = start_workers(job.parent, 3, "run", str(job), "--quiet")
    codes = [p.wait(timeout=120) for p in procs]
    for p in procs:
        p.communicate()
    assert codes == [0, 0, 0]
    stats = sim.stats()
    assert stats["distinct_prompts_answered"] == n and stats["prompts_answered_more_than_once"] == 0
    assert stats["rate_limited"] == 0
