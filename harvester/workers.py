"""Many workers, one teacher: who is alive, and each one's share of the teacher's limits.

Every `harvester run` is a worker: its run row in the store is its registration, and its heartbeat
(every `heartbeat_interval` seconds, at most 2 s) keeps it live. A worker not heard from for
`dead_after` seconds is dead to the others. Each heartbeat counts the live workers N and takes a
share of 1/N of every limit (`RateLimiter.set_share`), so that N workers together stay within the
provider's limits whatever their number, re-divided within a heartbeat when one joins or leaves,
and within `dead_after` when one dies.

Joining without overshooting: a new worker sends nothing until every other live worker has
heartbeated after it registered, i.e. has counted it and cut its own share, and then one `WINDOW`
more (the provider still counts the last second they sent at their larger share). So the shares of
the workers sending at any moment add up to at most 1. Leaving: a share shrinks at once, but grows
only once the larger share has held for a `WINDOW` (the leaver's last second has passed).

A worker whose pid is gone on this very machine (same kernel boot, same pid namespace) is dead at
once: a run killed and restarted does not wait for its own ghost. Leases are a separate contract:
a dead worker's jobs return to the queue when their lease expires (`lease_seconds`), not before.

`Peers` decides from what it is given (the store's time and rows: no clock, no store of its own);
`Membership` is the asyncio side that feeds it one worker's heartbeats and applies its shares.
"""

from __future__ import annotations

import asyncio
import math
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # types only: export's worker processes import this module and need neither
    from .ratelimit import RateLimiter
    from .store import Store

HEARTBEAT_MAX = 2.0     # seconds between heartbeats, at most
MISSED_BEATS = 3        # a worker is dead after this many missed heartbeats (plus a second of slack)
WINDOW = 1.0            # the providers' shortest window (limits per minute, enforced per second): a
                        # change of shares holds at the provider only once its last second has passed



def worker_id() -> str:
    """This process's name as a lease owner: host, pid and a random tail (pids are reused)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

def heartbeat_interval(lease_seconds: float) -> float:
    """Often enough to re-divide the limits quickly, and to renew leases (every lease/3) in time."""
    return min(HEARTBEAT_MAX, max(0.1, lease_seconds / 3))


def dead_after(lease_seconds: float) -> float:
    return MISSED_BEATS * heartbeat_interval(lease_seconds) + 1.0


@cache
def origin() -> str:
    """Where this process's pid means something: this kernel boot and pid namespace (Linux), else the
    host name. Two workers of one origin can check each other's pid."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return f"host:{socket.gethostname()}"


def _pid(owner: str) -> int | None:
    """The pid in a worker id `host:pid:random` (harvester.crawler.worker_id)."""
    parts = owner.rsplit(":", 2)
    try:
        return int(parts[1]) if len(parts) == 3 else None
    except ValueError:
        return None


def process_gone(worker: dict[str, Any]) -> bool:
    """True if the worker's process is known to have exited (same origin, pid gone or a zombie)."""
    if worker.get("origin") != origin():
        return False
    pid = _pid(worker.get("owner") or "")
    return pid is not None and pid_gone(pid)


def pid_gone(pid: int) -> bool:
    """True if process `pid` of this host has exited (gone, or a zombie); never for our own."""
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:
        return False  # exists, but not ours to signal
    try:  # killed but not yet reaped by its parent
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


