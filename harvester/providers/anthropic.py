"""Anthropic: `anthropic-ratelimit-*` headers (RFC 3339 resets, input and output tokens apart), credit words."""

from __future__ import annotations

from datetime import date

from .base import Dimension, LimitHeaders, ModelPrice, Provider, Rates, TermsRow

_KINDS: tuple[tuple[Dimension, str], ...] = (("requests", "requests"), ("tokens", "tokens"),
                                             ("input_tokens", "input-tokens"), ("output_tokens", "output-tokens"))



def _price(fresh: float, output: float) -> ModelPrice:
    return ModelPrice(Rates(fresh, output, cached_input=round(fresh * 0.1, 6), cache_write=round(fresh * 1.25, 6)))


PROVIDER = Provider(
    name="anthropic",
    hosts=("api.anthropic.com",),
    headers=tuple(LimitHeaders(dim, f"anthropic-ratelimit-{k}-limit", f"anthropic-ratelimit-{k}-remaining",
                               f"anthropic-ratelimit-{k}-reset")
                  for dim, k in _KINDS),
    billing_words=("credit balance is too low", "api usage limit", "spend limit", "spending limit"),
    # Prompt caching: a cache read costs 0.1 x the input price, a (5-minute) cache write 1.25 x.
    prices={"claude-3-5-haiku": _price(0.80, 4.00), "claude-3-5-sonnet": _price(3.00, 15.00),
            "claude-sonnet-4": _price(3.00, 15.00), "claude-opus-4": _price(15.00, 75.00)},
    prices_source="https://www.anthropic.com/pricing#api",
    prices_read_on=date(2026, 11, 28),
    batch_factor=0.5,
    # Its OpenAI SDK compatibility layer ignores response_format and logprobs
    # (https://docs.anthropic.com/en/api/openai-sdk#request-fields): the schema goes in the prompt
    structured_output="prompt",
    max_top_logprobs=0,
    terms=TermsRow("conditional", "Training models on outputs (distillation) requires Anthropic's prior "
                   "authorization.", "https://www.anthropic.com/legal/commercial-terms", date(2026, 11, 28)),
)
