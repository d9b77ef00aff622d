"""A pause that a stopping run cuts short."""

from __future__ import annotations

import asyncio


async def sleep_unless_woken(wake: asyncio.Event, seconds: float) -> None:
    """Sleep `seconds`, or until `wake` is set (a run asked to stop, a slot came free)."""
    wake.clear()
    try:
        await asyncio.wait_for(wake.wait(), timeout=seconds)
    except TimeoutError:
        pass
