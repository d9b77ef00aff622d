"""Short garbage-collector pauses while requests are paced.

A full collection walks every object the collector tracks. After openai, httpx, pydantic and
sqlalchemy are imported that is ~150k objects and 70-150 ms, during which the event loop sends
nothing: a request admitted just before the pause reaches the provider late, bunched with the ones
after it. One process alone rarely notices; workers sharing a limit (each with little headroom)
turn that bunching into 429s. So while a crawl runs, the objects alive when it started (imports,
the caller's data) are set aside from collection (`gc.freeze`), and handed back when it ends, so a
caller's cyclic garbage is still collected later.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

_lock = threading.Lock()
_depth = 0  # crawls running in this process (the API allows several, e.g. one per thread)


@contextmanager
def frozen_heap() -> Iterator[None]:
    """Exclude the objects alive now from garbage collection until the block ends."""
    global _depth
    with _lock:
        if _depth == 0:
            gc.collect()  # what is already garbage goes now, not at the end of the crawl
            gc.freeze()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                gc.unfreeze()
