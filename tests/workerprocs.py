"""Several `harvester run` workers started at one moment, as if each were on a host of its own, and a
simulator in a process of its own, as a remote provider would be.

A worker spends its first second importing (~1 s of CPU). On separate hosts that costs the others
nothing; on a CI machine with two CPUs, three workers importing at once starve the one already
sending, and its requests reach the simulator in clumps. So each worker here imports first, then
waits for a common start signal, then runs the real CLI (`harvester.cli.main`).

The simulator's verdict on a limit is only as good as its clock: in a thread of the test process it
shares that process's (large) heap and pauses, and would count requests late. Tests that count 429s
at the true limit run it in a process of its own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent

LAUNCHER = """
import os, sys, time
import harvester.api, harvester.cli  # what a worker imports anyway, done before the start signal
ready, go = sys.argv[1], sys.argv[2]
open(ready, "w").close()
while not os.path.exists(go):
    time.sleep(0.005)
sys.argv = ["harvester", *sys.argv[3:]]
harvester.cli.main()
"""


def start_workers(folder: Path, k: int, *args: str, timeout: float = 60.0) -> list[subprocess.Popen[str]]:
    """k processes running `harvester *args`, released together once all have imported."""
    tag = uuid.uuid4().hex[:8]
    go = folder / f"go-{tag}"
    ready = [folder / f"ready-{tag}-{i}" for i in range(k)]
    procs = [subprocess.Popen([sys.executable, "-c", LAUNCHER, str(r), str(go), *args], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=REPO) for r in ready]
    deadline = time.monotonic() + timeout
    while not all(r.exists() for r in ready):
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            for p in procs:
                p.kill()
            raise RuntimeError("a worker did not start: " + " | ".join(p.communicate()[1] for p in procs))
        time.sleep(0.01)
    go.touch()
    return procs


class SimProcess:
    """`harvester sim` in a process of its own; `url` and `stats()` as harvester.sim.Simulator's."""

    def __init__(self, folder: Path, **options: Any) -> None:
        ready = folder / f"sim-{uuid.uuid4().hex[:8]}.url"
        flags = [x for k, v in options.items() for x in (f"--{k.replace('_', '-')}", str(v))]
        self.proc = subprocess.Popen([sys.executable, "-m", "harvester.cli", "sim", "--port", "0",
                                      "--ready-file", str(ready), *flags],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=REPO)
        deadline = time.monotonic() + 60
        while not ready.exists() or not ready.read_text():
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.close()
                raise RuntimeError(f"the simulator did not start: {self.proc.communicate()[1]}")
            time.sleep(0.02)
        self.url = ready.read_text()

    def stats(self) -> dict[str, Any]:
        with urllib.request.urlopen(self.url.removesuffix("/v1") + "/sim/stats", timeout=10) as r:
            return json.load(r)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def sim_process(tmp_path: Path) -> Iterator[Callable[..., SimProcess]]:
    """Start simulators in processes of their own: `sim_process(rpm=2400, latency=0.05)`."""
    started: list[SimProcess] = []

    def start(**options: Any) -> SimProcess:
        started.append(SimProcess(tmp_path, **options))
        return started[-1]

    yield start
    for sim in started:
        sim.close()
