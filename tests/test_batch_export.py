"""Provenance of a batch harvest in its export: the dataset card and `stats.json` say how many answers came
through batches and what they cost at the batch price against the synchronous one, as the store counts them.

Also `harvester status` of a detached batch run: its open batches, and the jobs they hold."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import cli, fresh_pg_database
from test_vocabulary import _fits

from harvester.results import Provenance
from harvester.store import AnswerRow, Store
from harvester.store.rows import JobSpec

PRICES = {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "batch_factor": 0.5}


def by_channel(job: Path) -> dict[str, tuple[int, int, int]]:
    """(answers, prompt tokens, completion tokens) per channel, read straight from the store's rows."""
    out = {"sync": (0, 0, 0), "batch": (0, 0, 0)}
    with sqlite3.connect(job.parent / "data" / "t.db") as c:
        for raw, pin, pout in c.execute("select raw, prompt_tokens, completion_tokens from response"):
            channel = "batch" if json.loads(raw or "{}").get("batch") else "sync"
            n, a, b = out[channel]
            out[channel] = (n + 1, a + (pin or 0), b + (pout or 0))
    return out


def usd(pin: int, pout: int) -> float:
    return (pin * PRICES["input_per_mtok"] + pout * PRICES["output_per_mtok"]) / 1e6


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh store on SQLite, and on PostgreSQL when HARVESTER_TEST_PG_URL names a server (.ci/run's)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 's.db'}"
        return
    server = os.environ.get("HARVESTER_TEST_PG_URL")
    if not server:
        pytest.skip("PostgreSQL: set HARVESTER_TEST_PG_URL")
    with fresh_pg_database(server) as url:
        yield url


def test_the_store_counts_answers_by_channel(store_url: str) -> None:
    store = Store(store_url)
    try:
        store.plan([JobSpec(f"j{i}", f"p{i}", i, 0, {"messages": [{"role": "user", "content": f"q{i}"}]}, "f:1", {})
                    for i in range(6)], "plan")
        raws = [{"batch": "batch_abc"}, {"batch": 3, "id": "x", "cached_tokens": 5}, {"id": "y", "cached_tokens": 7},
                None, {"batch": None}, {"batch": "b"}]
        store.record([], [AnswerRow(f"j{i}", 1, "m" if i % 2 else "n", "a", "stop", 10 + i, 100 * i, 0.0, raw)
                          for i, raw in enumerate(raws)], [])
        p = store.provenance("plan")
    finally:
        store.close()
    assert p["channels"] == {"batch": {"answers": 3, "prompt_tokens": 10 + 11 + 15, "completion_tokens": 600,
                                       "cached_tokens": 5},
                             "sync": {"answers": 3, "prompt_tokens": 12 + 13 + 14, "completion_tokens": 900,
                                      "cached_tokens": 7}}
    assert p["answers"] == 6 and p["models_reported"] == ["m", "n"]
    _fits(p, Provenance, "store.provenance")


def test_card_and_stats_say_what_came_through_batches_and_what_it_cost(sim_factory, make_job, tmp_path) -> None:
    sim = sim_factory(batch_delay=0.1)
    n, first = 90, 20
    job = make_job(sim, n=n, teacher={"mode": "batch"}, batch={"poll_seconds": 0.05, "max_requests": 40},
                   quota={"prices": PRICES})
    # a job may mix both modes: its first jobs synchronously (a trial), the rest through batches
    r = cli("run", str(job), "--mode", "sync", "--limit", str(first), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "ex"
    e = cli("export", str(job), "--out", str(out))
    assert e.returncode == 0, e.stdout + e.stderr

    truth = by_channel(job)
    assert truth["sync"][0] == first and truth["batch"][0] == n - first
    p = json.loads((out / "stats.json").read_text())["provenance"]
    _fits(p, Provenance, "stats.json provenance")
    for channel, (answers, pin, pout) in truth.items():
        got = p["channels"][channel]
        assert (got["answers"], got["prompt_tokens"], got["completion_tokens"]) == (answers, pin, pout)
        assert abs(got["usd_at_sync_price"] - usd(pin, pout)) < 1e-12
    batch, sync = p["channels"]["batch"], p["channels"]["sync"]
    assert abs(batch["usd"] - 0.5 * usd(*truth["batch"][1:])) < 1e-12
    assert abs(sync["usd"] - usd(*truth["sync"][1:])) < 1e-12
    assert p["answers"] == n and p["cost"]["batch_factor"] == 0.5
    assert abs(p["cost"]["usd"] - batch["usd"] - sync["usd"]) < 1e-12
    assert abs(p["cost"]["saved_usd"] - (batch["usd_at_sync_price"] - batch["usd"])) < 1e-12

    card = (out / "README.md").read_text()
    line = next(x for x in card.splitlines() if x.startswith("- through provider batches:"))
    assert f"{n - first:,} of {n:,} answers" in line
    assert f"{truth['batch'][1]:,} prompt + {truth['batch'][2]:,} completion tokens" in line
    dollars = [float(x) for x in re.findall(r"\$([0-9.]+)", line)]
    assert dollars == [round(batch["usd"], 4), round(batch["usd_at_sync_price"], 4),
                       round(batch["usd_at_sync_price"] - batch["usd"], 4)]
    assert f"- synchronous: {first:,} answers" in card
    assert "(batches at 0.5 of that)" in card


def test_without_prices_the_export_gives_the_counts_only(sim_factory, make_job, tmp_path) -> None:
    sim = sim_factory(batch_delay=0.1)
    job = make_job(sim, n=30, teacher={"mode": "batch"}, batch={"poll_seconds": 0.05})   # no price for its model
    r = cli("run", str(job), "--quiet")
    assert r.returncode == 0, r.stdout + r.stderr
    out = tmp_path / "ex"
    assert cli("export", str(job), "--out", str(out)).returncode == 0
    p = json.loads((out / "stats.json").read_text())["provenance"]
    _fits(p, Provenance, "stats.json provenance")
    assert p["cost"] is None and p["channels"]["batch"] == {"answers": 30, "prompt_tokens": by_channel(job)["batch"][1],
                                                            "completion_tokens": by_channel(job)["batch"][2],
                                                            "cached_tokens": 0}   # short prompts: nothing cached
    line = next(x for x in (out / "README.md").read_text().splitlines() if x.startswith("- through provider batches:"))
    assert "30 of 30 answers" in line and "$" not in line


def test_status_lists_open_batches_apart_from_workers(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=30)
    job = make_job(sim, n=25, teacher={"mode": "batch"}, batch={"poll_seconds": 0.05, "max_requests": 10,
                                                                 "max_open": 10})
    r = cli("run", str(job), "--detach")
    assert r.returncode == 5, r.stdout + r.stderr
    time.sleep(1.1)                                          # an age of at least a second
    s = json.loads(cli("status", str(job), "--json").stdout)
    ids = [b["provider_id"] for b in s["batches"]]
    assert len(ids) == 3 and all(ids)
    r = cli("status", str(job), env={"COLUMNS": "200"})       # one line a row
    assert r.returncode == 0, r.stdout + r.stderr
    rows = {}
    for line in r.stdout.splitlines():                       # the table's rows: label │ value
        cells = [c.strip() for c in line.strip("│ ").split("│")]
        if len(cells) == 2:
            rows[cells[0]] = cells[1]
    assert rows["leased by workers"] == "0" and rows["in open batches"] == "25" and rows["open batches"] == "3"
    for b, lines in zip(s["batches"], (10, 10, 5)):
        assert re.fullmatch(rf"\S+ · 0/{lines} lines done · age [1-9]\d*s", rows[b["provider_id"]])
