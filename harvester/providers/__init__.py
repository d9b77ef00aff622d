"""The provider room: what each teacher API says and charges, one module per provider.

    base.py        the dataclasses a provider module fills in
    feedback.py    status + headers + body → Feedback (outcome, verdict, Retry-After, limits), pure
    wording.py     how error bodies read
    compatible.py  what any OpenAI-compatible server may say
    openai.py, anthropic.py, google.py, groq.py, together.py, deepseek.py, mistral.py, meta.py, qwen.py,
    openrouter.py, simulator.py: one provider each (headers, quirks, billing words, prices, terms)
    chat.py        a chat.completion read into an Answer (the synchronous reply and batch lines alike)
    batch.py, openai_batch.py, anthropic_batch.py: the batch protocols beside the synchronous one

Adding a provider: one module that defines a `Provider`, and its name in PROVIDERS below.
"""

from __future__ import annotations

from functools import cache
from urllib.parse import urlparse

from . import (
    anthropic,
    compatible,
    deepseek,
    google,
    groq,
    meta,
    mistral,
    openai,
    openrouter,
    qwen,
    simulator,
    together,
)
from .base import ModelPrice, Provider, Rates, RateWindow
from .feedback import CANCELLED, UNKNOWN_ERROR, Feedback, LimitHint, Reader

# Order matters where lists are shown to people (the table of terms).
PROVIDERS: tuple[Provider, ...] = (
    openai.PROVIDER, anthropic.PROVIDER, google.PROVIDER, meta.LLAMA_3_0, meta.LLAMA, mistral.PROVIDER,
    deepseek.PROVIDER, qwen.PROVIDER, simulator.PROVIDER, groq.PROVIDER, together.PROVIDER, openrouter.PROVIDER,
    compatible.PROVIDER,
)
_BY_NAME = {p.name: p for p in PROVIDERS} | {a: p for p in PROVIDERS for a in p.aliases}
_BY_HOST = {h: p for p in PROVIDERS for h in p.hosts}


def named(name: str) -> Provider | None:
    """The provider a job file names (any case; aliases such as `gemini` included)."""
    return _BY_NAME.get(name.lower())


def at(base_url: str) -> Provider | None:
    """The provider whose API a base URL points at, if harvester knows its host."""
    return _BY_HOST.get((urlparse(base_url).hostname or "").lower())


def identify(name: str | None, base_url: str) -> Provider | None:
    """The provider of a teacher: the one its job file names, else the one its URL belongs to."""
    return named(name) if name else at(base_url)


@cache
def reader(prefer: Provider | None = None) -> Reader:
    """A reader that knows every provider, `prefer`'s header names first."""
    return Reader(PROVIDERS, prefer)


def price_for(model: str) -> tuple[Provider, ModelPrice] | None:
    """The built-in price of a model: longest matching name prefix over every provider's list (the
    model decides, not the host: gpt-4o costs the same via a proxy)."""
    name = model.lower().split("/")[-1]
    best: tuple[int, Provider, ModelPrice] | None = None
    for p in PROVIDERS:
        for prefix, price in p.prices.items():
            if name.startswith(prefix) and (best is None or len(prefix) > best[0]):
                best = (len(prefix), p, price)
    return None if best is None else (best[1], best[2])


def tokenizer_for(model: str) -> str | None:
    """The tokenizer a model's tokens come from, where known: a provider's list (longest prefix), else the
    Hugging Face repository an `org/name` model is named after (vLLM, SGLang, Together serve them so)."""
    name = model.lower().split("/")[-1]
    best = max(((prefix, t) for p in PROVIDERS for prefix, t in p.tokenizers.items() if name.startswith(prefix)),
               key=lambda pt: len(pt[0]), default=None)
    if best is not None:
        return best[1]
    parts = model.split("/")
    if len(parts) == 2 and all(parts) and not model.startswith((".", "~")):
        return f"the tokenizer of the Hugging Face model {model}"
    return None


__all__ = ["CANCELLED", "PROVIDERS", "UNKNOWN_ERROR", "Feedback", "LimitHint", "ModelPrice", "Provider", "Rates",
           "RateWindow", "Reader", "at", "identify", "named", "price_for", "reader", "tokenizer_for"]
