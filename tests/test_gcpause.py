"""harvester.gcpause: the heap alive when a crawl starts is kept out of collections, then handed back."""

from __future__ import annotations

import gc
import threading

from harvester.gcpause import frozen_heap


class Node:
    def __init__(self) -> None:
        self.me = self  # a cycle: only the collector frees it


def test_objects_alive_at_the_start_are_frozen_until_the_last_block_ends() -> None:
    assert gc.get_freeze_count() == 0
    before = Node()
    with frozen_heap():
        frozen = gc.get_freeze_count()
        assert frozen > 1000 and gc.is_tracked(before)
        with frozen_heap():                                    # nested (two crawls in one process)
            assert gc.get_freeze_count() == frozen             # not frozen twice
        assert gc.get_freeze_count() == frozen                 # the outer block still holds it
    assert gc.get_freeze_count() == 0


def test_garbage_made_before_the_block_is_collected_first_and_frozen_objects_come_back() -> None:
    import weakref

    doomed = Node()
    gone = weakref.ref(doomed)
    del doomed
    kept = Node()
    kept_ref = weakref.ref(kept)
    with frozen_heap():
        assert gone() is None                                  # collected before freezing, not kept for the crawl
        del kept                                               # unreachable while frozen: not collected yet
        gc.collect()
        assert kept_ref() is not None
    gc.collect()                                               # handed back: collected as usual
    assert kept_ref() is None


def test_blocks_in_two_threads_share_one_freeze() -> None:
    inside, release = threading.Barrier(2), threading.Event()

    def crawl() -> None:
        with frozen_heap():
            inside.wait(5)
            release.wait(5)

    t = threading.Thread(target=crawl)
    t.start()
    with frozen_heap():
        inside.wait(5)
        assert gc.get_freeze_count() > 0
    assert gc.get_freeze_count() > 0                           # the other crawl still runs
    release.set()
    t.join(5)
    assert gc.get_freeze_count() == 0