class Peers:
    """What one worker knows of the others, from its heartbeats (`update` after each one)."""

    def __init__(self, run_id: int) -> None:
        self.run_id = run_id
        self.registered: float | None = None      # our first heartbeat's time (the store's clock)
        self.live: list[dict[str, Any]] = []      # the other live workers, as of our last heartbeat
        self.seen_alive: set[str] = set()         # owners heard from (heartbeat advanced) while we ran
        self.share: float | None = None
        self._last: dict[int, float] = {}
        self._raise_seen: float | None = None     # when a larger share was first seen

    def update(self, now: float, workers: Iterable[dict[str, Any]]) -> float:
        """Take in a heartbeat's view of the live workers; returns this worker's share."""
        if self.registered is None:
            self.registered = now
        live = []
        for w in workers:
            if w["id"] == self.run_id or process_gone(w):
                continue
            before = self._last.get(w["id"])
            if before is not None and w["heartbeat_at"] > before:
                self.seen_alive.add(w["owner"])
            self._last[w["id"]] = w["heartbeat_at"]
            live.append(w)
        self.live = live
        target = 1.0 / (1 + len(live))
        if self.share is None or target <= self.share:
            self.share, self._raise_seen = target, None
        elif self._raise_seen is None:
            self._raise_seen = now
        elif now - self._raise_seen >= WINDOW:
            self.share, self._raise_seen = target, None
        return self.share

    def not_yet_counting_us(self) -> list[dict[str, Any]]:
        """Live workers that have not heartbeated since we registered: they may not have counted us."""
        assert self.registered is not None
        return [w for w in self.live if w["heartbeat_at"] <= self.registered]

    def may_hand_back(self, holders: Iterable[str]) -> bool:
        """Whether jobs leased by `holders` may still come back to the queue while we wait: their
        worker is alive (it will record or release them), or it died while we ran (its leases will
        expire). Leases of a run that died before we started are not waited for: a later run gets them."""
        live = {w["owner"] for w in self.live}
        return any(h in live or h in self.seen_alive for h in holders)


class Membership:
    """One worker's membership of the store's workers: `join` registers it and waits until the others
    count it, `heartbeat` then keeps it live, renews its leases every lease/3 and keeps the limiter's
    share at 1/N. `figures` gives the counts noted on the run (sent, answered, rate_limited);
    `on_ended` is called when another worker took this one for dead and ended its run."""

    def __init__(self, store: Store, *, run_id: int, owner: str, plan_key: str, lease_seconds: float,
                 limiter: RateLimiter, figures: Callable[[], dict[str, int]],
                 on_ended: Callable[[], None]) -> None:
        self.store = store
        self.run_id = run_id
        self.owner = owner
        self.plan_key = plan_key
        self.lease_seconds = lease_seconds
        self.limiter = limiter
        self.figures = figures
        self.on_ended = on_ended
        self.peers = Peers(run_id)
        self.every = heartbeat_interval(lease_seconds)
        self.dead_after = dead_after(lease_seconds)
        self._beats = 0
        self._answered_at: deque[tuple[float, int]] = deque()

    async def join(self, *, stopping: Callable[[], bool], pause: Callable[[float], Awaitable[None]]) -> None:
        """Register and take a share of the limits; return only once every other live worker has
        counted us (or died, or `dead_after` passed), so that no limit is overshot. `pause` sleeps but
        returns early once `stopping()`."""
        await self.beat()
        deadline = time.monotonic() + self.dead_after
        while self.peers.not_yet_counting_us() and not stopping() and time.monotonic() < deadline:
            await pause(min(0.25, self.every))
            await self.beat()
        if self.peers.live:  # their last second at a larger share still counts at the provider
            await pause(WINDOW)

    async def heartbeat(self) -> None:
        """Beat every `every` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.every)
            try:
                await self.beat()
            except Exception:  # noqa: BLE001 - the store is unreachable: keep our share, try again
                pass

    async def beat(self) -> None:
        """Note we are alive (and our figures) on our run; renew our leases every lease/3; re-divide."""
        renew_every = max(1, math.floor(self.lease_seconds / 3 / self.every))
        renew = (self.owner, self.lease_seconds, self.plan_key) if self._beats % renew_every == 0 else None
        self._beats += 1
        figures = self.figures()
        now, workers = await asyncio.to_thread(
            self.store.heartbeat, self.run_id, dead_after=self.dead_after, renew=renew, **figures,
            limiter=self.limiter.snapshot(), share=self.limiter.share,
            throughput=self._throughput(figures["answered"]))
        self.limiter.set_share(self.peers.update(now, workers))
        if not any(w["id"] == self.run_id for w in workers):
            # Another worker took us for dead (no heartbeat for dead_after s: this process was stopped,
            # or cut off from the store), ended our run and took back our jobs.
            self.on_ended()

    def _throughput(self, answered: int) -> float:
        """Answers per minute over the last ~30 s."""
        t = time.monotonic()
        samples = self._answered_at
        samples.append((t, answered))
        while len(samples) > 2 and samples[1][0] <= t - 30.0:
            samples.popleft()
        t0, n0 = samples[0]
        return (answered - n0) / (t - t0) * 60.0 if t > t0 else 0.0
