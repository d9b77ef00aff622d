from __future__ import annotations

from collections import Counter
from dataclasses import replace

import pytest
from export_path import counts, export_reasons
from hypothesis import given, settings
from hypothesis import strategies as st

from harvester.export.filters import REASONS, FilterConfig, compile_phrases, filter_reason, find_phrase, has_char_run
from harvester.store.rows import Record

CFG = FilterConfig()


def rec(answer: str, prompt: str = "What is the capital of France?", finish: str | None = "stop",
        **kw) -> Record:
    return Record(job_id="j", prompt_key="p", seq=0, sample_index=0,
                  messages=[{"role": "system", "content": "Be brief."},
                            {"role": "user", "content": prompt}],
                  answer=answer, finish_reason=finish, **kw)


LOREM = ("Paris is the capital and most populous city of France, with an estimated population "
         "of two million residents, and it has been a major centre of finance and diplomacy.")

# (reason, positive example, close negative that must be kept)
CASES = [
    ("truncated", rec("Paris is the", finish="length"), rec("Paris is the capital.", finish="stop")),
    ("empty", rec(" \n\t "), rec(".")),
    ("placeholder", rec("  N/A "), rec("N/A means not applicable; here the answer is Paris.")),
    ("placeholder", rec("<nooutput>"), rec("Use <nooutput> as a tag when nothing applies.")),
    ("list_numbering", rec("2. Then preheat the oven to 200C."), rec("1. Preheat the oven to 200C.")),
    ("list_numbering", rec("Steps:\n1. Mix the flour\n2. Bake it\n3."),
     rec("The number of steps is:\n3.")),
    ("list_numbering", rec("3) and finally serve it."), rec("3.14 is an approximation of pi.")),
    ("list_numbering", rec("  7. Season to taste."), rec("42. That is the answer to 6 x 7.")),
    ("refusal", rec("As an AI language model, I have no opinions."),
     rec("As an AI language modeling expert would say, it is Paris.")),
    ("refusal", rec("I’m sorry but I can’t help you with that."), rec("I'm sorry you had trouble; here it is.")),
    ("refusal", rec("Sure. I cannot assist with that request."),
     rec("The bank clerk said: we assist with withdrawals daily.")),
    ("refusal", rec("Lo siento, pero no puedo ayudarte."), rec("Lo siento mucho por la espera: es París.")),
    ("refusal", rec("Je suis désolé, mais je ne peux pas répondre."), rec("Je suis désolé du retard : Paris.")),
    ("refusal", rec("Es tut mir leid, aber ich kann das nicht tun."), rec("Es tut mir leid: Paris.")),
    ("refusal", rec("作为一个人工智能语言模型，我没有个人观点。"), rec("巴黎是法国的首都。")),
    ("refusal", rec("很抱歉，我无法回答这个问题。"), rec("很抱歉让你久等了，答案是巴黎。")),
    ("repetition_ngram", rec(" ".join(["the cat sat on the mat again"] * 12)), rec(LOREM)),
    ("repetition_char", rec("Wow" + "!" * 150), rec("Wow" + "!" * 20 + "\n" + "=" * 80)),
    ("repetition_line", rec(LOREM + "\n" + "\n".join(["| a | b |"] * 6)),     # loops, but few n-grams
     rec(LOREM + "\n" + "\n".join(["| a | b |"] * 5))),
    ("prompt_echo", rec("What is the capital of France?"), rec("The capital of France is Paris.")),
    ("prompt_echo", rec("what is the capital of FRANCE ... Paris"),
     rec("What is the capital of France? Since you ask, it is Paris, on the Seine, since the 10th century.")),
]


