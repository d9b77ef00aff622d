"""Schema versions: the store records its version; an older store is migrated (once, in one
transaction: a failed migration changes nothing); a newer store is refused by every command with a
clear message, and left as it was.

Version 2 added `response.reasoning` (the teacher's reasoning trace). The migration tests take a
store written by this harvester with data in it, turned back into a version-1 store (the column
dropped, the version set to 1), and open it with the current code. A failed migration is simulated
with a monkeypatched MIGRATIONS. `test_a_version_1_store_opens_with_this_code` guards the other way
round: a store laid out as version 1 (frozen below) must work with the current code, so a column
added to the tables without a migration and a version bump fails here rather than in a user's store.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import cli

import harvester.store as store_mod
from harvester.config import job_from_dict
from harvester.prompts import plan
from harvester.store import MIGRATIONS, SCHEMA_VERSION, AnswerRow, Store


def dump(db: Path) -> list[str]:
    """Every table's schema and rows: equal dumps, equal stores."""
    with sqlite3.connect(db) as c:
        return list(c.iterdump())


def version_of(db: Path) -> str:
    with sqlite3.connect(db) as c:
        return c.execute("select value from meta where key = 'schema_version'").fetchone()[0]


def make_v1_store(tmp_path: Path, n: int = 6) -> Path:
    """A store written by this harvester, then laid out as version 1: planned jobs, two answers, the job's name."""
    (tmp_path / "p.jsonl").write_text("".join(f'{{"prompt": "question {i}"}}\n' for i in range(n)))
    job = job_from_dict({"name": "s", "teacher": {"model": "m"}, "prompts": [{"path": "p.jsonl"}]}, base=tmp_path)
    db = tmp_path / "s.db"
    store = Store(f"sqlite:///{db}")
    store.bind_job("s")
    store.plan(plan(job), "plan1")
    claimed = store.claim("plan1", "w", 2, 60)
    store.record([], [AnswerRow(j.id, 1, "m", f"answer {j.id[:6]}", "stop", 3, 4, 0.1, {"id": "x"})
                      for j in claimed], [])
    store.release_owner("w")
    store.close()
    with sqlite3.connect(db) as c:                                      # back to version 1's layout
        c.execute("DROP INDEX ix_job_claim_group")                      # (v5)
        c.execute("ALTER TABLE job DROP COLUMN group_seq")
        for table in ("usage", "usagetotal"):
            for column in ("cached_tokens", "usd_list", "saved_cache", "saved_hour", "saved_batch"):
                c.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        c.execute("ALTER TABLE response DROP COLUMN reasoning")
        c.execute("ALTER TABLE response DROP COLUMN logprobs")           # (v4)
        c.execute("DROP INDEX ix_usage_batch_id")                       # (v3)
        c.execute("ALTER TABLE usage DROP COLUMN batch_id")
        c.execute("DROP TABLE batch")
        c.execute("UPDATE meta SET value = '1' WHERE key = 'schema_version'")
    return db


def test_a_new_store_records_its_version(tmp_path: Path) -> None:
    Store(f"sqlite:///{tmp_path / 'new.db'}").close()
    assert version_of(tmp_path / "new.db") == str(SCHEMA_VERSION) == "5"
    assert len(MIGRATIONS) == SCHEMA_VERSION - 1  # one migration per version step, none missing


