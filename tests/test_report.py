"""`harvester report`: its figures are the commands' own (status, quota, stats.json), it writes only over
a report it wrote, `--watch` rewrites it until Ctrl-C (exit 130), the export's card embeds its plots,
and `harvester run` never imports matplotlib. The browser test is tests/test_report_browser.py."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from conftest import cli, popen_cli, store_count

from harvester import Harvester
from harvester.export.lengths import length_histogram
from harvester.report import data, series
from harvester.report.page import GENERATOR
from harvester.store.timeline import Buckets

QUOTA = {"usd_total": 5.0, "requests_per_run": 10_000, "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}}


@pytest.fixture
def harvested(sim_factory, make_job) -> Path:
    """A finished harvest with 429s, 5xx, refusals, a budget and an export; its job file."""
    # 4 requests/s allowed, eight at a time sent: 429s even on a loaded machine
    sim = sim_factory(rpm=240, headers=False, error_rate=0.05, refusal_rate=0.1, latency=0.005, seed=5)
    job = make_job(sim, n=60, teacher={"provider": "simulator", "limits": {"max_concurrency": 8, "rpm": 12000}},
                   quota=QUOTA, export={"out": "data/t"},
                   retry={"max_attempts": 12, "initial_wait": 0.01, "max_wait": 0.05})   # every job ends answered
    with Harvester.from_file(job) as h:
        assert h.run_sync(handle_signals=False).exit_code == 0
        h.export()
    return job


def test_every_figure_sums_to_what_status_quota_and_stats_json_say(harvested: Path) -> None:
    with Harvester.from_file(harvested) as h:
        d = data.gather(h)
        status, quota = h.status(), h.quota()
    stats = json.loads((harvested.parent / "data" / "t" / "stats.json").read_text())
    a = d["attempts"]
    assert sum(d["answers"]["answers"]) == status["done"] == d["headline"]["answers"] == 60
    assert sum(a["requests"]) == status["requests"] == d["headline"]["requests"]
    assert {k: sum(v) for k, v in a["by_kind"].items()} == status["errors_by_kind"]
    assert sum(a["by_kind"].get("http_429", [])) == d["headline"]["rate_limited"] > 0
    assert sum(a["retries"]) == status["requests"] - 60      # every job answered: each failure was retried
    assert sum(d["answers"]["prompt_tokens"]) == status["prompt_tokens"]
    assert sum(d["answers"]["completion_tokens"]) == status["completion_tokens"]
    assert sum(d["latency"]["histogram"]) == status["requests"]
    assert d["spend"]["usd"][-1] == pytest.approx(quota["total"]["usd"]) and d["headline"]["spend_usd"] > 0
    usd = next(b for b in d["spend"]["budgets"] if b["name"] == "usd_total")
    assert usd["values"][-1] == pytest.approx(next(b["used"] for b in quota["budgets"] if b["name"] == "usd_total"))
    assert d["export"]["stats"] == stats and d["headline"]["rows_kept"] == sum(stats["rows"].values())
    assert sum(stats["lengths"]["rows"]) == stats["selected"]
    assert [r["exit_reason"] for r in d["runs"]] == ["done"]
    assert [(seg["source"], seg["per_second"]) for seg in d["limits"]] == [("config", 200.0)]   # 12,000/min


def test_the_card_embeds_the_export_plots_as_files_of_the_folder(harvested: Path) -> None:
    folder = harvested.parent / "data" / "t"
    card = (folder / "README.md").read_text()
    stats = json.loads((folder / "stats.json").read_text())
    assert [p["path"] for p in stats["plots"]] == ["plots/funnel.png", "plots/lengths.png"]
    for p in stats["plots"]:
        assert f"![{p['title']}]({p['path']})" in card
        assert (folder / p["path"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    marker = json.loads((folder / ".harvester-export.json").read_text())
    assert "plots/funnel.png" in marker["files"]     # a later export may replace them


def test_the_report_is_written_beside_the_store_and_only_over_its_own(harvested: Path, tmp_path: Path) -> None:
    r = cli("report", str(harvested))
    assert r.returncode == 0, r.stderr
    page = harvested.parent / "data" / "t-report.html"
    text = page.read_text()
    assert GENERATOR in text and "http-equiv" not in text        # no reload outside watch mode
    assert "<script" not in text and " src=" not in text and "<link" not in text   # nothing to fetch
    assert set(re.findall(r'href="(.)', text)) <= {"#"}                          # links within the page only
    ids = re.findall(r' id="([^"]+)"', text)         # several SVGs in one page: none takes another's ids
    assert len(ids) == len(set(ids)) and set(re.findall(r'(?:url\(#|href="#)([^")]+)', text)) <= set(ids)
    assert cli("report", str(harvested)).returncode == 0           # its own file: rewritten
    notes = tmp_path / "notes.html"
    notes.write_text("<html>my notes</html>")
    r = cli("report", str(harvested), "--out", str(notes))
    assert r.returncode == 2 and "not a report harvester wrote" in r.stderr, r.stderr
    assert notes.read_text() == "<html>my notes</html>"
    r = cli("report", str(harvested), "--out", str(harvested))    # the job file
    assert r.returncode == 2 and harvested.read_text().startswith(("name", "export", "prompts", "quota")), r.stderr
    r = cli("report", str(harvested), "--out", str(tmp_path))
    assert r.returncode == 2 and "is a folder" in r.stderr


def test_a_job_never_run_has_no_report(sim, make_job) -> None:
    job = make_job(sim, n=3)
    r = cli("report", str(job))
    assert r.returncode == 2 and "has no store yet" in r.stderr and "harvester run" in r.stderr
    assert not (job.parent / "data").exists()


def test_watch_rewrites_the_page_with_a_reload_until_ctrl_c(harvested: Path) -> None:
    page = harvested.parent / "data" / "t-report.html"
    proc = popen_cli("report", str(harvested), "--watch", "--every", "0.5")
    try:
        deadline = time.monotonic() + 60
        while not (page.exists() and 'http-equiv="refresh"' in page.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        first = page.stat().st_mtime_ns
        while page.stat().st_mtime_ns == first and time.monotonic() < deadline:
            time.sleep(0.1)
        assert page.stat().st_mtime_ns != first, "not rewritten"
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert GENERATOR in page.read_text()     # never left half-written


def test_harvester_run_does_not_import_matplotlib() -> None:
    code = ("import sys, harvester.cli, harvester.api, harvester.crawler, harvester.report; "
            "assert 'matplotlib' not in sys.modules, 'matplotlib imported'")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


# --- the pure parts ------------------------------------------------------------------------------

def test_buckets_are_about_a_hundred_of_a_readable_width() -> None:
    b = series.buckets_for((1000.5, 1000.5 + 3600))
    assert b.width == 30 and 100 <= b.count <= 125 and b.t0 <= 1000.5
    assert series.buckets_for((0, 10)).width == 1
    assert series.buckets_for(None).count == 1


def test_percentiles_from_the_latency_bins() -> None:
    edges = series.LATENCY_EDGES
    hist = [0] * (len(edges) + 1)
    hist[10], hist[20] = 90, 10          # 90 fast, 10 slow
    p50, p90, p99 = (series.percentile(hist, q, edges) for q in (50, 90, 99))
    assert p50 is not None and p90 is not None and p99 is not None
    assert edges[9] <= p50 < edges[10] and p90 == p50 and edges[19] <= p99 < edges[20]
    assert series.percentile([0] * len(hist), 50, edges) is None


def test_a_budget_resets_with_its_window() -> None:
    b = Buckets(0.0, 60.0, 3)
    rows = [{"bucket": 0, "run_id": 1, "day": "2026-01-01", "month": "2026-01", "requests": 2, "input_tokens": 10,
             "output_tokens": 5, "usd": 0.5},
            {"bucket": 2, "run_id": 2, "day": "2026-01-02", "month": "2026-01", "requests": 1, "input_tokens": 1,
             "output_tokens": 1, "usd": 0.25}]
    budgets = [{"name": n, "limit": 100.0, "used": 0.0, "reserved": 0.0, "resets_at": "-", "left": 0.0}
               for n in ("tokens_per_day", "usd_total", "requests_per_run")]
    out = series.budget_series(rows, b, budgets)
    assert out["usd"] == [0.5, 0.5, 0.75]
    day, total, run = out["budgets"]
    assert day["values"] == [15, 15, 2] and day["resets"] == [2]
    assert total["values"] == [0.5, 0.5, 0.75] and total["resets"] == []
    assert run["values"] == [2, 2, 1] and run["resets"] == [2]


def test_answer_lengths_are_binned_with_truncation_apart() -> None:
    h = length_histogram(Counter({(10, False): 3, (299, True): 2, (150, False): 1}))
    assert sum(h["rows"]) == 6 and sum(h["truncated"]) == 2 and h["edges"][0] == 0 and h["edges"][-1] >= 300
    assert h["truncated"][-1] == 2 and length_histogram(Counter())["rows"] == [0]


def test_a_batch_harvest_draws_its_batches_with_their_line_counts(sim_factory, make_job) -> None:
    sim = sim_factory(batch_delay=0.3)
    job = make_job(sim, n=50, teacher={"mode": "batch"}, batch={"protocol": "openai", "poll_seconds": 0.05,
                                                                 "max_requests": 20})
    r = cli("run", str(job))
    assert r.returncode == 0, r.stdout + r.stderr
    with Harvester.from_file(job) as h:
        d = data.gather(h)
        page = h.report()
    assert [b["lines"] for b in d["batches"]] == [20, 20, 10] and sum(d["answers"]["answers"]) == 50
    assert all(b["submitted_at"] and b["ended_at"] for b in d["batches"])
    text = page.read_text()
    assert 'data-chart="batches"' in text and "20 lines, 20 ok, 0 failed" in text and "10 lines" in text


def test_watch_follows_a_run_as_it_goes(sim_factory, make_job) -> None:
    """The store is read while a run writes it: the watched page shows answers part-way, then all."""
    sim = sim_factory(latency=0.6, seed=2)     # 60 answers, two at a time: about 18 s
    job = make_job(sim, n=60, teacher={"limits": {"max_concurrency": 2}})
    page = job.parent / "data" / "t-report.html"
    run = popen_cli("run", str(job), "--quiet")
    try:
        deadline = time.monotonic() + 90
        while store_count(job, "select count(*) from response") == 0 and time.monotonic() < deadline:
            time.sleep(0.1)
        watch = popen_cli("report", str(job), "--watch", "--every", "0.5")
        seen: set[int] = set()
        try:
            while time.monotonic() < deadline and 60 not in seen:
                if page.exists():
                    found = re.search(r'id="n-answers" data-value="(\d+)"', page.read_text())
                    if found:
                        seen.add(int(found.group(1)))
                time.sleep(0.2)
        finally:
            watch.send_signal(signal.SIGINT)
            _, err = watch.communicate(timeout=60)
        assert watch.returncode == 130, err
    finally:
        run.wait(timeout=60)
    assert run.returncode == 0
    assert 60 in seen and any(0 < n < 60 for n in seen), seen
