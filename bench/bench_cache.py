"""What sending jobs that share a long first message together does for the provider's prompt cache:
the cached share of input tokens and the cost per 1,000 answers, today's (plan) order against
prefix-grouped order, side by side.

    python bench/bench_cache.py [--prompts 2000] [--systems 20] [--slots 4] [--concurrency 16]

The prompt set is what a distillation job often looks like: `--systems` long system prompts (~1,400 tokens
each, so the simulator caches them), each with its own questions, the rows interleaved as a file mixing
tasks is. The simulator (its own process, one per order, harvester.sim_cache) caches a first message for
5 minutes and holds `--slots` of them. The same job is harvested by the real CLI twice, each in its own
store: `cache_order: false` (plan order) and `cache_order: true` (harvester.cacheorder). Both carry
gpt-4o-mini's prices as `quota.prices` ($0.15 fresh, $0.075 cached, $0.60 output per Mtok) and a budget far
above the spend, so the quota ledger prices every request by what the simulator reported. Each order
prints one JSON line, then the ratios grouped / plan.
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from bench_ratelimit import start_sim  # the same simulator start-up (bench/ is on sys.path)
from bench_ratelimit import stats as sim_stats

PRICES = {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "cached_input_per_mtok": 0.075}
WORDS = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron".split()


def write_job(folder: Path, url: str, args: argparse.Namespace, grouped: bool) -> Path:
    rng = random.Random(11)
    heads = [f"You are expert {k}. Follow these rules. " + " ".join(rng.choice(WORDS) for _ in range(1400))
             for k in range(args.systems)]
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(args.prompts):
            f.write(json.dumps({"system": heads[i % args.systems], "prompt": f"Task {i}: answer question {i}."}) + "\n")
    job: dict[str, Any] = {
        "name": "bench-cache", "store": f"sqlite:///{folder / 'store.db'}", "cache_order": grouped,
        "teacher": {"base_url": url, "model": "sim-teacher", "api_key_env": None, "provider": "simulator",
                    "params": {"max_tokens": 128}, "limits": {"max_concurrency": args.concurrency}},
        "prompts": [{"path": "prompts.jsonl"}], "quota": {"prices": PRICES, "usd_total": 1000.0}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def harvest(args: argparse.Namespace, grouped: bool) -> dict[str, Any]:
    folder = Path(tempfile.mkdtemp(prefix="bench-cache-"))
    proc, url = start_sim(["--latency", str(args.latency), "--cache-slots", str(args.slots)])
    try:
        job = write_job(folder, url, args, grouped)
        started = time.monotonic()
        r = subprocess.run([sys.executable, "-m", "harvester.cli", "run", str(job), "--quiet"], capture_output=True,
                           text=True)
        seconds = time.monotonic() - started
        if r.returncode != 0:
            raise RuntimeError(f"run failed: {r.stdout}{r.stderr}")
        q = subprocess.run([sys.executable, "-m", "harvester.cli", "quota", str(job), "--json"], capture_output=True,
                           text=True, check=True)
        total = json.loads(q.stdout)["total"]
        seen = sim_stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    answers = seen["answered"]
    return {"order": "prefix-grouped" if grouped else "plan (today)", "answers": answers,
            "cached_share": seen["cached_tokens"] / seen["prompt_tokens"],
            "ledger_cached_tokens": total["cached_tokens"], "usd_per_1000": total["usd"] / answers * 1000,
            "usd_list_per_1000": total["usd_list"] / answers * 1000, "seconds": round(seconds, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--systems", type=int, default=20, help="distinct long system prompts, interleaved")
    ap.add_argument("--slots", type=int, default=4, help="first messages the simulator's cache holds")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--latency", type=float, default=0.02)
    args = ap.parse_args()
    today, grouped = harvest(args, grouped=False), harvest(args, grouped=True)
    for row in (today, grouped):
        print(json.dumps(row))
    print(f"cached share of input tokens: plan order {today['cached_share']:.1%}, prefix-grouped "
          f"{grouped['cached_share']:.1%}")
    print(f"cost per 1,000 answers: plan order ${today['usd_per_1000']:.4f}, prefix-grouped "
          f"${grouped['usd_per_1000']:.4f} (list price ${today['usd_list_per_1000']:.4f}); "
          f"ratio grouped / plan {grouped['usd_per_1000'] / today['usd_per_1000']:.3f}")


if __name__ == "__main__":
    main()
