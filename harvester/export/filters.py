"""Quality filters: pure, per-record checks, each switchable and tunable via `FilterConfig`.

`filter_reason(record, cfg)` names the first failing filter (None = keep); the export's first pass
(`analyze.Analyzer`) keeps it per row, so the pipeline can write rejects beside the dataset.

Token counts are approximate and cheap: the teacher's reported `completion_tokens` when
present, else ceil(UTF-8 bytes / 4) (~1 token per 4 bytes of English; CJK at 3 bytes/char
gives ~0.75 token/char, closer than a word count, which sees a Chinese paragraph as 1 word).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from harvester.export.text import normalized, normalized_words
from harvester.store.rows import Record

# Whole-phrase refusal / model-boilerplate list; matched case-insensitively, anywhere in the
# answer (a helpful answer that quotes one of these is dropped too: for distillation a lost
# good row is cheaper than teaching the student to refuse). Spaces match any whitespace,
# apostrophes match ' or ’, commas are optional.
DEFAULT_REFUSAL_PHRASES: tuple[str, ...] = (
    # English
    "as an AI language model", "as an AI model", "as a large language model", "as an AI assistant",
    "I cannot assist with", "I can't assist with",
    "I'm sorry, but I can't", "I'm sorry, but I cannot", "I am sorry, but I cannot",
    "I'm unable to assist", "I am unable to assist", "I cannot fulfill", "I can't fulfill",
    "I cannot help with that", "I can't help with that", "I'm not able to help with",
    "I cannot provide assistance", "my knowledge cutoff", "I don't have personal opinions",
    "I do not have personal opinions", "I don't have access to real-time",
    # Spanish
    "como modelo de lenguaje", "como un modelo de lenguaje", "como una IA, no",
    "lo siento, pero no puedo", "no puedo ayudarte con", "no puedo ayudar con",
    # French
    "en tant que modèle de langage", "en tant qu'IA", "en tant qu'intelligence artificielle",
    "je suis désolé, mais je ne peux pas", "désolé, mais je ne peux pas",
    "je ne peux pas vous aider", "je ne peux pas t'aider",
    # German
    "als KI-Sprachmodell", "als ein KI-Sprachmodell", "als KI kann ich", "es tut mir leid, aber ich kann",
    "ich kann dir dabei nicht helfen", "ich kann Ihnen dabei nicht helfen",
    # Chinese (no word boundaries in CJK: matched as plain substrings)
    "作为一个人工智能语言模型", "作为一个AI语言模型", "作为人工智能语言模型", "作为一个人工智能助手",
    "作为AI助手", "我无法协助", "抱歉，我不能", "抱歉，我无法", "对不起，我无法", "很抱歉，我无法",
    # a few more
    "como um modelo de linguagem", "come modello linguistico", "come modello di linguaggio AI",
    "как языковая модель", "как модель искусственного интеллекта", "AI言語モデルとして",
)

DEFAULT_PLACEHOLDERS: tuple[str, ...] = (
    "<noinput>", "<nooutput>", "<no input>", "<no output>", "[no output]", "(no output)",
    "no output", "n/a", "<n/a>", "[n/a]", "<empty>", "[empty]", "<blank>", "...", "…", "-",
)


@dataclass(frozen=True)
class FilterConfig:
    truncated: bool = True                     # finish_reason == "length"
    empty: bool = True                         # blank after stripping
    min_tokens: int | None = 1                 # too_short below; None = off
    max_tokens: int | None = 16384             # too_long above; None = off
    use_reported_tokens: bool = True           # prefer completion_tokens over bytes/4
    refusal: bool = True
    refusal_phrases: tuple[str, ...] = DEFAULT_REFUSAL_PHRASES   # replace the list ...
    extra_refusal_phrases: tuple[str, ...] = ()                  # ... or extend it
    refusal_window: int | None = None          # search only the first N chars; None = all
    placeholder: bool = True
    placeholders: tuple[str, ...] = DEFAULT_PLACEHOLDERS
    list_numbering: bool = True                # starts with "2." or ends with a dangling "3."
    repetition: bool = True
    rep_ngram: int = 3                         # word n-gram size for the repeated share
    max_rep_share: float = 0.5                 # 1 - unique/total n-grams above which to drop
    rep_min_ngrams: int = 10                   # too few n-grams to judge below this
    max_char_run: int = 100                    # one non-space char repeated more than this
    max_line_run: int = 6                      # the same non-blank line, consecutively, this often
    prompt_echo: bool = True
    echo_min_share: float = 0.8                # prompt is >= this share of the (normalized) answer


REASONS = ("truncated", "empty", "too_short", "too_long", "placeholder", "list_numbering",
           "refusal", "repetition_ngram", "repetition_char", "repetition_line", "prompt_echo")

_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\uf900-\ufaff]")


def _atoms(phrase: str) -> list[str]:
    """A phrase as regex atoms: any whitespace run, either apostrophe, an optional comma."""
    out: list[str] = []
    for ch in " ".join(phrase.lower().split()):
        out.append(r"\s+" if ch == " " else "['’]" if ch in "'’" else "[,，]?" if ch in ",，"
                   else re.escape(ch))
    return out


# A trie node: each next atom to its child node, and None to the tail of the phrase that ends there
_Trie = dict[str | None, Any]


def _trie_regex(phrases: list[str]) -> str:
    """Factor common prefixes (a trie) so the engine does not retry 60 branches per char."""
    root: _Trie = {}
    for phrase in phrases:
        node = root
        for atom in _atoms(phrase):
            node = node.setdefault(atom, {})
        last = phrase[-1]     # "model" must not match "modeling": tail boundary, unless CJK
        node[None] = r"(?!\w)" if re.match(r"\w", last) and not _CJK.match(last) else ""

    def emit(node: _Trie, top: bool = False) -> str:
        alts = []
        for atom, sub in node.items():
            if atom is None:
                continue
            # head boundary right after the first char (keeps the literal first-char prefilter
            # of the regex engine); none before CJK, which has no spaces between words
            head = r"(?<!\w.)" if top and re.fullmatch(r"\w", atom) and not _CJK.match(atom) else ""
            alts.append(atom + head + emit(sub))
        if None in node:
            alts.append(node[None])
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    return emit(root, top=True) if root else "(?!)"


@lru_cache(maxsize=16)
def compile_phrases(phrases: tuple[str, ...]) -> re.Pattern[str]:
    """ONE regex of whole phrases, to be searched in LOWER-CASED text (see `find_phrase`):
    case-folding the text once is 3-5x faster than re.IGNORECASE on a big alternation."""
    return re.compile(_trie_regex(sorted({p.strip() for p in phrases if p.strip()})))


def find_phrase(text: str, phrases: tuple[str, ...] = DEFAULT_REFUSAL_PHRASES) -> str | None:
    """The first refusal/boilerplate phrase in `text` (case-insensitive), or None."""
    m = compile_phrases(phrases).search(text.lower())
    return m[0] if m else None


# "2. foo" at the start (a list whose item 1 was lost); single digits only, so "42. It is..."
# or "1998. The year..." answers are spared
_LEADING_ITEM = re.compile(r"\A\s*[2-9][.)]\s+\S")
_DANGLING_ITEM = re.compile(r"\n[ \t]*(\d{1,2})[.)][ \t]*\Z")          # "...\n3." at the end


@lru_cache(maxsize=8)
def _char_run_re(n: int) -> re.Pattern[str]:
    return re.compile(r"(\S)\1{" + str(n) + "}")


def has_char_run(text: str, n: int) -> bool:
    """A non-space char repeated more than n times in a row. Prefilter: such a run covers two
    consecutive chars of text[::stride] (stride <= (n+1)/2), so the slow regex rarely runs."""
    stride = max(1, (n + 1) // 2)
    sample = text[::stride]
    if not any(a == b for a, b in zip(sample, sample[1:]) if not a.isspace()):
        return False
    return _char_run_re(n).search(text) is not None


def _dangling_item(answer: str) -> bool:
    """Ends with a bare "N." on its own line right after a list that has item N-1."""
    m = _DANGLING_ITEM.search(answer)
    if not m or int(m[1]) < 2:
        return False
    return re.search(rf"(?m)^[ \t]*{int(m[1]) - 1}[.)]\s", answer[: m.start() + 1]) is not None


def approx_tokens(record: Record, cfg: FilterConfig) -> int:
    """The reported completion_tokens if any (and allowed), else ceil(UTF-8 bytes / 4)."""
    if cfg.use_reported_tokens and record.completion_tokens is not None:
        return record.completion_tokens
    return -(-len(record.answer.encode("utf-8")) // 4)


def repeated_share(words: list[str] | list[bytes], n: int) -> float:
    """Share of word n-grams that repeat an earlier one: 0 = all distinct, ->1 = a loop."""
    total = len(words) - n + 1
    return 1.0 - len(set(zip(*(words[i:] for i in range(n))))) / total if total > 0 else 0.0


def _max_line_run(text: str) -> int:
    best = run = 0
    prev = None
    for line in text.splitlines():
        line = line.rstrip()
        if not line:
            continue                             # blank lines neither break nor extend a run
        run = run + 1 if line == prev else 1
        prev, best = line, max(best, run)
    return best


def filter_reason(record: Record, cfg: FilterConfig = FilterConfig()) -> str | None:
    """The first failing filter's name (see REASONS), or None to keep the record."""
    answer = record.answer or ""
    stripped = answer.strip()
    if cfg.truncated and record.finish_reason == "length":
        return "truncated"
    if cfg.empty and not stripped:
        return "empty"
    if cfg.min_tokens is not None or cfg.max_tokens is not None:
        tokens = approx_tokens(record, cfg)
        if cfg.min_tokens is not None and tokens < cfg.min_tokens:
            return "too_short"
        if cfg.max_tokens is not None and tokens > cfg.max_tokens:
            return "too_long"
    if cfg.placeholder and stripped.casefold() in _placeholder_set(cfg.placeholders):
        return "placeholder"
    if cfg.list_numbering and (_LEADING_ITEM.match(answer) or _dangling_item(answer)):
        return "list_numbering"
    if cfg.refusal:
        window = answer if cfg.refusal_window is None else answer[: cfg.refusal_window]
        if find_phrase(window, cfg.refusal_phrases + cfg.extra_refusal_phrases):
            return "refusal"
    if cfg.repetition:
        words = normalized_words(answer)
        if len(words) - cfg.rep_ngram + 1 >= cfg.rep_min_ngrams and \
                repeated_share(words, cfg.rep_ngram) > cfg.max_rep_share:
            return "repetition_ngram"
        if has_char_run(answer, cfg.max_char_run):
            return "repetition_char"
        if _max_line_run(answer) >= cfg.max_line_run:
            return "repetition_line"
    raw_prompt = record.last_user or record.prompt_text
    norm = normalized(answer) if cfg.prompt_echo else ""
    if cfg.prompt_echo and 4 * len(raw_prompt) >= cfg.echo_min_share * len(norm):  # cheap pre-test
        prompt = normalized(raw_prompt)
        if prompt and (norm == prompt or (f" {prompt} " in f" {norm} "
                                          and len(prompt) >= cfg.echo_min_share * len(norm))):
            return "prompt_echo"
    return None


@lru_cache(maxsize=16)
def _placeholder_set(placeholders: tuple[str, ...]) -> frozenset[str]:
    return frozenset(p.strip().casefold() for p in placeholders)
