"""DeepSeek: 402 "Insufficient Balance" when the account is empty; prompt-cache hits priced apart
(`prompt_cache_hit_tokens`), and peak hours billed at twice the off-peak price."""

from __future__ import annotations

from datetime import date

from ..hours import hours
from .base import ModelPrice, Provider, Rates, RateWindow, TermsRow

# Since 2026-08-16 every hour outside these is off-peak, at half the peak price (Chinese public holidays,
# also off-peak, are not modelled: a run on one is priced high, never low).
PEAK = hours("01:00-04:00", "06:00-10:00", weekdays="mon-fri")


def _price(hit: float, miss: float, output: float) -> ModelPrice:
    """The off-peak rates (cache hit, cache miss, output); peak hours pay twice them."""
    off_peak = Rates(miss, output, cached_input=hit)
    peak = Rates(miss * 2, output * 2, cached_input=hit * 2)
    return ModelPrice(off_peak, windows=(RateWindow(PEAK, peak, "peak"),))


PROVIDER = Provider(
    name="deepseek",
    hosts=("api.deepseek.com",),
    billing_words=("insufficient balance", "insufficient_balance"),
    # The page's figures as quoted on 2026-10-27 (peak: flash 0.006 / 0.30 / 1.20, v4-pro 0.044 / 1.32 / 3.96);
    # deepseek-v4-flash is billed as deepseek-flash. The older names keep their last single price.
    prices={"deepseek-flash": _price(0.003, 0.15, 0.60), "deepseek-v4-flash": _price(0.003, 0.15, 0.60),
            "deepseek-v4-pro": _price(0.022, 0.66, 1.98),
            "deepseek-chat": ModelPrice(Rates(0.27, 1.10, cached_input=0.07)),
            "deepseek-reasoner": ModelPrice(Rates(0.55, 2.19, cached_input=0.14))},
    prices_source="https://api-docs.deepseek.com/quick_start/pricing",
    prices_read_on=date(2026, 12, 1),
    # JSON Output is json_object only, the prompt must say "json" and show the format, and "the API may
    # occasionally return empty content" (https://api-docs.deepseek.com/guides/json_mode); logprobs with
    # top_logprobs up to 20 on deepseek-chat (https://api-docs.deepseek.com/api/create-chat-completion)
    structured_output="json_object",
    max_top_logprobs=20,
    terms=TermsRow("allowed", "DeepSeek's API terms allow using outputs, including for distillation.",
                   "https://platform.deepseek.com/downloads/DeepSeek%20Open%20Platform%20Terms%20of%20Service.html",
                   date(2026, 11, 28)),
)
