"""Google Gemini. Quirk: its OpenAI-compatible endpoint answers a per-minute limit with OpenAI's own
billing sentence ("You exceeded your current quota, please check your plan and billing details"), a
`...PerMinute...` quota id and a RetryInfo delay, no rate-limit headers: the window words win."""

from __future__ import annotations

import re
from datetime import date

from .base import ModelPrice, Provider, Rates, TermsRow

PROVIDER = Provider(
    name="google",
    hosts=("generativelanguage.googleapis.com",),
    aliases=("gemini", "google-gemini"),
    rate_words=("perminute", "persecond", "retrydelay"),
    delay_patterns=(re.compile(r'"retrydelay":\s*"(\d+(?:\.\d+)?)(s)"'),),   # google.rpc.RetryInfo
    prices={"gemini-2.0-flash": ModelPrice(Rates(0.10, 0.40)),
            "gemini-1.5-flash": ModelPrice(Rates(0.075, 0.30)), "gemini-2.5-pro": ModelPrice(Rates(1.25, 10.00))},
    prices_source="https://ai.google.dev/gemini-api/docs/pricing",
    prices_read_on=date(2026, 11, 28),
    batch_factor=0.5,
    # Its OpenAI-compatible endpoint takes response_format json_schema
    # (https://ai.google.dev/gemini-api/docs/openai#structured-output); logprobs there: not documented
    structured_output="json_schema",
    terms=TermsRow("forbidden", "The Gemini API terms forbid using the services to develop models that compete "
                   "with Google's.", "https://ai.google.dev/gemini-api/terms", date(2026, 11, 28)),
)
