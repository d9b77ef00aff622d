import time
from pathlib import Path

import pytest

from harvester.config import job_from_dict
from harvester.errors import StoreError
from harvester.prompts import plan
from harvester.store import AnswerRow, FailureRow, Store
from harvester.store.tables import SCHEMA_VERSION


def make_store(tmp_path: Path, n: int = 10) -> tuple[Store, str]:
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(n)))
    job = job_from_dict({"name": "s", "teacher": {"model": "m"}, "prompts": [{"path": "p.jsonl"}]}, base=tmp_path)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    store.bind_job("s")
    assert store.plan(plan(job), "plan1") == n
    return store, "plan1"


def test_plan_is_idempotent(tmp_path: Path) -> None:
    store, key = make_store(tmp_path)
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "q{i}"}}\n' for i in range(10)))
    job = job_from_dict({"name": "s", "teacher": {"model": "m"}, "prompts": [{"path": "p.jsonl"}]}, base=tmp_path)
    assert store.plan(plan(job), key) == 0
    assert store.status(key)["jobs"] == 10


def test_claims_do_not_overlap_and_leases_expire(tmp_path: Path) -> None:
    store, key = make_store(tmp_path)
    other = Store(store.url)  # a second process would open its own engine
    a = store.claim(key, "a", 6, lease_seconds=0.3)
    b = other.claim(key, "b", 6, lease_seconds=60)
    assert len(a) == 6 and len(b) == 4
    assert not {j.id for j in a} & {j.id for j in b}
    assert other.claim(key, "b", 6, lease_seconds=60) == []
    time.sleep(0.35)
    again = other.claim(key, "b", 10, lease_seconds=60)
    assert {j.id for j in again} == {j.id for j in a}  # a's expired leases came back


def test_record_and_release(tmp_path: Path) -> None:
    store, key = make_store(tmp_path)
    jobs = store.claim(key, "w", 10, 60)
    store.record([], [AnswerRow(jobs[0].id, 1, "m", "answer", "stop", 3, 4, 0.1, {"id": "x"})],
                 [FailureRow(jobs[1].id, "http_400", "bad", True)])
    store.release_owner("w")
    s = store.status(key)
    assert (s["done"], s["failed"], s["pending"], s["leased"]) == (1, 1, 8, 0)
    assert s["prompt_tokens"] == 3 and s["completion_tokens"] == 4
    records = list(store.iter_records(key))
    assert [r.answer for r in records] == ["answer"]
    assert store.reset_retryable_failures(key) == 0  # permanent failures stay failed


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    store.set_meta("schema_version", str(SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(StoreError, match="newer than this harvester understands"):
        Store(store.url)


def test_store_belongs_to_one_job(tmp_path: Path) -> None:
    store, _ = make_store(tmp_path)
    with pytest.raises(StoreError, match="belongs to job 's'"):
        store.bind_job("other")


def test_a_writer_that_cannot_finish_says_so_and_commits_once_the_lock_goes(tmp_path: Path) -> None:
    import sqlite3

    from harvester.store.writer import StoreWriter

    store, key = make_store(tmp_path)
    jobs = store.claim(key, "w", 1, 60)
    locker = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")                     # another program holds the database
    writer = StoreWriter(store)
    writer.put(AnswerRow(jobs[0].id, 1, "m", "answer", "stop", 3, 4, 0.1, None))
    with pytest.raises(StoreError, match="still waiting to be written"):
        writer.close(timeout=0.5)
    locker.execute("ROLLBACK")
    deadline = time.monotonic() + 30
    while store.status(key)["done"] != 1:                 # the thread goes on and commits
        assert time.monotonic() < deadline
        time.sleep(0.05)
