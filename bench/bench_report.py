"""The report's cost: time and memory of `Harvester.report()` over stores of growing size.

    python bench/bench_report.py [--attempts 10000 100000]

Each size: a SQLite store with that many attempts (one job in ten retried after a 429 or a 5xx, every
job answered, a settled ledger row per attempt), spread over two hours, written through the store's
API (not timed). The report then runs in a fresh process per size, side by side; printed: CPU seconds
of the report (imports excluded), peak RSS, and the ratios between the sizes: memory stays flat when
the aggregation happens in SQL.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SPAN = 7200.0     # seconds the generated harvest lasts


def job_dict(folder: Path) -> dict:
    return {"name": "bench", "teacher": {"model": "m", "api_key_env": None, "provider": "simulator",
                        "params": {"max_tokens": 400}},
            "prompts": [{"path": "prompts.jsonl"}], "store": f"sqlite:///{folder}/bench.db",
            "quota": {"usd_total": 1000.0, "tokens_per_day": 10**9,
                      "prices": {"input_per_mtok": 1.0, "output_per_mtok": 4.0}}}


def load(attempts: int, folder: Path) -> None:
    """Jobs, attempts, answers and ledger rows through the store's API, timestamps over SPAN."""
    import sqlalchemy as sa

    from harvester import Harvester
    from harvester.config import job_from_dict
    from harvester.prompts import plan
    from harvester.store import AnswerRow, AttemptRow
    from harvester.store.tables import Usage, table_of

    jobs = round(attempts / 1.1)
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(jobs):
            f.write(json.dumps({"prompt": f"Question {i}: tell me about item {i % 9973}."}) + "\n")
    job = job_from_dict(job_dict(folder), base=folder)
    h = Harvester(job)
    h.plan()
    run = h.store.start_run(job_name="bench", owner="bench:1:x", version="bench", config_hash="-",
                            plan_key=h.plan_key())
    t0 = time.time() - SPAN
    usage = table_of(Usage)
    made, rows, answers, ledger = 0, [], [], []
    for spec in plan(job):
        t = t0 + SPAN * spec.seq / jobs
        if made + jobs - spec.seq < attempts and spec.seq % 10 == 0:   # one in ten: a failure first
            rows.append(AttemptRow(spec.id, run, t - 1.0, t - 0.7, 429 if spec.seq % 20 else 503,
                                   "http_429" if spec.seq % 20 else "http_503", None, 400))
            made += 1
        rows.append(AttemptRow(spec.id, run, t - 0.5 - (spec.seq % 7) / 10, t, 200, None, None, 400, 20, 80))
        answers.append(AnswerRow(spec.id, run, "m", f"answer {spec.seq}", "stop", 20, 80, 0.5, None))
        made += 1
        ledger.append({"run_id": run, "job_id": spec.id, "day": time.strftime("%Y-%m-%d", time.gmtime(t)),
                       "month": time.strftime("%Y-%m", time.gmtime(t)), "state": "settled",
                       "input_tokens": 20, "output_tokens": 80, "usd": 0.00034, "created_at": t})
        if len(rows) >= 5000:
            h.store.record(rows, answers, [])
            with h.store.write() as conn:
                conn.execute(sa.insert(usage), ledger)
            rows, answers, ledger = [], [], []
    h.store.record(rows, answers, [])
    if ledger:
        with h.store.write() as conn:
            conn.execute(sa.insert(usage), ledger)
    h.store.end_run(run, exit_reason="done", started_at=t0)
    h.close()


def peak_rss_mb() -> float:
    """This process's peak RSS. Linux's VmHWM starts afresh at exec; ru_maxrss may carry the parent's peak."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def report(folder: Path) -> dict:
    """In this (fresh) process: the report alone, its imports paid before the clock starts."""
    import matplotlib.figure  # noqa: F401  (import cost is not the report's)

    from harvester import Harvester
    from harvester.config import job_from_dict
    from harvester.report import charts, data, page  # noqa: F401

    h = Harvester(job_from_dict(job_dict(folder), base=folder))
    before, rss_before = resource.getrusage(resource.RUSAGE_SELF), peak_rss_mb()
    wall = time.perf_counter()
    h.report(folder / "report.html")
    after = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "wall_s": time.perf_counter() - wall, "rss_before_mb": rss_before, "peak_rss_mb": peak_rss_mb(),
            "page_kb": (folder / "report.html").stat().st_size / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attempts", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(report(Path(args.child))))
        return
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in args.attempts:
            folder = Path(tmp) / str(n)
            folder.mkdir()
            load(n, folder)
            out = subprocess.run([sys.executable, __file__, "--child", str(folder)], stdout=subprocess.PIPE, text=True,
                                 check=True)
            results[n] = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"{'attempts':>10} {'cpu s':>7} {'wall s':>7} {'RSS before MB':>14} {'peak RSS MB':>12} {'page KB':>8}")
    for n, r in results.items():
        print(f"{n:>10,} {r['cpu_s']:>7.2f} {r['wall_s']:>7.2f} {r['rss_before_mb']:>14.1f} {r['peak_rss_mb']:>12.1f} "
              f"{r['page_kb']:>8.0f}")
    if len(results) > 1:
        (small, a), (big, b) = list(results.items())[0], list(results.items())[-1]
        print(f"ratios {big:,} / {small:,} attempts ({big / small:g}x): cpu {b['cpu_s'] / a['cpu_s']:.2f}x, "
              f"peak RSS {b['peak_rss_mb'] / a['peak_rss_mb']:.2f}x, RSS growth in the report "
              f"{(b['peak_rss_mb'] - b['rss_before_mb']):.1f} MB vs {(a['peak_rss_mb'] - a['rss_before_mb']):.1f} MB")


if __name__ == "__main__":
    main()
