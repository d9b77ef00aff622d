"""What keeping the teacher's logprobs costs: bytes per answer token in the store and in the export, at
k = 5 and k = 20 top alternatives, and the export's rows/s with and without them, side by side.

    python bench/bench_logprobs.py [--rows 5000]

Three stores of the same answers (the simulator's texts and its deterministic float32 logprobs, as a
float32 server such as vLLM sends them) are filled through the store's API (not timed): without logprobs,
with top-5 and with top-20. Each is then exported by `Harvester.export()` in this process, one after the
other (CPU seconds from getrusage: less noisy than wall time on a shared machine). Printed: the packed
blob's bytes per token and per value (a token's logprob or one alternative: text + float), against the
JSON the teacher sent; the SQLite file's and the export's (Parquet, hf/) growth per token over the store
without logprobs; and export rows/s (CPU), with the ratio to the export without logprobs.
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def job_dict(folder: Path, k: int | None) -> dict:
    params = {} if k is None else {"logprobs": True, "top_logprobs": k}
    return {"name": "bench", "teacher": {"model": "m", "api_key_env": None, "params": params},
            "prompts": [{"path": str(folder.parent / "prompts.jsonl")}], "store": f"sqlite:///{folder}/bench.db",
            "export": {"out": str(folder / "out"), "format": "openai", "workers": 1,
                       "dedup": False, "filters": {"enabled": False}}}


def load(folder: Path, k: int | None, n: int) -> dict[str, int]:
    """Plan n prompts and record an answer for each (with its logprobs at top-k), through the store's API."""
    from harvester import Harvester
    from harvester.config import job_from_dict
    from harvester.logprobs import pack
    from harvester.prompts import plan
    from harvester.providers.chat import read_logprobs
    from harvester.sim import answer_for, count_tokens
    from harvester.sim_shapes import logprobs_for
    from harvester.store import AnswerRow

    folder.mkdir()
    job = job_from_dict(job_dict(folder, k), base=folder)
    h = Harvester(job)
    h.plan()
    sizes = {"tokens": 0, "values": 0, "json": 0, "blob": 0}
    rows = []
    for spec in plan(job):
        text = answer_for(spec.request["messages"], None, spec.seq)[0]
        blob = None
        if k is not None:
            sent = logprobs_for(text, k, str(spec.seq))
            blob = pack(read_logprobs({"logprobs": {"content": sent}}) or [])
            sizes["json"] += len(json.dumps({"content": sent}).encode())
            sizes["blob"] += len(blob)
            sizes["values"] += sum(1 + len(t["top_logprobs"]) for t in sent)
        sizes["tokens"] += count_tokens(text)
        rows.append(AnswerRow(spec.id, 1, "m", text, "stop", 12, count_tokens(text), 0.1, None, None, blob))
        if len(rows) == 2000:
            h.store.record([], rows, [])
            rows = []
    h.store.record([], rows, [])
    h.close()
    return sizes


def export(folder: Path, k: int | None) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one export."""
    from harvester import Harvester
    from harvester.config import job_from_dict

    h = Harvester(job_from_dict(job_dict(folder, k), base=folder))
    cpu0, wall0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    h.export()
    cpu1, wall1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    h.close()
    return cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime, wall1 - wall0


def size(path: Path) -> int:
    return path.stat().st_size if path.is_file() else sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=5000)
    args = parser.parse_args()
    import datasets  # noqa: F401  (its import is not the export's cost)

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        with (root / "prompts.jsonl").open("w") as f:
            for i in range(args.rows):
                f.write(json.dumps({"prompt": f"Question {i}: explain topic {i * 7919 % 1000} briefly."}) + "\n")
        settings = {"none": None, "k=5": 5, "k=20": 20}
        results = {}
        for name, k in settings.items():
            folder = root / name.replace("=", "")
            sizes = load(folder, k, args.rows)
            export(folder, k)    # a warm-up: the first export pays imports and caches
            cpu, wall = export(folder, k)
            results[name] = {**sizes, "cpu": cpu, "wall": wall, "db": size(folder / "bench.db"),
                             "parquet": size(folder / "out" / "parquet"), "hf": size(folder / "out" / "hf")}
        base = results["none"]
        tokens = base["tokens"]
        print(f"{args.rows:,} answers, {tokens:,} answer tokens ({tokens / args.rows:.0f} per answer)\n")
        print(f"{'':8}{'JSON sent':>11}{'packed':>9}{'packed':>10}{'SQLite':>9}{'Parquet':>9}{'hf/':>9}"
              f"{'export':>11}{'vs none':>9}")
        print(f"{'':8}{'B/token':>11}{'B/token':>9}{'B/value':>10}{'B/token':>9}{'B/token':>9}{'B/token':>9}"
              f"{'rows/s CPU':>11}{'':>9}")
        for name, r in results.items():
            def per(key: str, r: dict = r) -> float:   # growth over the store without logprobs
                return (r[key] - base[key]) / tokens
            rate = args.rows / r["cpu"]
            values = f"{r['blob'] / r['values']:10.2f}" if r["values"] else f"{'-':>10}"
            print(f"{name:8}{r['json'] / tokens:11.1f}{r['blob'] / tokens:9.1f}{values}{per('db'):9.1f}"
                  f"{per('parquet'):9.1f}{per('hf'):9.1f}{rate:11,.0f}{rate / (args.rows / base['cpu']):9.2f}")
        print("\n(B/value: bytes per logprob kept, the token's own and each alternative's, text and float; the "
              "SQLite, Parquet and hf/ columns are the growth over the export without logprobs)")


if __name__ == "__main__":
    main()
