"""How fast, and at what CPU and memory cost, does one harvester process send, against the plain SDK?

    python bench/bench_throughput.py [--prompts 10000] [--only zero,tier] [--sdk-concurrency 600]

Each client runs in a process of its own against a fresh simulator (also a process of its own, so the
stats are one client's), one after the other in the same run:

* harvester: the real CLI, `harvester run job.yaml --quiet`, on a fresh SQLite store;
* sdk: the plain openai SDK (`AsyncOpenAI().chat.completions.create`, its default HTTP stack and
  retries) with an asyncio.Semaphore, answers kept in memory only.

Scenarios: `zero`: a simulator answering at once with no limits (harvester told none);
`tier`: OpenAI's top tier for small models, 30,000 requests/min and 150M tokens/min enforced per second,
1 s ± 0.5 s latency, 2% 5xx (harvester told the true limits; ideal span: prompts / 500 s).

Printed per client: requests/s (requests the simulator received ÷ its first-to-last span), utilization
(ideal ÷ span) and 429s, CPU (user + sys of the client process, start-up included) per 1,000 requests,
peak RSS; then the ratio harvester / sdk of each. CPU and RSS come from os.wait4 on that one process,
so they are robust to a shared machine; requests/s and utilization are not.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).parent))
from bench_ratelimit import start_sim, stats  # noqa: E402 - the simulator helpers live there

TIER_RPM, TIER_TPM = 30_000, 150_000_000
SCENARIOS = {
    # name: (title, simulator flags, harvester's job limits, rpm the ideal span is computed from)
    "zero": ("zero latency, no limits", [], {}, None),
    "tier": ("30,000 RPM / 150M TPM, 1 s ± 0.5 s, 2% 5xx",
             ["--rpm", str(TIER_RPM), "--tpm", str(TIER_TPM), "--latency", "1.0", "--jitter", "0.5",
              "--error-rate", "0.02", "--seed", "7"],
             {"rpm": TIER_RPM, "tpm": TIER_TPM}, TIER_RPM),
}
MAX_TOKENS = 256


def write_prompts(path: Path, n: int) -> None:
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"prompt": f"Benchmark question {i}: describe item {i * 7919 % 10007} in detail."})
                    + "\n")


def timed(cmd: list[str], env: dict[str, str] | None = None) -> tuple[int, float, float, float]:
    """Run `cmd`; (exit code, wall s, CPU s of that process, its peak RSS in MB)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode() if proc.stderr else ""
    if proc.returncode != 0:
        print(err[-3000:], file=sys.stderr)
    return proc.returncode, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def run_harvester(url: str, folder: Path, limits: dict) -> tuple[int, float, float, float, int]:
    job = {"name": "bench", "teacher": {"base_url": url, "model": "sim-teacher", "api_key_env": None,
                                        "provider": "simulator", "params": {"max_tokens": MAX_TOKENS},
                                        **({"limits": limits} if limits else {})},
           "prompts": [{"path": "prompts.jsonl"}], "retry": {"max_attempts": 10}}
    (folder / "job.yaml").write_text(yaml.safe_dump(job))
    rc, wall, cpu, rss = timed([sys.executable, "-m", "harvester.cli", "run", str(folder / "job.yaml"), "--quiet"])
    status = subprocess.run([sys.executable, "-m", "harvester.cli", "status", str(folder / "job.yaml"), "--json"],
                            capture_output=True, text=True)
    return rc, wall, cpu, rss, json.loads(status.stdout)["done"]


def run_sdk(url: str, folder: Path, concurrency: int) -> tuple[int, float, float, float, int]:
    out = folder / "sdk-done"
    rc, wall, cpu, rss = timed([sys.executable, __file__, "--sdk-client", url, str(folder / "prompts.jsonl"),
                                str(concurrency), str(out)])
    return rc, wall, cpu, rss, int(out.read_text()) if out.exists() else 0


async def sdk_client(url: str, prompts_path: str, concurrency: int) -> int:
    """The plain SDK: its own HTTP stack and retries, a semaphore for the in-flight cap."""
    import openai

    client = openai.AsyncOpenAI(base_url=url, api_key="sim")
    gate = asyncio.Semaphore(concurrency)
    answers: list[str | None] = []

    async def one(prompt: str) -> None:
        async with gate:
            try:
                r = await client.chat.completions.create(model="sim-teacher", max_tokens=MAX_TOKENS,
                                                         messages=[{"role": "user", "content": prompt}])
                answers.append(r.choices[0].message.content)
            except openai.OpenAIError:
                pass

    prompts = [json.loads(line)["prompt"] for line in Path(prompts_path).read_text().splitlines()]
    await asyncio.gather(*(one(p) for p in prompts))
    await client.close()
    return len(answers)


def measure(client: str, name: str, prompts: int, sdk_concurrency: int) -> dict:
    title, sim_flags, limits, rpm = SCENARIOS[name]
    sim, url = start_sim(sim_flags)
    folder = Path(tempfile.mkdtemp(prefix=f"bench-throughput-{name}-"))
    try:
        write_prompts(folder / "prompts.jsonl", prompts)
        if client == "harvester":
            rc, wall, cpu, rss, done = run_harvester(url, folder, limits)
        else:
            rc, wall, cpu, rss, done = run_sdk(url, folder, sdk_concurrency)
        s = stats(url)
    finally:
        sim.terminate()
        _, _, sim_usage = os.wait4(sim.pid, 0)
        shutil.rmtree(folder, ignore_errors=True)
    span = (s["last_request"] or 0) - (s["first_request"] or 0)
    requests = max(1, s["requests"])
    out = {"client": client, "done": f"{done}/{prompts}", "exit": rc, "requests": s["requests"],
           "requests_per_s": round(requests / span, 1) if span > 0 else None,
           "cpu_s_per_1000_requests": round(cpu / requests * 1000, 3),   # = ms per request
           "peak_rss_mb": round(rss, 1), "wall_s": round(wall, 2),
           "sim_cpu_ms_per_request": round((sim_usage.ru_utime + sim_usage.ru_stime) / requests * 1000, 3)}
    if rpm is not None:
        out |= {"utilization": round(prompts / (rpm / 60) / span, 3) if span > 0 else 0.0,
                "429s": s["rate_limited"], "span_s": round(span, 2), "ideal_s": round(prompts / (rpm / 60), 2)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=10_000)
    ap.add_argument("--only", default="zero,tier")
    ap.add_argument("--sdk-concurrency", type=int, default=600,
                    help="the SDK's semaphore (>= 500 in flight are needed for 500 requests/s at 1 s)")
    ap.add_argument("--clients", default="harvester,sdk")
    ap.add_argument("--sdk-client", nargs=4, metavar=("URL", "PROMPTS", "CONCURRENCY", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.sdk_client:
        url, path, conc, out = args.sdk_client
        Path(out).write_text(str(asyncio.run(sdk_client(url, path, int(conc)))))
        return
    keys = ("requests_per_s", "utilization", "429s", "cpu_s_per_1000_requests", "peak_rss_mb")
    for name in args.only.split(","):
        rows = {c: measure(c, name, args.prompts, args.sdk_concurrency) for c in args.clients.split(",")}
        print(f"\n== {SCENARIOS[name][0]}: {args.prompts} prompts", flush=True)
        for row in rows.values():
            print(json.dumps(row), flush=True)
        if "harvester" in rows and "sdk" in rows:
            h, k = rows["harvester"], rows["sdk"]
            ratios = {key: round(h[key] / k[key], 3) for key in keys if h.get(key) and k.get(key)}
            print("harvester / sdk:", json.dumps(ratios), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
