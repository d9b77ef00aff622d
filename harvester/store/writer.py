"""One writer thread feeds the store from a queue, so the event loop never waits on the database.

Rows are committed in batches: whatever arrived while the previous commit ran, at most `max_delay`
seconds after it arrived. An answer is in memory only for that moment.
"""

from __future__ import annotations

import queue
import threading
from typing import Any

from ..errors import StoreError
from . import AnswerRow, AttemptRow, FailureRow, Store
from .ledger import Settlement

_STOP = object()


class StoreWriter:
    def __init__(self, store: Store, max_delay: float = 0.05, max_batch: int = 500) -> None:
        self.store = store
        self.max_delay = max_delay
        self.max_batch = max_batch
        self.error: BaseException | None = None
        self._queue: queue.Queue[Any] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="harvester-writer", daemon=True)
        self._thread.start()

    def put(self, row: AttemptRow | AnswerRow | FailureRow | Settlement) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put(row)

    def close(self, timeout: float = 60.0) -> None:
        """Commit everything queued, then stop the thread. Raises StoreError if that takes longer
        than `timeout` (the database stays locked): the answers still queued are not in the store
        yet, and the process must not pretend otherwise."""
        self._queue.put(_STOP)
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error
        if self._thread.is_alive():
            raise StoreError(f"store {self.store.describe()}: answers were still waiting to be written after "
                             f"{timeout:.0f} s (is the database locked by another program?); those not written "
                             "will be asked again on the next run")

    def _loop(self) -> None:
        stopping = False
        while not stopping:
            batch = [self._queue.get()]
            try:
                while len(batch) < self.max_batch:
                    batch.append(self._queue.get(timeout=self.max_delay if len(batch) == 1 else 0.0))
            except queue.Empty:
                pass
            if any(row is _STOP for row in batch):
                stopping = True
                batch = [r for r in batch if r is not _STOP]
                while not self._queue.empty():  # anything put before close()
                    row = self._queue.get_nowait()
                    if row is not _STOP:
                        batch.append(row)
            if not batch:
                continue
            try:
                self.store.record([r for r in batch if isinstance(r, AttemptRow)],
                                  [r for r in batch if isinstance(r, AnswerRow)],
                                  [r for r in batch if isinstance(r, FailureRow)],
                                  [r for r in batch if isinstance(r, Settlement)])
            except BaseException as e:  # surfaced to the crawler on its next put() or close()
                self.error = e
                return
