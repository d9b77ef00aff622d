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
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterable
from functools import cache
from pathlib import Path
from typing import Any

HEARTBEAT_MAX = 2.0     # seconds between heartbeats, at most
MISSED_BEATS = 3        # a worker is dead after this many missed heartbeats (plus a second of slack)
WINDOW = 1.0            # the providers' shortest window (limits per minute, enforced per second): a
                        # change of shares holds at the provider only once its last second has passed


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
