from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from export_path import counts, export_reasons, pass1

from harvester.export.decontam import Decontaminator, load_eval_texts
from harvester.export.text import word_hashes
from harvester.store.rows import Record

GSM = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips "
       "in May. How many clips did Natalia sell altogether in April and May?")
MMLU = ("Which of the following statements about the mitochondrial electron transport chain is "
        "correct when oxygen is absent from the cell and fermentation takes over?")


def rec(seq: int, prompt: str, answer: str) -> Record:
    return Record(job_id=f"j{seq}", prompt_key="p", seq=seq, sample_index=0,
                  messages=[{"role": "user", "content": prompt}], answer=answer)


def hits_of(decon: Decontaminator, text: str) -> list[str]:
    """The eval sets one text hits, by the lookup the export's first pass makes."""
    return decon.batch_hits([word_hashes(text)])[0]


def record_hits(decon: Decontaminator, r: Record) -> list[str]:
    """The eval sets a row hits, as the export's first pass sees it (prompt + answer)."""
    return list(pass1([r], decontaminator=decon).verdicts.hits.get(0, ()))


@pytest.fixture
def decon() -> Decontaminator:
    return Decontaminator({"gsm8k": [GSM], "mmlu": [MMLU, "too short to matter"]})


def test_overlap_inside_answer_is_caught(decon: Decontaminator) -> None:
    words = GSM.split()
    r = rec(0, "Tell me a story.", "Once upon a time " + " ".join(words[3:16]).upper() + "!!! The end.")
    assert record_hits(decon, r) == ["gsm8k"]


def test_overlap_crossing_prompt_to_answer_is_caught(decon: Decontaminator) -> None:
    words = MMLU.split()
    r = rec(1, "Quiz: " + " ".join(words[:7]), " ".join(words[7:14]) + " ... answer: B")
    assert hits_of(decon, r.prompt_text) == [] and hits_of(decon, r.answer) == []   # neither alone
    assert record_hits(decon, r) == ["mmlu"]


def test_twelve_words_do_not_match(decon: Decontaminator) -> None:
    words = GSM.split()
    assert hits_of(decon, "x " + " ".join(words[:12]) + " y") == []
    assert hits_of(decon, " ".join(words[:13])) == ["gsm8k"]


def test_no_hit_on_unrelated_text_and_short_eval_items(decon: Decontaminator) -> None:
    assert hits_of(decon, "The mitochondria is the powerhouse of the cell, as everyone knows well.") == []
    assert hits_of(decon, "this is too short to matter at all") == []   # < min_words: ignored
    assert decon.sizes["mmlu"] == len(MMLU.split()) - 12


def test_short_eval_item_matched_whole() -> None:
    d = Decontaminator({"trivia": ["What is the name of the longest river in Africa?"]})  # 10 words
    assert hits_of(d, "Q: what is the name of the longest river in africa? A: the Nile") == ["trivia"]
    assert hits_of(d, "what is the name of the longest river in europe") == []


def test_the_export_drops_with_reasons_and_counts_hits_per_set(decon: Decontaminator) -> None:
    rows = [rec(0, "Hi", GSM), rec(1, "Hi", "Hello there, how can I help you today?"),
            rec(2, MMLU, "B"), rec(3, GSM + " " + MMLU, "ok"), rec(4, "Hi", GSM)]
    why, d = export_reasons(rows, decontaminator=decon, batch=2)   # 3 lookups, order kept
    assert why == ["contaminated:gsm8k", None, "contaminated:mmlu",
                   "contaminated:gsm8k+mmlu", "contaminated:gsm8k"]
    assert d.decontamination == {"gsm8k": 3, "mmlu": 2}
    assert counts(why) == d.dropped == {"contaminated:gsm8k": 2, "contaminated:mmlu": 1,
                                        "contaminated:gsm8k+mmlu": 1}


def test_load_eval_texts_jsonl_json_parquet(tmp_path: Path) -> None:
    jl = tmp_path / "e.jsonl"
    jl.write_text(json.dumps({"question": "Q one", "choices": ["A", "B"], "label": 1}) + "\n\n"
                  + json.dumps({"question": "Q two", "meta": {"src": "x"}}) + "\n")
    assert list(load_eval_texts(jl)) == ["Q one\nA\nB", "Q two\nx"]
    js = tmp_path / "e.json"
    js.write_text(json.dumps([{"q": "a"}, {"q": "b"}]))
    assert list(load_eval_texts(js)) == ["a", "b"]
    pqf = tmp_path / "e.parquet"
    pq.write_table(pa.table({"q": ["p1", "p2"], "a": ["r1", None], "n": [1, 2]}), pqf)
    assert list(load_eval_texts(pqf)) == ["p1\nr1", "p2"]
    with pytest.raises(ValueError):
        list(load_eval_texts(tmp_path / "e.csv"))
    d = Decontaminator({"file": load_eval_texts(jl)}, min_words=2)
    assert hits_of(d, "q one a b") == ["file"]


def test_hit_deep_inside_a_long_text(decon: Decontaminator) -> None:
    filler = " ".join(f"filler{i % 97}" for i in range(6000))      # grows the power tables
    words = GSM.split()
    assert hits_of(decon, filler + " " + " ".join(words[-13:]) + " " + filler) == ["gsm8k"]
    assert hits_of(decon, filler) == []
