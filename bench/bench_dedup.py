"""Near-dup benchmark: ours (two-pass MinHash LSH + exact verification) vs datasketch.

    python bench/bench_dedup.py [--rows 100000 1000000] [--datasketch-rows 100000 1000000]

Each (implementation, size) runs in a fresh subprocess, so peak RSS (ru_maxrss) is its own.
The corpus is regenerated per document from (seed, id), never held in memory: answer-like
sentences over a Zipf vocabulary of 4,000 words, ~8% short texts (< 5 words), and 15% planted
copies of a random EARLIER original mutated (word replacements/insertions) towards a Jaccard
drawn from U(0.5, 1.0); each planted pair's exact word 5-gram Jaccard is computed with Python
sets. Pairs at J >= 0.7 must be caught (recall); copies at J < 0.7 are distractors.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import resource
import subprocess
import sys
import time
from array import array
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
if ROOT not in sys.path:
    sys.path.append(ROOT)

THRESHOLD = 0.7
SHINGLE = 5
COPY_RATE = 0.15
BUCKETS = (0.0, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)          # planted-pair Jaccard buckets (lower bounds)


class Corpus:
    """Document i is a pure function of (seed, i)."""

    def __init__(self, n: int, seed: int) -> None:
        self.n, self.seed = n, seed
        rng = random.Random(seed)
        syll = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "ze", "po", "an", "el", "is", "or", "ut"]
        words: set[str] = set()
        while len(words) < 4000:
            words.add("".join(rng.choice(syll) for _ in range(rng.randint(1, 4))))
        self.vocab = sorted(words)
        rng.shuffle(self.vocab)
        self.cum = list(__import__("itertools").accumulate(1.0 / (r + 10) for r in range(len(self.vocab))))
        self.pairs_i, self.pairs_base, self.pairs_j = array("q"), array("q"), array("d")

    def _rng(self, i: int) -> random.Random:
        return random.Random(self.seed * 1_000_003 + i)

    def _is_copy(self, i: int, rng: random.Random) -> bool:
        return i >= 100 and rng.random() < COPY_RATE      # always the first draw of doc i

    def words(self, i: int) -> list[str]:
        rng = self._rng(i)
        if not self._is_copy(i, rng):
            n = rng.randint(1, 4) if rng.random() < 0.08 else min(600, max(5, int(math.exp(rng.gauss(4.2, 0.7)))))
            return rng.choices(self.vocab, cum_weights=self.cum, k=n)
        base = self.base_of(i, rng)
        words = list(self.words(base))
        if len(words) >= SHINGLE:
            target = rng.uniform(0.5, 1.0)
            shingles = len(words) - SHINGLE + 1
            for _ in range(round(shingles * (1 - target) / (SHINGLE * (1 + target)))):
                pos = rng.randrange(len(words))
                if rng.random() < 0.7:
                    words[pos] = rng.choice(self.vocab)
                else:
                    words.insert(pos, rng.choice(self.vocab))
        return words                                     # short bases: copied as-is (J = 1)

    def base_of(self, i: int, rng: random.Random) -> int:
        base = rng.randrange(i)
        while self._is_copy(base, self._rng(base)):      # copies of originals only
            base -= 1
        return base

    def text(self, i: int, record: bool = False) -> str:
        """Rendered with sentence case and punctuation (normalization folds them back)."""
        words = self.words(i)
        rng = self._rng(i + 7_777_777_777)
        out, k = [], 0
        while k < len(words):
            s = words[k:k + rng.randint(6, 18)]
            k += len(s)
            out.append(s[0].capitalize() + " " + " ".join(s[1:]) + rng.choice([".", ".", "!", ","]))
        if record:
            rng = self._rng(i)
            if self._is_copy(i, rng):
                base = self.base_of(i, rng)
                self.pairs_i.append(i)
                self.pairs_base.append(base)
                self.pairs_j.append(true_jaccard(self.words(base), words))
        return " ".join(out).replace(" .", ".")


def true_jaccard(a: list[str], b: list[str]) -> float:
    def sh(w: list[str]) -> set[tuple[str, ...]]:
        return {tuple(w[k:k + SHINGLE]) for k in range(len(w) - SHINGLE + 1)} if len(w) >= SHINGLE else {tuple(w)}
    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


def rss_now() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def chunks(corpus: Corpus, record: bool, size: int = 4096):
    for start in range(0, corpus.n, size):
        yield [(i, corpus.text(i, record)) for i in range(start, min(corpus.n, start + size))]


def evaluate(corpus: Corpus, removed: dict[int, list[int]]) -> dict:
    """removed: doc -> the kept docs it was removed for (ours: 1 verified; datasketch: its
    LSH candidates). A removal is false if none of them has true Jaccard >= threshold."""
    false = sum(1 for r, ks in removed.items()
                if not any(k not in removed and true_jaccard(corpus.words(r), corpus.words(k)) >= THRESHOLD
                           for k in ks))
    hi = lo = found = distractor_removed = 0
    buckets = {k: [0, 0] for k in BUCKETS}               # J bucket -> [pairs, pairs caught]
    for i, b, j in zip(corpus.pairs_i, corpus.pairs_base, corpus.pairs_j):
        k = max(x for x in BUCKETS if j >= x - 1e-12)
        buckets[k][0] += 1
        buckets[k][1] += i in removed or b in removed
        if j >= THRESHOLD:
            hi += 1
            found += i in removed or b in removed
        else:
            lo += 1
            distractor_removed += i in removed
    return {"recall": found / max(hi, 1), "pairs_hi": hi, "pairs_lo": lo, "false_removals": false,
            "distractors_removed": distractor_removed, "removed": len(removed),
            "by_j": {(f"{k:.1f}-{BUCKETS[n + 1]:.1f}" if k < 1 else "1.0"): v
                     for n, (k, v) in enumerate(buckets.items())}}


def s_curve(s: float, bands: int, rows: int) -> float:
    """P(two rows with Jaccard s share at least one band) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - s**rows) ** bands


