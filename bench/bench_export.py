"""Export end to end: store → filters → exact dedup → near-dup → split → JSONL + Parquet + HF + card.

    python bench/bench_export.py [--rows 100000 1000000] [--workers 1 auto]

Each size: a generated corpus (bench_dedup.Corpus: planted near-duplicates, short texts) is loaded into
a SQLite store through the store's API (not timed), then `Harvester.export()` runs in a fresh process,
once per `--workers` setting (1: one process; auto: the default, one per CPU), side by side on the
same store. Printed: rows/s of the whole export, the speed-up over one process, peak RSS of the export
process and of its largest worker, and peak-RSS growth per row between the sizes.
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

sys.path.insert(0, str(Path(__file__).parent))
from bench_dedup import Corpus  # noqa: E402


def job_dict(folder: Path) -> dict:
    return {"name": "bench", "teacher": {"model": "m", "api_key_env": None},
            "prompts": [{"path": "prompts.jsonl"}], "store": f"sqlite:///{folder}/bench.db",
            "export": {"out": str(folder / "out"), "format": "openai", "test_size": 0.05}}


def load(n: int, folder: Path) -> None:
    """Write n prompts, plan them, and record an answer for each through the store's API."""
    from harvester import Harvester
    from harvester.config import job_from_dict
    from harvester.prompts import plan
    from harvester.store import AnswerRow

    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Question {i}: tell me about item {i % 9973}."}) + "\n")
    job = job_from_dict(job_dict(folder), base=folder)
    h = Harvester(job)
    h.plan()
    corpus = Corpus(n, 42)
    answers = []
    for spec in plan(job):
        text = corpus.text(spec.seq)
        answers.append(AnswerRow(spec.id, 1, "m", text, "stop", 12, len(text) // 4, 0.1, None))
        if len(answers) == 5000:
            h.store.record([], answers, [])
            answers = []
    h.store.record([], answers, [])


def export(folder: Path, workers: str) -> dict:
    import datasets  # noqa: F401  (import cost is not the export's)

    from harvester import Harvester
    from harvester.config import job_from_dict
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    job = job_dict(folder)
    if workers != "auto":
        job["export"]["workers"] = int(workers)
    h = Harvester(job_from_dict(job, base=folder))
    t0 = time.perf_counter()
    h.export()
    seconds = time.perf_counter() - t0
    r = h.last_export
    return {"selected": r.selected, "kept": r.kept, "dropped": dict(r.dropped), "seconds": round(seconds, 2),
            "rows_per_s": round(r.selected / seconds),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "rss_growth_mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) / 1024,
            "worker_peak_rss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
            "workers": r.workers, "near_dup_clusters": r.near_dup_clusters}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--workers", nargs="+", default=["1", "auto"], help="export.workers settings to compare")
    ap.add_argument("--worker", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        mode, n, folder, workers = args.worker
        if mode == "load":
            load(int(n), Path(folder))
        else:
            print(json.dumps(export(Path(folder), workers)))
        return
    results: dict[tuple[int, str], dict] = {}
    for n in args.rows:
        folder = Path(tempfile.mkdtemp(prefix=f"bench-export-{n}-"))
        t0 = time.perf_counter()
        subprocess.run([sys.executable, __file__, "--worker", "load", str(n), str(folder), "-"], check=True)
        load_s = time.perf_counter() - t0
        for w in args.workers:
            out = subprocess.run([sys.executable, __file__, "--worker", "export", str(n), str(folder), w],
                                 check=True, capture_output=True, text=True).stdout
            res = json.loads(out.strip().splitlines()[-1])
            res["load_s"] = round(load_s, 1)
            results[n, w] = res
            print(json.dumps({"rows": n, "workers_setting": w, **res}), flush=True)
        subprocess.run(["rm", "-rf", str(folder)])
    sizes = sorted(args.rows)
    for w in args.workers:
        if len(sizes) >= 2:
            a, b = sizes[0], sizes[-1]
            ra, rb = results[a, w], results[b, w]
            growth = (rb["rss_growth_mb"] - ra["rss_growth_mb"]) * 1024 * 1024 / (b - a)
            workers = rb["workers"]
            worker_growth = max(0.0, rb["worker_peak_rss_mb"] - ra["worker_peak_rss_mb"]) * 1024 * 1024 / (b - a)
            both = growth + workers * worker_growth
            print(f"workers={w}: peak-RSS growth per row from {a:,} to {b:,} rows: export process {growth:.0f} B/row"
                  + (f"; with its {workers} workers' peaks added {both:.0f} B/row" if workers > 1 else "")
                  + " (bar: <= 1024 B/row)")
    for n in sizes:
        line = ", ".join(f"workers={w} ({results[n, w]['workers']} processes): {results[n, w]['rows_per_s']:,} rows/s"
                         for w in args.workers)
        base = results[n, args.workers[0]]["rows_per_s"]
        ratios = ", ".join(f"{results[n, w]['rows_per_s'] / base:.2f}x" for w in args.workers[1:])
        print(f"{n:>9,} rows: {line}" + (f"; ratio to workers={args.workers[0]}: {ratios}" if ratios else "")
              + " (bar: >= 8,000 rows/s)")


if __name__ == "__main__":
    main()
