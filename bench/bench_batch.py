"""What batch mode saves, side by side with sync mode: cost and the client's CPU per 1,000 answers.

    python bench/bench_batch.py [--prompts 2000] [--max-requests 500] [--batch-delay 2] [--protocol openai]

A simulator in its own process (one per mode, same seed, so both modes get the same answers) serves the chat
endpoint and the batch APIs (each batch ends `--batch-delay` s after its creation). The same N prompts are
harvested twice by the real CLI, in its own process and its own store: once with `teacher.mode: sync`, once
with `teacher.mode: batch` (`batch.max_requests` lines per batch, polled every `batch.poll_seconds`). Both
jobs carry the same `quota.prices` ($0.15 / $0.60 per Mtok, batch_factor 0.5) and a budget far above the
spend, so the quota ledger records every request: cost is the ledger's total (`harvester quota JOB --json`),
CPU the `harvester run` process's user + system time (RUSAGE_CHILDREN around it; a second run with nothing
left to send gives the share of it that is start-up and planning). Each mode prints one JSON line, then the
ratios batch / sync.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
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

PRICES = {"input_per_mtok": 0.15, "output_per_mtok": 0.60, "batch_factor": 0.5}
BUDGET_USD = 1000.0          # never reached: it only makes the ledger record every request


def cli_json(*args: str) -> dict[str, Any]:
    r = subprocess.run([sys.executable, "-m", "harvester.cli", *args, "--json"], capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"harvester {' '.join(args)}: {r.stdout}{r.stderr}")
    return json.loads(r.stdout)


def write_job(folder: Path, url: str, prompts: int, mode: str, args: argparse.Namespace) -> Path:
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(prompts):
            prompt = f"Benchmark question {i}: describe item {i * 7919 % 10007} in detail."
            f.write(json.dumps({"prompt": prompt}) + "\n")
    job: dict[str, Any] = {
        "name": f"bench-{mode}", "store": f"sqlite:///{folder / 'store.db'}",
        "teacher": {"base_url": url, "model": "sim-teacher", "api_key_env": None, "provider": "simulator",
                    "mode": mode, "params": {"max_tokens": 256}, "limits": {"max_concurrency": 64}},
        "prompts": [{"path": "prompts.jsonl"}], "retry": {"max_attempts": 10},
        "quota": {"prices": PRICES, "usd_total": BUDGET_USD},
        "batch": {"protocol": args.protocol, "max_requests": args.max_requests, "poll_seconds": args.poll_seconds,
                  "max_open": args.max_open}}
    path = folder / "job.yaml"
    path.write_text(yaml.safe_dump(job))
    return path


def timed_run(job: Path) -> tuple[subprocess.CompletedProcess[str], float, float]:
    """`harvester run JOB`: (its result, wall seconds, its CPU seconds, user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "harvester.cli", "run", str(job), "--quiet"], capture_output=True,
                       text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
    return r, wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def harvest(prompts: int, mode: str, args: argparse.Namespace) -> dict[str, Any]:
    # A simulator per mode, same seed: its n-th answer to a prompt differs from its first, so a shared one
    # would give the second mode other answers (other token counts) than the first.
    proc, url = start_sim(["--batch-delay", str(args.batch_delay), "--seed", "7"])
    folder = Path(tempfile.mkdtemp(prefix=f"bench-batch-{mode}-"))
    try:
        job = write_job(folder, url, prompts, mode, args)
        r, wall, cpu = timed_run(job)
        done = cli_json("status", str(job))["done"]
        total = cli_json("quota", str(job))["total"]
        _, _, idle_cpu = timed_run(job)   # nothing left to send: the CLI's start-up and planning alone
        s = sim_stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    per_k = 1000 / max(1, done)
    return {"mode": mode, "exit": r.returncode, "done": f"{done}/{prompts}", "requests_in_ledger": total["requests"],
            "input_tokens": total["input_tokens"], "output_tokens": total["output_tokens"],
            "usd": round(total["usd"], 6), "usd_per_1000_answers": round(total["usd"] * per_k, 6),
            "cpu_s": round(cpu, 2), "cpu_s_per_1000_answers": round(cpu * per_k, 3),
            "cpu_s_of_a_run_with_nothing_to_send": round(idle_cpu, 2), "wall_s_incl_startup": round(wall, 2),
            # the simulator's own count: every prompt answered once, through the chat endpoint or a batch
            "sim_chat_requests": s.get("requests"), "sim_batch_lines_answered": s.get("batch_custom_ids_answered"),
            "sim_batch_lines_answered_twice": s.get("batch_custom_ids_answered_more_than_once"),
            "sim_batches_created": sum((s.get("batches_created") or {}).values())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--max-requests", type=int, default=500, help="batch.max_requests")
    ap.add_argument("--max-open", type=int, default=4, help="batch.max_open")
    ap.add_argument("--poll-seconds", type=float, default=0.2, help="batch.poll_seconds")
    ap.add_argument("--batch-delay", type=float, default=2.0, help="the simulator's --batch-delay")
    ap.add_argument("--protocol", choices=["openai", "anthropic"], default="openai")
    args = ap.parse_args()
    results = {}
    for mode in ("sync", "batch"):
        results[mode] = harvest(args.prompts, mode, args)
        print(json.dumps(results[mode]), flush=True)
    sync, batch = results["sync"], results["batch"]

    def ratio(k: str) -> float | None:
        return round(batch[k] / sync[k], 3) if sync[k] else None

    print(json.dumps({"ratio": "batch / sync", "usd_per_1000_answers": ratio("usd_per_1000_answers"),
                      "cpu_s_per_1000_answers": ratio("cpu_s_per_1000_answers"),
                      "wall_s_incl_startup": ratio("wall_s_incl_startup")}), flush=True)

if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