def run_ours(n: int, seed: int) -> dict:
    import numpy as np

    from harvester.export.dedup import NearDupIndex
    corpus = Corpus(n, seed)
    base = rss_now()
    index = NearDupIndex()
    t_add = t_res = 0.0
    words = pass1_bytes = 0
    for chunk in chunks(corpus, record=True):
        words += sum(t.count(" ") + 1 for _, t in chunk)
        t0 = time.perf_counter()
        for k in range(0, len(chunk), 1024):      # pass 1 as the export runs it: signatures per batch
            part = chunk[k:k + 1024]
            seqs = np.fromiter((s for s, _ in part), np.int64, len(part))
            bands = index.signatures([t for _, t in part])
            index.add_signatures(seqs, bands)
            pass1_bytes += seqs.nbytes + bands.nbytes
        t_add += time.perf_counter() - t0
    t0 = time.perf_counter()
    index.finalize()
    t_fin = time.perf_counter() - t0
    for chunk in chunks(corpus, record=False):
        t0 = time.perf_counter()
        for seq, text in chunk:
            index.resolve(seq, text)
        t_res += time.perf_counter() - t0
    peak = peak_rss() - base
    removed = {r: [k] for r, k in zip(index.removed, index.kept_by)}
    total = t_add + t_fin + t_res
    return {"impl": "ours", "n": n, "rows_s": n / total, "pass1_s": t_add, "finalize_s": t_fin,
            "pass2_s": t_res, "pass1_B_row": pass1_bytes / n,
            "rss_growth_B_row": peak / n, "peak_rss_MB": peak_rss() / 2**20, "peak_minus_base_MB": peak / 2**20,
            "candidate_pairs": index.n_pairs, "verified": index.n_verified, "avg_words": words / n,
            **evaluate(corpus, removed)}


