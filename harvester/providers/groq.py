"""Groq. Quirk: `x-ratelimit-limit-requests` counts requests per DAY (its tokens header is per minute),
under OpenAI's per-minute names. It serves open-weight models: their own licences apply (no terms row).
Its batch API is OpenAI's Files + Batch API under /openai/v1, at half the price
(https://console.groq.com/docs/batch, read 2026-12-01)."""

from __future__ import annotations

from dataclasses import replace

from .base import Provider
from .openai import HEADERS as OPENAI_HEADERS

PROVIDER = Provider(
    name="groq",
    hosts=("api.groq.com",),
    headers=tuple(replace(h, per_day=h.dimension == "requests") for h in OPENAI_HEADERS),
    batch_factor=0.5,
    # JSON mode (json_object) on every model; json_schema on a few listed ones only
    # (https://console.groq.com/docs/structured-outputs): json_object plus the schema in the prompt is safe
    structured_output="json_object",
    max_top_logprobs=0,     # "logprobs ... not yet supported" (https://console.groq.com/docs/openai)
)