def test_an_older_store_is_migrated_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_v1_store(tmp_path)
    before = dump(db)
    calls: list[int] = []

    def counted(step: int, real: Any) -> Any:
        def migrate(conn: sa.Connection) -> None:
            calls.append(step)
            real(conn)
        return migrate

    monkeypatch.setattr(store_mod, "MIGRATIONS", [counted(i + 1, m) for i, m in enumerate(MIGRATIONS)])
    Store(f"sqlite:///{db}").close()
    assert calls == [1, 2, 3, 4] and version_of(db) == "5"
    # Everything else is as it was: the dump differs only by the columns and the version.
    after = dump(db)
    assert [line for line in before if line not in after] == [
        line for line in before if "schema_version" in line or line.startswith((
            'INSERT INTO "response"', "CREATE TABLE response", 'INSERT INTO "usage"', "CREATE TABLE usage ",
            'INSERT INTO "job"', "CREATE TABLE job", 'INSERT INTO "usagetotal"', "CREATE TABLE usagetotal"))]
    store = Store(f"sqlite:///{db}")                                   # opened again: not migrated again
    assert calls == [1, 2, 3, 4]
    s = store.status("plan1")
    assert (s["jobs"], s["done"], s["pending"]) == (6, 2, 4)          # the data came through
    records = list(store.iter_records("plan1"))
    assert [r.answer[:6] for r in records] == ["answer"] * 2 and [r.reasoning for r in records] == [None] * 2
    claimed = store.claim("plan1", "w", 1, 60)                        # and the new column takes answers
    store.record([], [AnswerRow(claimed[0].id, 2, "m", "42", "stop", 3, 4, 0.1, None, reasoning="6 x 7")], [])
    assert [r.reasoning for r in store.iter_records("plan1")] == [None, None, "6 x 7"]
    store.close()


def test_a_failed_migration_changes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    db = make_v1_store(tmp_path)
    before = dump(db)

    def half_done(conn: sa.Connection) -> None:
        conn.exec_driver_sql("ALTER TABLE response ADD COLUMN reviewed BOOLEAN NOT NULL DEFAULT 0")
        conn.exec_driver_sql("UPDATE job SET status = 'pending'")
        raise RuntimeError("the migration failed half-way")

    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", 2)
    monkeypatch.setattr(store_mod, "MIGRATIONS", [half_done])
    with pytest.raises(RuntimeError, match="half-way"):
        Store(f"sqlite:///{db}")
    assert dump(db) == before and version_of(db) == "1"


@pytest.mark.parametrize("command", [["run", "--quiet"], ["status", "--json"], ["export"], ["quota"]])
def test_a_newer_store_is_refused_and_left_unchanged(command, sim, make_job) -> None:
    job = make_job(sim, n=4)
    db = job.parent / "data" / "t.db"
    assert cli("run", str(job), "--quiet").returncode == 0
    with sqlite3.connect(db) as c:
        c.execute("update meta set value = ? where key = 'schema_version'", (str(SCHEMA_VERSION + 1),))
    before, requests = dump(db), sim.stats()["requests"]
    r = cli(command[0], str(job), *command[1:])
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"has schema version {SCHEMA_VERSION + 1}, newer than this harvester understands " \
           f"({SCHEMA_VERSION}): upgrade harvester" in r.stderr
    assert str(db) in r.stderr and "Traceback" not in r.stderr
    assert dump(db) == before and sim.stats()["requests"] == requests


