from __future__ import annotations

import random

import numpy as np
import pytest
from export_path import counts, export_reasons, near_dup_removals, pass1
from hypothesis import given, settings
from hypothesis import strategies as st

from harvester.export.dedup import NearDupConfig, NearDupIndex, batch_shingles, shingle_set
from harvester.export.filters import FilterConfig
from harvester.export.text import normalized, word_hashes
from harvester.hashing import normalize_text
from harvester.store.rows import Record


def add(index: NearDupIndex, docs: list[tuple[int, str]]) -> None:
    """Pass 1 of the index as the export feeds it: band signatures, then the rows' seqs with them."""
    index.add_signatures(np.array([s for s, _ in docs], np.int64), index.signatures([t for _, t in docs]))


def s_curve(s: float, bands: int, rows: int) -> float:
    """P(two rows with Jaccard s share at least one band) = 1 - (1 - s^r)^b."""
    return 1.0 - (1.0 - s**rows) ** bands


def rec(seq: int, answer: str, prompt: str = "Q?") -> Record:
    return Record(job_id=f"j{seq}", prompt_key="p", seq=seq, sample_index=0,
                  messages=[{"role": "user", "content": prompt}], answer=answer)


def true_jaccard(a: str, b: str, n: int = 5) -> float:
    """Reference Jaccard on word tuples, independent of the module's hashing."""
    def sh(t: str) -> set[tuple[str, ...]]:
        w = normalize_text(t).split()
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)} if len(w) >= n else {tuple(w)}
    x, y = sh(a), sh(b)
    return len(x & y) / len(x | y)


VOCAB = [f"w{i}" for i in range(5000)]


def mutate_to(rng: random.Random, words: list[str], target: float, tol: float = 0.03) -> str:
    """Replace words of a copy until its Jaccard with the original drops to target +- tol."""
    base = " ".join(words)
    while True:
        copy = list(words)
        for _ in range(1000):
            copy[rng.randrange(len(copy))] = rng.choice(VOCAB)
            j = true_jaccard(base, " ".join(copy))
            if j <= target + tol:
                break
        if abs(j - target) <= tol:
            return " ".join(copy)


# ------------------------------------------------------------------------------- exact
def test_exact_dedup_folds_case_space_punctuation() -> None:
    rows = [rec(0, "Paris is the capital."), rec(1, "  PARIS, is the   capital!! "),
            rec(2, "Paris is a capital."), rec(3, "Paris is the capital.", prompt="Other?")]
    why, d = export_reasons(rows, exact="prompt+answer")
    assert [r.seq for r, w in zip(rows, why) if w] == [1]
    assert counts(why) == {"exact_duplicate": 1} == d.dropped
    why, d = export_reasons(rows, exact="answer")
    assert [r.seq for r, w in zip(rows, why) if w] == [1, 3] and counts(why) == {"exact_duplicate": 2} == d.dropped


def test_exact_keys_are_128_bit_columns_not_hex() -> None:
    v = pass1([rec(0, "x")], exact="prompt+answer").verdicts
    assert v.key.dtype == np.uint64 and v.key.shape == (1, 2) and v.key.any()


# ---------------------------------------------------------------------------- near-dup
def test_s_curve_choice_meets_recall_bar() -> None:
    cfg = NearDupConfig()
    assert s_curve(cfg.threshold, cfg.bands, cfg.rows) >= 0.99
    assert s_curve(0.7, 20, 4) == pytest.approx(0.99588, abs=1e-4)


def test_batch_shingles_match_single_text_path() -> None:
    texts = ["one", "", "a b c d", "a b c d e", "x " * 30, "Hello, World! " * 7, "a b c d e f"]
    flat, offs = batch_shingles([word_hashes(t) for t in texts], 5)
    ends = list(offs[1:]) + [len(flat)]
    for t, s, e in zip(texts, offs, ends):
        assert np.array_equal(np.unique(flat[s:e]), shingle_set(t))


def test_planted_pairs_found_at_08_and_spared_at_05() -> None:
    rng = random.Random(7)
    docs, high, low = [], [], []
    for k in range(40):
        words = rng.sample(VOCAB, rng.randint(30, 120))
        target = 0.8 if k % 2 == 0 else 0.5
        copy = mutate_to(rng, words, target)
        a, b = len(docs), len(docs) + 1
        docs += [(a, " ".join(words)), (b, copy)]
        (high if target == 0.8 else low).append((a, b))
    removed = near_dup_removals(docs)
    assert all(b in removed and removed[b] == a for a, b in high)
    assert not any(a in removed or b in removed for a, b in low)


def test_short_texts_exact_path_without_collapsing() -> None:
    docs = list(enumerate(["Yes.", "yes", "No.", "the cat sat", "The cat sat down", "the cat sat",
                           "Yes, indeed.", "", "   ", "the cat sat down today okay"]))
    removed = near_dup_removals(docs)
    assert removed == {1: 0, 5: 3, 8: 7}   # equal after normalization only; distinct ones all kept


