"""What a provider module states: its rate-limit headers, how its errors read, its prices, its terms.

Plain frozen dataclasses, stdlib only: a provider's room is data, read by `harvester.providers.feedback`
(answers), `harvester.quota` (prices) and `harvester.terms` (terms of use).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from ..hours import Span

Dimension = Literal["requests", "tokens", "input_tokens", "output_tokens"]
TrainingUse = Literal["allowed", "conditional", "forbidden", "unknown"]
# How a provider takes a response schema: `json_schema` (OpenAI's structured outputs, the schema in
# response_format), `json_object` (JSON mode only: the schema goes in the prompt), or `prompt` (no JSON
# mode that it honours: the schema in the prompt alone). harvester validates every answer either way.
StructuredOutput = Literal["json_schema", "json_object", "prompt"]


@dataclass(frozen=True, slots=True)
class LimitHeaders:
    """The names of one limit's three headers: its limit, what remains, and when it resets."""

    dimension: Dimension
    limit: str
    remaining: str
    reset: str
    per_day: bool = False   # known to count per day under a per-minute-looking name (Groq's requests)


@dataclass(frozen=True, slots=True)
class TermsRow:
    """What a provider's terms said about training on outputs, on the day they were read."""

    training_use: TrainingUse
    conditions: str
    url: str | None
    read_on: date


@dataclass(frozen=True, slots=True)
class Rates:
    """USD per million tokens. Cached input is read from the provider's prompt cache; cache-write input
    is written to it (Anthropic charges a premium for that); None: billed as fresh input."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None


@dataclass(frozen=True, slots=True)
class RateWindow:
    """Hours of the UTC week with rates of their own (DeepSeek's peak hours)."""

    spans: tuple[Span, ...]
    rates: Rates
    label: str                                   # how a person calls those hours: "peak", "off-peak"


@dataclass(frozen=True, slots=True)
class ModelPrice:
    """What one model costs: its rates, the hours that have others (the first window containing a
    time wins), and the share of these prices its batch API charges (None: the provider's)."""

    rates: Rates
    windows: tuple[RateWindow, ...] = ()
    batch_factor: float | None = None


@dataclass(frozen=True, slots=True, eq=False)   # compared (and hashed) by identity: one object each
class Provider:
    """One provider: everything harvester knows about it, in one place.

    `billing_words` mark an error as an exhausted account (stop the run); `rate_words` mark a 429 in
    quota words as a short-window rate limit (wait), unless `long_window_words` name a window of a day or
more (spent until it resets: stop); `delay_patterns` find a retry delay written in an
    error body (group 1: the number, group 2: its unit, "s" when absent). `prices` map model-name
    prefixes to their price, as listed at `prices_source` on `prices_read_on`; `batch_factor` is the
    share of that price its batch API charges.
    """

    name: str
    hosts: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    headers: tuple[LimitHeaders, ...] = ()
    billing_words: tuple[str, ...] = ()
    rate_words: tuple[str, ...] = ()
    long_window_words: tuple[str, ...] = ()
    delay_patterns: tuple[re.Pattern[str], ...] = ()
    prices: dict[str, ModelPrice] = field(default_factory=dict)
    prices_source: str | None = None
    prices_read_on: date | None = None
    batch_factor: float | None = None
    # Where its batch API differs from OpenAI's Files + Batch API (the file's `purpose`, smaller limits)
    batch_file_purpose: str = "batch"
    batch_max_requests: int | None = None
    batch_max_bytes: int | None = None
    terms: TermsRow | None = None
    # Another provider's terms apply to some of its models (Llama 3.0 under Meta's older licence):
    # (pattern on the model name, name of the provider whose row applies).
    terms_by_model: tuple[tuple[re.Pattern[str], str], ...] = ()
    # Answers with a shape and their token probabilities (harvester.shape, harvester.logprobs). The
    # default, json_schema, is OpenAI's own interface, which vLLM, SGLang, Ollama and LiteLLM also serve.
    structured_output: StructuredOutput = "json_schema"
    max_top_logprobs: int | None = None     # the most top_logprobs it returns; 0: no logprobs; None: unknown
    # model-name prefix -> the tokenizer its logprobs' tokens come from (named in the dataset card)
    tokenizers: dict[str, str] = field(default_factory=dict)
