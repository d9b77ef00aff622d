"""The store as an export's `RecordSource`: a URL, not a connection, so worker processes open it
themselves. A database connection must never cross a fork: a child that used its parent's would
talk over the same socket (PostgreSQL) or file locks (SQLite) as its parent and siblings."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from ..store import Store
from ..store.rows import Record


@dataclass
class StoreSource:
    url: str
    plan_key: str
    samples: str = "all"                                  # "all" or "first" (one sample per prompt)
    store: Store | None = field(default=None, repr=False)  # opened on first use in each process
    owner: int = field(default_factory=os.getpid, repr=False)  # the process `store` belongs to

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "store": None}

    def _open(self) -> Store:
        if self.store is not None and self.owner != os.getpid():    # inherited through a fork
            self.store.engine.dispose(close=False)                  # forget the parent's connections
            self.store = None
        if self.store is None:
            self.store, self.owner = Store(self.url), os.getpid()
        return self.store

    def bounds(self) -> tuple[int, int, int]:
        return self._open().answered_seqs(self.plan_key)

    def records(self, seqs: tuple[int, int] | None = None) -> Iterator[Record]:
        return self._open().iter_records(self.plan_key, samples=self.samples, seqs=seqs)
