"""OpenAI: `x-ratelimit-*` headers (served by many compatible servers too), `retry-after-ms`, billing codes."""

from __future__ import annotations

import re
from datetime import date

from .base import LimitHeaders, ModelPrice, Provider, Rates, TermsRow

# Also sent, same names, by Together, Fireworks, DeepSeek, vLLM behind a gateway, and the simulator.
HEADERS = (
    LimitHeaders("requests", "x-ratelimit-limit-requests", "x-ratelimit-remaining-requests",
                 "x-ratelimit-reset-requests"),
    LimitHeaders("tokens", "x-ratelimit-limit-tokens", "x-ratelimit-remaining-tokens", "x-ratelimit-reset-tokens"),
)


def _price(fresh: float, output: float, cached: float) -> ModelPrice:
    return ModelPrice(Rates(fresh, output, cached_input=cached))


PROVIDER = Provider(
    name="openai",
    hosts=("api.openai.com",),
    headers=HEADERS,
    billing_words=("insufficient_quota", "exceeded your current quota", "check your plan and billing",
                   "billing_hard_limit", "billing_not_active", "billing hard limit"),
    long_window_words=("(rpd)", "(tpd)"),   # "Rate limit reached ... on requests per day (RPD)"
    # "Please try again in 20ms." / "Please retry in 1.5s" in a rate-limit message
    delay_patterns=(re.compile(r"(?:retry|try again) in (\d+(?:\.\d+)?)\s*(ms|s)\b"),),
    # input, output, cached input (automatic prompt caching of prompts of 1,024 tokens and more)
    prices={"gpt-4o-mini": _price(0.15, 0.60, 0.075), "gpt-4o": _price(2.50, 10.00, 1.25),
            "gpt-4.1-nano": _price(0.10, 0.40, 0.025), "gpt-4.1-mini": _price(0.40, 1.60, 0.10),
            "gpt-4.1": _price(2.00, 8.00, 0.50), "o3-mini": _price(1.10, 4.40, 0.55),
            "o4-mini": _price(1.10, 4.40, 0.275)},
    prices_source="https://openai.com/api/pricing/",
    prices_read_on=date(2026, 11, 28),
    batch_factor=0.5,
    # Structured outputs: https://platform.openai.com/docs/guides/structured-outputs; top_logprobs 0-20
    # (https://platform.openai.com/docs/api-reference/chat/create#chat-create-top_logprobs), none on reasoning models
    structured_output="json_schema",
    max_top_logprobs=20,
    # https://github.com/openai/tiktoken (tiktoken/model.py: the encoding of each model family)
    tokenizers={"gpt-4o": "tiktoken o200k_base", "gpt-4.1": "tiktoken o200k_base", "gpt-4.5": "tiktoken o200k_base",
                "o1": "tiktoken o200k_base", "o3": "tiktoken o200k_base", "o4": "tiktoken o200k_base",
                "gpt-4": "tiktoken cl100k_base", "gpt-3.5": "tiktoken cl100k_base"},
    terms=TermsRow("forbidden", "The terms forbid using output to develop models that compete with OpenAI, and "
                   "forbid circumventing rate limits.", "https://openai.com/policies/terms-of-use/",
                   date(2026, 11, 28)),
)