def run_datasketch(n: int, seed: int) -> dict:
    from datasketch import MinHash, MinHashLSH

    from harvester.export.text import normalized_words  # same (fast) normalization as ours
    corpus = Corpus(n, seed)
    base = rss_now()
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=128)     # default num_perm and weights
    removed: dict[int, list[int]] = {}
    t_all = 0.0
    for chunk in chunks(corpus, record=True):
        t0 = time.perf_counter()
        for seq, text in chunk:
            w = normalized_words(text)
            sh = [b" ".join(w[k:k + SHINGLE]) for k in range(len(w) - SHINGLE + 1)] \
                if len(w) >= SHINGLE else [b" ".join(w)]
            m = MinHash(num_perm=128)
            m.update_batch(sh)
            hits = lsh.query(m)
            if hits:
                removed[seq] = sorted(hits)        # unverified: any LSH candidate = duplicate
            else:
                lsh.insert(seq, m, check_duplication=False)
        t_all += time.perf_counter() - t0
    peak = peak_rss() - base
    return {"impl": "datasketch", "n": n, "rows_s": n / t_all, "bands_rows": f"{lsh.b}x{lsh.r}",
            "rss_growth_B_row": peak / n, "peak_rss_MB": peak_rss() / 2**20, "peak_minus_base_MB": peak / 2**20,
            **evaluate(corpus, removed)}