# The layout of a version-1 store. Never edit it after a release: change the tables, bump
# SCHEMA_VERSION and add a migration instead (before the first release, keep it in step with tables.py).
V1_SCHEMA = """
CREATE TABLE meta ("key" VARCHAR NOT NULL, value VARCHAR NOT NULL, PRIMARY KEY ("key"));
CREATE TABLE run (id INTEGER NOT NULL, job_name VARCHAR NOT NULL, owner VARCHAR NOT NULL,
    started_at FLOAT NOT NULL, ended_at FLOAT, heartbeat_at FLOAT, exit_reason VARCHAR,
    version VARCHAR NOT NULL, config_hash VARCHAR NOT NULL, plan_key VARCHAR NOT NULL, terms JSON,
    sent INTEGER NOT NULL, answered INTEGER NOT NULL, rate_limited INTEGER NOT NULL, limiter JSON,
    origin VARCHAR NOT NULL, share FLOAT, throughput FLOAT, PRIMARY KEY (id));
CREATE TABLE job (id VARCHAR NOT NULL, prompt_key VARCHAR NOT NULL, plan_key VARCHAR NOT NULL,
    seq INTEGER NOT NULL, sample_index INTEGER NOT NULL, request JSON NOT NULL, source VARCHAR NOT NULL,
    metadata JSON, status VARCHAR NOT NULL, attempts INTEGER NOT NULL, lease_owner VARCHAR,
    lease_expires FLOAT, last_error VARCHAR, error_kind VARCHAR, permanent BOOLEAN NOT NULL,
    updated_at FLOAT NOT NULL, PRIMARY KEY (id));
CREATE TABLE attempt (id INTEGER NOT NULL, job_id VARCHAR NOT NULL, run_id INTEGER NOT NULL,
    started_at FLOAT NOT NULL, ended_at FLOAT NOT NULL, http_status INTEGER, error_kind VARCHAR,
    retry_after FLOAT, tokens_reserved INTEGER NOT NULL, prompt_tokens INTEGER, completion_tokens INTEGER,
    PRIMARY KEY (id));
CREATE TABLE response (job_id VARCHAR NOT NULL, run_id INTEGER NOT NULL, model VARCHAR, content VARCHAR NOT NULL,
    finish_reason VARCHAR, prompt_tokens INTEGER, completion_tokens INTEGER, latency FLOAT NOT NULL,
    created_at FLOAT NOT NULL, raw JSON, PRIMARY KEY (job_id));
CREATE TABLE usage (id INTEGER NOT NULL, run_id INTEGER NOT NULL, job_id VARCHAR, day VARCHAR NOT NULL,
    month VARCHAR NOT NULL, state VARCHAR NOT NULL, input_reserved INTEGER NOT NULL,
    output_reserved INTEGER NOT NULL, usd_reserved FLOAT NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, usd FLOAT NOT NULL, created_at FLOAT NOT NULL, PRIMARY KEY (id));
CREATE TABLE usagetotal (window VARCHAR NOT NULL, requests INTEGER NOT NULL, input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL, usd FLOAT NOT NULL, requests_reserved INTEGER NOT NULL,
    input_reserved INTEGER NOT NULL, output_reserved INTEGER NOT NULL, usd_reserved FLOAT NOT NULL,
    PRIMARY KEY (window));
CREATE INDEX ix_attempt_job_id ON attempt (job_id);
CREATE INDEX ix_job_claim ON job (plan_key, status, seq);
CREATE INDEX ix_job_prompt_key ON job (prompt_key);
CREATE INDEX ix_usage_run_id ON usage (run_id);
CREATE INDEX ix_usage_state ON usage (state);
INSERT INTO meta VALUES ('schema_version', '1');
"""


def _columns(db: Path) -> dict[str, list[str]]:
    with sqlite3.connect(db) as c:
        tables = [r[0] for r in c.execute("select name from sqlite_master where type = 'table' order by name")]
        return {t: sorted(r[1] for r in c.execute(f'pragma table_info("{t}")')) for t in tables}


def test_a_version_1_store_opens_with_this_code(sim, make_job) -> None:
    job = make_job(sim, n=5)
    db = job.parent / "data" / "t.db"
    db.parent.mkdir(parents=True)
    with sqlite3.connect(db) as c:
        c.executescript(V1_SCHEMA)
    fresh = job.parent / "fresh.db"
    Store(f"sqlite:///{fresh}").close()
    Store(f"sqlite:///{db}").close()
    migrated, current = _columns(db), _columns(fresh)
    missing = {t: sorted(set(cols) - set(migrated.get(t, []))) for t, cols in current.items()
               if set(cols) - set(migrated.get(t, []))}
    assert not missing, (f"a version-1 store lacks {missing} after migration: bump SCHEMA_VERSION and add a "
                         "migration to harvester.store.MIGRATIONS")
    r = cli("run", str(job), "--quiet")                 # and the whole path works on it
    assert r.returncode == 0, r.stderr
    assert json.loads(cli("status", str(job), "--json").stdout)["done"] == 5
