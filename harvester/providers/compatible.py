"""What any OpenAI-compatible server (vLLM, SGLang, Ollama, LiteLLM, proxies) may say: the plain-English
wording of billing and window errors that no one vendor owns. Matched case-insensitively."""

from __future__ import annotations

from .base import Provider

PROVIDER = Provider(
    name="openai-compatible",
    billing_words=("payment required", "out of credits"),
    rate_words=("per minute", "per_minute", "per min ", "per second", "retry in", "try again in"),
    # a limit or quota named by a window of a day or more is spent until it resets: retrying cannot help
    long_window_words=("per day", "per-day", "perday", "daily", "_per_day", "per month", "monthly"),
)