def test_representative_is_lowest_seq_whatever_the_add_order() -> None:
    rng = random.Random(3)
    base = rng.sample(VOCAB, 60)
    texts = [" ".join(base)] + [mutate_to(rng, base, 0.9) for _ in range(5)]
    seqs = [50, 7, 90, 13, 44, 21]
    expected = None
    for _ in range(6):
        pairs = list(zip(seqs, texts))
        rng.shuffle(pairs)
        index = NearDupIndex()
        for k in range(0, len(pairs), 2):        # pass 1 in any order, in chunks
            add(index, pairs[k:k + 2])
        for s, t in sorted(pairs):               # pass 2 in seq order
            index.resolve(s, t)
        got = index.clusters()
        expected = expected or got
        assert got == expected
    assert expected is not None and 7 in expected          # lowest seq is the representative


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.text(alphabet=st.characters(max_codepoint=127))))
def test_ascii_fast_path_equals_normalize_text(text: str) -> None:
    assert normalized(text) == normalize_text(text)


def test_empty_index() -> None:
    index = NearDupIndex()
    index.finalize()
    assert index.n_pairs == 0 and index.clusters() == {}
    assert near_dup_removals([]) == {}


def test_resolve_requires_the_same_rows_in_seq_order() -> None:
    index = NearDupIndex()
    add(index, [(2, "a b c")])
    add(index, [(1, "d e f")])
    with pytest.raises(ValueError):
        index.resolve(2, "a b c")
    with pytest.raises(ValueError):
        dup = NearDupIndex()
        add(dup, [(1, "x")])
        add(dup, [(1, "y")])
        dup.finalize()


def test_big_bucket_keeps_one_and_no_quadratic_pairs() -> None:
    docs = [(i, "I would be happy to help you with that question today") for i in range(3000)]
    index = NearDupIndex(NearDupConfig(max_fanout=4))
    add(index, docs)
    for s, t in docs:
        index.resolve(s, t)
    assert len(index.removed) == 2999 and set(index.kept_by) == {0}
    assert index.n_pairs <= 4 * 3000


def _brute_force_check(texts: list[str], removed: dict[int, int], thr: float = 0.7) -> float:
    """Asserts zero false removals; returns recall over pairs with J >= thr."""
    kept = [i for i in range(len(texts)) if i not in removed]
    for r, k in removed.items():
        assert k not in removed and k < r
        assert true_jaccard(texts[r], texts[k]) >= thr
        # and k is the lowest-seq kept doc that qualifies
        assert not any(true_jaccard(texts[r], texts[o]) >= thr for o in kept if o < k)
    hits = total = 0
    for i in range(len(texts)):
        for j in range(i + 1, len(texts)):
            if true_jaccard(texts[i], texts[j]) >= thr:
                total += 1
                hits += i in removed or j in removed
    return hits / total if total else 1.0


def test_zero_false_removals_on_random_corpus_brute_force() -> None:
    rng = random.Random(11)
    texts: list[str] = []
    for _ in range(500):
        if texts and rng.random() < 0.4:        # a mutated copy of an earlier doc
            words = rng.choice(texts).split()
            for _ in range(rng.randint(0, max(1, len(words) // 6))):
                words[rng.randrange(len(words))] = rng.choice(VOCAB[:300])
            texts.append(" ".join(words))
        else:
            texts.append(" ".join(rng.choices(VOCAB[:300], k=rng.randint(1, 40))))
    removed = near_dup_removals(list(enumerate(texts)))
    assert removed
    assert _brute_force_check(texts, removed) >= 0.97


def test_record_steps_two_passes_and_counts() -> None:
    rows = [rec(0, "alpha beta gamma delta epsilon zeta eta theta"),
            rec(1, "alpha beta gamma delta epsilon zeta eta theta iota"),
            rec(2, "something entirely different from the others here")]
    why, d = export_reasons(rows, near=NearDupConfig())
    assert list(zip([r.seq for r in rows], why)) == [(0, None), (1, "near_duplicate"), (2, None)]
    assert d.near is not None and counts(why) == {"near_duplicate": 1} and d.near.clusters() == {0: [1]}
    # pass 2 straight from the store: rows dropped in pass 1 (never added to the index) are passed over
    rows.append(rec(3, "As an AI language model, I cannot assist with that."))
    why, d = export_reasons(rows, filters=FilterConfig(), near=NearDupConfig())
    assert why == [None, "near_duplicate", None, "refusal"]
    assert d.near is not None and 3 not in d.near.removed and len(d.near.removed) == 1
    # prompt + answer: same answers to different prompts are no longer near-dups
    rows[1].messages = [{"role": "user", "content": "a completely different question asked here"}]
    why, _ = export_reasons(rows[:3], near=NearDupConfig(fields="prompt+answer"))
    assert why == [None, None, None]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b", "c", "d", "e", "f"]), max_size=14), max_size=30))
def test_property_every_removal_has_a_verified_kept_neighbor(word_lists: list[list[str]]) -> None:
    texts = [" ".join(w) for w in word_lists]
    removed = near_dup_removals(list(enumerate(texts)))
    for r, k in removed.items():
        assert k not in removed and k < r and true_jaccard(texts[r], texts[k]) >= 0.7