def run_steps(n: int, seed: int) -> dict:
    """Throughput of the other pure steps on the same corpus (filters, exact dedup, decontam
    against 5,000 eval texts), as the export's first pass runs them (one process), generation excluded."""
    from harvester.export.analyze import Analyzer, Verdicts, decide
    from harvester.export.decontam import Decontaminator
    from harvester.export.filters import FilterConfig
    from harvester.store.rows import Record
    corpus = Corpus(n, seed)
    evals = Corpus(5000, seed + 1)
    analyzer = Analyzer(filters=FilterConfig(), exact="prompt+answer",
                        decontaminator=Decontaminator({"eval": (evals.text(i) for i in range(5000))}))
    parts, t = [], 0.0
    for chunk in chunks(corpus, record=False):
        recs = [Record(job_id=str(i), prompt_key="p", seq=i, sample_index=0, finish_reason="stop",
                       messages=[{"role": "user", "content": f"Question {i}: tell me about {txt[:40]}"}],
                       answer=txt) for i, txt in chunk]
        t0 = time.perf_counter()
        parts.append(analyzer.analyze(recs))
        t += time.perf_counter() - t0
    t0 = time.perf_counter()
    decisions = decide(Verdicts.concat(parts, near=False), exact=True, decontaminate=True)
    t += time.perf_counter() - t0
    return {"impl": "steps", "n": n, "rows_s": n / t, "dropped": dict(decisions.dropped)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--datasketch-rows", type=int, nargs="*", default=[100_000])
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--worker", choices=["ours", "datasketch", "steps"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        fn = {"ours": run_ours, "datasketch": run_datasketch, "steps": run_steps}[args.worker]
        print(json.dumps(fn(args.rows[0], args.seed)))
        return
    from harvester.export.dedup import NearDupConfig
    cfg = NearDupConfig()
    print(f"ours: b={cfg.bands} r={cfg.rows} ({cfg.bands * cfg.rows} perms), threshold {cfg.threshold}; "
          "S-curve P(candidate) at J=0.5/0.6/0.7/0.8: "
          + "/".join(f"{s_curve(s, cfg.bands, cfg.rows):.4f}" for s in (0.5, 0.6, 0.7, 0.8)))
    print("datasketch: MinHashLSH(threshold=0.7), default num_perm=128 and weights (0.5, 0.5); "
          "S-curve at J=0.7 for its b=14 r=9: " + f"{s_curve(0.7, 14, 9):.4f}")
    results = []
    jobs = [("ours", n) for n in args.rows] + [("datasketch", n) for n in args.datasketch_rows]
    jobs.append(("steps", min(args.rows)))
    for impl, n in jobs:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--worker", impl, "--rows", str(n), "--seed", str(args.seed)],
                             check=True, capture_output=True, text=True).stdout
        res = json.loads(out.strip().splitlines()[-1])
        res["wall_s"] = time.perf_counter() - t0
        results.append(res)
        print(f"  done {impl} n={n:,} in {res['wall_s']:.0f}s", flush=True)
    head = (f"{'impl':<10} {'rows':>9} {'recall>=.7':>10} {'false rm':>8} {'distr rm':>8} {'removed':>8} "
            f"{'rows/s':>8} {'pass-1 B/row':>12} {'RSS+ MB':>8} {'RSS+ B/row':>10}")
    steps = [r for r in results if r["impl"] == "steps"]
    results = [r for r in results if r["impl"] != "steps"]
    print("\n" + head + "\n" + "-" * len(head))
    for r in results:
        print(f"{r['impl']:<10} {r['n']:>9,} {r['recall']:>10.4f} {r['false_removals']:>8} "
              f"{r['distractors_removed']:>8} {r['removed']:>8,} {r['rows_s']:>8,.0f} "
              f"{r.get('pass1_B_row', float('nan')):>12.0f} {r['peak_minus_base_MB']:>8.1f} "
              f"{r['rss_growth_B_row']:>10.0f}")
    print("\nshare of planted pairs with one side removed, by exact Jaccard [lo-hi) (pairs in bucket):")
    for r in results:
        print(f"  {r['impl']:<10} {r['n']:>9,}  " + "  ".join(
            f"[{k}: {c / t:.3f} ({t:,})]" if t else f"[{k}: -]" for k, (t, c) in r["by_j"].items()))
    for r in results:
        if r["impl"] == "ours":
            print(f"ours n={r['n']:,}: pass1 {r['pass1_s']:.1f}s, finalize {r['finalize_s']:.1f}s, "
                  f"pass2 {r['pass2_s']:.1f}s; "
                  f"{r['candidate_pairs']:,} candidate pairs, {r['verified']:,} exact Jaccards; "
                  f"pass-1 arrays {r['pass1_B_row']:.0f} B/row; avg {r['avg_words']:.0f} words/row; "
                  f"planted pairs: {r['pairs_hi']:,} at J>=0.7, {r['pairs_lo']:,} distractors")
    ours = {r["n"]: r for r in results if r["impl"] == "ours"}
    if len(ours) >= 2:
        a, b = sorted(ours)[0], sorted(ours)[-1]
        growth = (ours[b]["peak_minus_base_MB"] - ours[a]["peak_minus_base_MB"]) * 2**20 / (b - a)
        print(f"ours peak-RSS growth per row from {a:,} to {b:,} rows: {growth:.0f} B/row")
    ds = {r["n"]: r for r in results if r["impl"] == "datasketch"}
    if len(ds) >= 2:
        a, b = sorted(ds)[0], sorted(ds)[-1]
        growth = (ds[b]["peak_minus_base_MB"] - ds[a]["peak_minus_base_MB"]) * 2**20 / (b - a)
        print(f"datasketch peak-RSS growth per row from {a:,} to {b:,} rows: {growth:.0f} B/row")
    for r in steps:
        print(f"filters + exact dedup + decontam (13-grams vs 5,000 eval texts), pass 1 in one process, n={r['n']:,}: "
              f"{r['rows_s']:,.0f} rows/s; drops {r['dropped']}")
    for n in sorted(set(ours) & set(ds)):
        o, d = ours[n], ds[n]
        print(f"ratios at {n:,} rows (ours / datasketch): recall {o['recall'] / d['recall']:.3f}, "
              f"speed {o['rows_s'] / d['rows_s']:.2f}x, "
              f"RSS per row {o['rss_growth_B_row'] / d['rss_growth_B_row']:.3f}, "
              f"false removals {o['false_removals']} vs {d['false_removals']}")


if __name__ == "__main__":
    main()
