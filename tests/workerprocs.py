"""Start several `harvester run` workers at one moment, as if each were on a host of its own.

A worker spends its first second importing (~1 s of CPU). On separate hosts that costs the others
nothing; on a CI machine with two CPUs, three workers importing at once starve the one already
sending, and its requests reach the simulator in clumps. So each worker here imports first, then
waits for a common start signal, then runs the real CLI (`harvester.cli.main`).
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

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
