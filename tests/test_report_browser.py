"""The report in a real browser: a simulator run with 429s and 5xx, a budget and an export, then
`harvester report` by the real CLI; the page opened in headless Chromium (Debian's, as .ci/run installs
it) through file:// with the network cut. No console error, every chart drawn, and the numbers on the
page are the ones `status`, `quota` and stats.json give."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import cli

CHARTS = {"rate", "errors", "latency", "tokens", "budgets", "funnel", "lengths"}
# What the flags do: no first-run work, and nothing of the browser's own reaching for the network
# (a closed network refuses those connections, and the test cuts the page's anyway).
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str | None:
    found = os.environ.get("HARVESTER_TEST_CHROMIUM")
    return found or shutil.which("chromium") or shutil.which("chromium-browser")


def _json(*args: str) -> dict:
    r = cli(*args, "--json", timeout=60)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_report_opens_offline_in_chromium_and_shows_the_stores_numbers(sim_factory, make_job,
                                                                           tmp_path: Path) -> None:
    browser = chromium()
    if browser is None:
        pytest.skip("no Chromium found (install Debian's chromium, as .ci/run does, or set HARVESTER_TEST_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (the test extra)")
    # The simulator allows 5 requests/s and sends no rate-limit headers: the harvester, told 6,000/min,
    # meets 429s; 5% of answers are 5xx and 10% refusals (the export drops them).
    sim = sim_factory(rpm=300, headers=False, error_rate=0.05, refusal_rate=0.1, latency=0.01, jitter=0.01, seed=3)
    job = make_job(sim, n=80, teacher={"provider": "simulator", "limits": {"max_concurrency": 8, "rpm": 6000}},
                   quota={"usd_total": 5.0, "tokens_per_day": 2_000_000,
                          "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}},
                   export={"out": "data/t", "test_size": 0.1},
                   retry={"max_attempts": 12, "initial_wait": 0.01, "max_wait": 0.05})
    r = cli("run", str(job), "--quiet", timeout=180)
    assert r.returncode == 0, r.stderr
    r = cli("export", str(job), timeout=180)
    assert r.returncode == 0, r.stderr
    out = tmp_path / "report.html"
    r = cli("report", str(job), "--out", str(out), timeout=120)
    assert r.returncode == 0, r.stderr
    assert out.as_uri() in r.stdout

    status, quota = _json("status", str(job)), _json("quota", str(job))
    stats = json.loads((tmp_path / "data" / "t" / "stats.json").read_text())
    assert status["errors_by_kind"].get("http_429", 0) > 0, status     # the faults did happen
    assert quota["total"]["usd"] > 0 and stats["dropped"].get("refusal", 0) > 0

    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=browser, args=CHROMIUM_ARGS)   # a fresh profile of its own
        try:
            page = b.new_page()
            problems: list[str] = []
            outside: list[str] = []
            page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: problems.append(str(e)))

            def route(r: object) -> None:   # the network is off: anything but the file itself is refused
                if r.request.url.startswith("file:"):   # type: ignore[attr-defined]
                    r.continue_()   # type: ignore[attr-defined]
                else:
                    outside.append(r.request.url)   # type: ignore[attr-defined]
                    r.abort()   # type: ignore[attr-defined]

            page.route("**/*", route)
            page.goto(out.as_uri(), wait_until="load")
            charts = page.eval_on_selector_all(
                "figure[data-chart]", """els => els.map(e => { const s = e.querySelector('svg');
                    const box = s ? s.getBoundingClientRect() : {width: 0, height: 0};
                    return [e.dataset.chart, s ? s.querySelectorAll('path').length : 0, box.width, box.height]; })""")
            number = {key: page.get_attribute(f"#n-{key}", "data-value")
                      for key in ("answers", "rate_limited", "spend", "rows_kept", "requests")}
            shown = page.inner_text("#n-answers")
        finally:
            b.close()

    assert problems == [] and outside == [], (problems, outside)
    drawn = {name for name, paths, w, h in charts if paths > 3 and w > 100 and h > 50}
    assert {name for name, *_ in charts} >= CHARTS and drawn >= CHARTS, charts
    assert int(number["answers"]) == status["done"] == 80 and shown == f"{status['done']:,}"
    assert int(number["rate_limited"]) == status["errors_by_kind"]["http_429"]
    assert int(number["requests"]) == status["requests"]
    assert float(number["spend"]) == pytest.approx(quota["total"]["usd"], rel=1e-12)
    assert int(number["rows_kept"]) == sum(stats["rows"].values()) == stats["selected"] - sum(stats["dropped"].values())
