"""DeepSeek: 402 "Insufficient Balance" when the account is empty."""

from __future__ import annotations

from datetime import date

from .base import Provider, TermsRow

PROVIDER = Provider(
    name="deepseek",
    hosts=("api.deepseek.com",),
    billing_words=("insufficient balance", "insufficient_balance"),
    prices={"deepseek-chat": (0.27, 1.10), "deepseek-reasoner": (0.55, 2.19)},
    prices_source="https://api-docs.deepseek.com/quick_start/pricing",
    prices_read_on=date(2026, 11, 28),
    # JSON Output is json_object only, the prompt must say "json" and show the format, and "the API may
    # occasionally return empty content" (https://api-docs.deepseek.com/guides/json_mode); logprobs with
    # top_logprobs up to 20 on deepseek-chat (https://api-docs.deepseek.com/api/create-chat-completion)
    structured_output="json_object",
    max_top_logprobs=20,
    terms=TermsRow("allowed", "DeepSeek's API terms allow using outputs, including for distillation.",
                   "https://platform.deepseek.com/downloads/DeepSeek%20Open%20Platform%20Terms%20of%20Service.html",
                   date(2026, 11, 28)),
)
