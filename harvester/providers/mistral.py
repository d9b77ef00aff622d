"""Mistral AI."""

from __future__ import annotations

from datetime import date

from .base import ModelPrice, Provider, Rates, TermsRow

PROVIDER = Provider(
    name="mistral",
    hosts=("api.mistral.ai",),
    prices={"mistral-large": ModelPrice(Rates(2.00, 6.00)), "mistral-small": ModelPrice(Rates(0.10, 0.30))},
    prices_source="https://mistral.ai/pricing#api-pricing",
    prices_read_on=date(2026, 11, 28),
    batch_factor=0.5,
    # Custom structured outputs: response_format json_schema
    # (https://docs.mistral.ai/capabilities/structured-output/custom_structured_output/)
    structured_output="json_schema",
    terms=TermsRow("conditional", "Mistral's terms restrict using outputs to train competing models; open-weight "
                   "models follow their own licenses (e.g. Apache-2.0).", "https://mistral.ai/terms",
                   date(2026, 11, 28)),
)
