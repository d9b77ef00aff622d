"""How close to the provider's limit does a harvest run, without tripping it?

    python bench/bench_ratelimit.py [--prompts 2000] [--only true,none,high,noheaders,zero]

A simulator in its own process enforces 3,000 requests/min and 2,000,000 tokens/min per one-second
window, answers in 300 ± 200 ms and fails 2% of requests with a 5xx. The harvester (the real CLI, in its
own process) harvests N prompts under each scenario. Utilization = ideal ÷ span, where ideal =
prompts ÷ (rpm / 60) and span runs from the first request the simulator received to the last one.
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
import urllib.request
from pathlib import Path

import yaml

RPM, TPM = 3000, 2_000_000
SCENARIOS = {
    # name: (sim flags, job limits, bars)
    "true": ("told the true limits", [], {"rpm": RPM, "tpm": TPM, "max_concurrency": 256}, (0.99, 0.0)),
    "none": ("told no limits (headers truthful)", [], {"max_concurrency": 256}, (0.95, 0.01)),
    "high": ("told limits 10x too high", [], {"rpm": RPM * 10, "tpm": TPM * 10, "max_concurrency": 256}, (0.95, 0.01)),
    "noheaders": ("no rate-limit headers, told nothing", ["--no-headers"], {"max_concurrency": 256}, (0.80, 0.05)),
}


def start_sim(args: list[str]) -> tuple[subprocess.Popen, str]:
    ready = Path(tempfile.mkdtemp()) / "url"
    proc = subprocess.Popen([sys.executable, "-m", "harvester.cli", "sim", "--port", "0", "--ready-file", str(ready),
                             *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while not ready.exists() or not ready.read_text():
        if time.monotonic() > deadline:
            raise RuntimeError("simulator did not start")
        time.sleep(0.05)
    return proc, ready.read_text()


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.removesuffix("/v1") + "/sim/stats", timeout=10) as r:
        return json.load(r)


def harvest(url: str, folder: Path, prompts: int, limits: dict) -> tuple[float, float, int]:
    with (folder / "prompts.jsonl").open("w") as f:
        for i in range(prompts):
            prompt = f"Benchmark question {i}: describe item {i * 7919 % 10007} in detail."
            f.write(json.dumps({"prompt": prompt}) + "\n")
    job = {"name": "bench", "teacher": {"base_url": url, "model": "sim-teacher", "api_key_env": None,
                                        "provider": "simulator", "params": {"max_tokens": 256}, "limits": limits},
           "prompts": [{"path": "prompts.jsonl"}], "retry": {"max_attempts": 10}}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "harvester.cli", "run", str(folder / "job.yaml"), "--quiet"],
                       capture_output=True, text=True)
    wall = time.monotonic() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        print(r.stdout, r.stderr, file=sys.stderr)
    status = subprocess.run([sys.executable, "-m", "harvester.cli", "status", str(folder / "job.yaml"), "--json"],
                            capture_output=True, text=True)
    done = json.loads(status.stdout)["done"]
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, done


def scenario(name: str, prompts: int) -> dict:
    title, sim_flags, limits, (bar_util, bar_429) = SCENARIOS[name]
    proc, url = start_sim(["--rpm", str(RPM), "--tpm", str(TPM), "--latency", "0.3", "--jitter", "0.2",
                           "--error-rate", "0.02", "--seed", "7", *sim_flags])
    folder = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    try:
        wall, cpu, done = harvest(url, folder, prompts, limits)
        s = stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    span = s["last_request"] - s["first_request"]
    ideal = prompts / (RPM / 60)
    util = ideal / span if span > 0 else 0.0
    share429 = s["rate_limited"] / max(1, s["requests"])
    ok = done == prompts and util >= bar_util and (share429 <= bar_429 if bar_429 else s["rate_limited"] == 0)
    return {"scenario": title, "done": f"{done}/{prompts}", "requests": s["requests"], "429s": s["rate_limited"],
            "429_share": round(share429, 4), "span_s": round(span, 2), "ideal_s": round(ideal, 2),
            "utilization": round(util, 3),
            # Every request, retries of 5xx included, takes a slot of the limit: a run can reach at most
            # prompts / requests of the ideal. request_utilization is the share of the limit used at all.
            "ceiling": round(prompts / s["requests"], 3),
            "request_utilization": round(s["requests"] / (span * RPM / 60), 3) if span > 0 else 0.0,
            "bar": f">= {bar_util}, 429s {'0' if not bar_429 else f'<= {bar_429:.0%}'}",
            "meets_bar": ok}


def zero_latency(prompts: int) -> dict:
    proc, url = start_sim([])
    folder = Path(tempfile.mkdtemp(prefix="bench-zero-"))
    try:
        wall, cpu, done = harvest(url, folder, prompts, {"max_concurrency": 64})
        s = stats(url)
    finally:
        proc.terminate()
        proc.wait(10)
        shutil.rmtree(folder, ignore_errors=True)
    span = s["last_request"] - s["first_request"]
    return {"scenario": "zero latency, no limits", "done": f"{done}/{prompts}", "requests": s["requests"],
            "requests_per_s": round(s["requests"] / span, 1) if span > 0 else None,
            "harvester_cpu_s_per_1000_requests": round(cpu / s["requests"] * 1000, 3),
            "wall_s_incl_startup": round(wall, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=2000)
    ap.add_argument("--only", default="true,none,high,noheaders,zero")
    args = ap.parse_args()
    results = []
    for name in args.only.split(","):
        res = zero_latency(max(args.prompts, 5000)) if name == "zero" else scenario(name, args.prompts)
        results.append(res)
        print(json.dumps(res), flush=True)
    bars = [r["meets_bar"] for r in results if "meets_bar" in r]
    print(f"\n{sum(bars)}/{len(bars)} scenarios meet their bar")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
