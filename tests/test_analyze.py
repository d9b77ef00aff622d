"""Pass 1 as columns: per-row verdicts on any slice, and the order-dependent decisions over them."""

from __future__ import annotations

import numpy as np
import pytest

from harvester.export.analyze import CONTAMINATED, EXACT, KEEP, Analyzer, Verdicts, decide
from harvester.export.decontam import Decontaminator
from harvester.export.dedup import NearDupConfig, NearDupIndex
from harvester.export.filters import FilterConfig
from harvester.store.rows import Record

LONG = "the quick brown fox jumps over the lazy dog while the farmer sleeps under an old oak tree " * 2
EVAL = "a passage from the benchmark that no training row should contain word for word at all ever"


def rec(seq: int, answer: str, prompt: str = "Tell me something.") -> Record:
    return Record(job_id=f"j{seq}", prompt_key="p", seq=seq, sample_index=0,
                  messages=[{"role": "user", "content": prompt}], answer=answer)


def rows() -> list[Record]:
    return [rec(0, LONG), rec(1, "As an AI language model, I cannot assist with that."),
            rec(2, LONG.upper()),                                  # exact duplicate of 0
            rec(3, EVAL), rec(4, EVAL + "!"),                      # 4: exact duplicate of 3, also contaminated
            rec(5, LONG + " indeed"),                              # near duplicate of 0
            rec(6, "Short and distinct."), rec(8, "<noinput>")]


def analyzer() -> Analyzer:
    return Analyzer(filters=FilterConfig(), decontaminator=Decontaminator({"bench": [EVAL]}, n=13),
                    near=NearDupConfig(), batch=3)


def test_a_slice_at_a_time_gives_the_same_columns_as_the_whole() -> None:
    a, recs = analyzer(), rows()
    whole = a.analyze(recs)
    parts = Verdicts.concat([a.analyze(recs[:2]), a.analyze(recs[2:5]), a.analyze(recs[5:])], near=True)
    for v in (whole, parts):
        assert v.seq.tolist() == [0, 1, 2, 3, 4, 5, 6, 8]
        assert [v.reason(i) for i in range(len(v))] == [None, "refusal", None, None, None, None, None, "placeholder"]
        assert v.hits == {3: ("bench",), 4: ("bench",)}
        assert (v.key[0] == v.key[2]).all() and (v.key[3] == v.key[4]).all() and not (v.key[0] == v.key[5]).all()
        bands = np.concatenate(v.bands, axis=1)
        assert bands.shape == (20, 8) and not bands[:, [1, 7]].any()   # filtered rows get no signature
        assert (bands[:, 0] == NearDupIndex(NearDupConfig()).signatures([LONG])[:, 0]).all()
    assert len(whole.bands) == 1 and len(parts.bands) == 3
    for column in ("seq", "code", "key"):
        assert np.array_equal(getattr(whole, column), getattr(parts, column)), column
    assert np.array_equal(np.concatenate(whole.bands, axis=1), np.concatenate(parts.bands, axis=1))


def test_decide_keeps_the_first_of_each_group_and_counts_each_drop_once() -> None:
    a = analyzer()
    d = decide(a.analyze(rows()), exact=True, decontaminate=True, near=a.near)
    v = d.verdicts
    assert v.code.tolist()[:5] == [KEEP, 1 + 6, EXACT, CONTAMINATED, EXACT]
    assert v.reason(3) == "contaminated:bench"
    assert d.decontamination == {"bench": 1}                      # row 4 was already gone as a duplicate
    assert d.dropped == {"refusal": 1, "placeholder": 1, "exact_duplicate": 2, "contaminated:bench": 1}
    assert d.steps == [("quality filters", 6, 2), ("exact dedup", 4, 2), ("decontamination", 3, 1)]
    assert d.near is not None and d.near.resolve(0, LONG) is None and d.near.resolve(5, LONG + " indeed") == 0


def test_decide_refuses_verdicts_out_of_order() -> None:
    a = analyzer()
    v = Verdicts.concat([a.analyze(rows()[4:]), a.analyze(rows()[:4])], near=True)
    with pytest.raises(ValueError, match="ascending"):
        decide(v, exact=True, decontaminate=False, near=None)
