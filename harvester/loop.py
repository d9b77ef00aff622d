"""The event loop a command runs on: uvloop when installed (`pip install 'harvester[fast]'`), else asyncio's.

uvloop's loop and transports are in C: the same harvest costs less CPU per request in the loop's own
bookkeeping (timers, callbacks, socket reads), which is what bounds one process at hundreds of requests
per second (bench/bench_throughput.py). Nothing else changes: the code is plain asyncio either way.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop if installed and not turned off (HARVESTER_UVLOOP=0), else None (asyncio's)."""
    if os.environ.get("HARVESTER_UVLOOP", "1") == "0":
        return None
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop   # typed: uvloop may be absent
    return factory


def run(main: Coroutine[Any, Any, T]) -> T:
    """asyncio.run(main), on the loop of `loop_factory`."""
    with asyncio.Runner(loop_factory=loop_factory()) as runner:
        return runner.run(main)