@pytest.mark.parametrize("reason,positive,negative", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_filter_triggers_and_spares_close_negative(reason: str, positive: Record, negative: Record) -> None:
    assert filter_reason(positive, CFG) == reason
    assert filter_reason(negative, CFG) is None


def test_every_filter_switches_off() -> None:
    off = {"truncated": "truncated", "empty": "empty", "placeholder": "placeholder",
           "list_numbering": "list_numbering", "refusal": "refusal", "repetition_ngram": "repetition",
           "repetition_char": "repetition", "repetition_line": "repetition", "prompt_echo": "prompt_echo"}
    for reason, positive, _ in CASES:
        if reason in off:
            assert filter_reason(positive, replace(CFG, **{off[reason]: False})) != reason


def test_token_bounds_use_reported_count_else_bytes_over_4() -> None:
    cfg = replace(CFG, min_tokens=3, max_tokens=10)
    assert filter_reason(rec("Paris"), cfg) == "too_short"               # 5 bytes -> 2 tokens
    assert filter_reason(rec("Paris, France."), cfg) is None              # 14 bytes -> 4
    assert filter_reason(rec("x" * 41), cfg) == "too_long"                # 41 bytes -> 11
    assert filter_reason(rec("Paris", completion_tokens=5), cfg) is None  # reported count wins
    assert filter_reason(rec("Paris", completion_tokens=50), cfg) == "too_long"
    assert filter_reason(rec("Paris", completion_tokens=50), replace(cfg, max_tokens=None)) is None


def test_phrase_list_extend_and_replace() -> None:
    r = rec("Certainly! Beep boop, I am a robot.")
    assert filter_reason(r, CFG) is None
    assert filter_reason(r, replace(CFG, extra_refusal_phrases=("I am a robot",))) == "refusal"
    only = replace(CFG, refusal_phrases=("beep boop",))
    assert filter_reason(r, only) == "refusal"
    assert filter_reason(rec("As an AI language model, no."), only) is None


def test_phrase_regex_is_one_pattern_with_whole_phrase_matching() -> None:
    assert isinstance(compile_phrases(("as an AI language model",)).pattern, str)
    assert find_phrase("AS AN AI\n  LANGUAGE MODEL, I...") is not None          # case, whitespace
    assert find_phrase("alias an AI model") is None                            # head boundary
    assert find_phrase("as an AI models") is None                              # tail boundary
    assert find_phrase("前文作为一个人工智能语言模型后文") is not None              # CJK: no boundaries
    # documented decision: a helpful answer QUOTING a refusal is dropped too (matched anywhere)
    assert filter_reason(rec('Bots often reply "I cannot assist with that"; rephrase instead.')) == "refusal"
    # ... unless the search is limited to the answer's head
    late = rec(LOREM + " Bots say: I cannot assist with that.")
    assert filter_reason(late, replace(CFG, refusal_window=100)) is None


def test_char_run_prefilter_matches_regex() -> None:
    for n in (3, 10, 100):
        for text in ("a" * (n + 1), "x" + "a" * (n + 1) + "y", "a" * n, " " * 500, "ab" * 300):
            want = any(text[i:i + n + 1] == text[i] * (n + 1) and not text[i].isspace()
                       for i in range(len(text)))
            assert has_char_run(text, n) == want, (n, text[:20])


def test_the_export_drops_by_filter_and_counts_reasons() -> None:
    records = [replace(r, seq=i) for i, r in enumerate([positive for _, positive, _ in CASES]
                                                       + [negative for _, _, negative in CASES])]
    why, decisions = export_reasons(records, filters=CFG)         # every row is written or rejected
    expected = Counter(reason for reason, _, _ in CASES)
    assert decisions.dropped == expected
    assert counts(why) == expected
    assert set(decisions.dropped) <= set(REASONS)


@settings(max_examples=300, deadline=None)
@given(answer=st.text(), prompt=st.text(), finish=st.sampled_from([None, "stop", "length"]),
       tokens=st.one_of(st.none(), st.integers(0, 10**6)))
def test_filters_never_raise(answer: str, prompt: str, finish: str | None, tokens: int | None) -> None:
    reason = filter_reason(rec(answer, prompt, finish, completion_tokens=tokens), CFG)
    assert reason is None or reason in REASONS
