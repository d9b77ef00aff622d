"""OpenRouter: 402 with "insufficient credits". It routes to other providers' models: their terms apply."""

from __future__ import annotations

from .base import Provider

PROVIDER = Provider(
    name="openrouter",
    hosts=("openrouter.ai",),
    billing_words=("insufficient credits", "insufficient_credits"),
)
