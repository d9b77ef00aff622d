"""harvester's own simulator (`harvester sim`): OpenAI's headers and wording, synthetic answers, no terms."""

from __future__ import annotations

from datetime import date

from .base import Provider, TermsRow

PROVIDER = Provider(
    name="simulator",
    aliases=("sim", "harvester-sim"),
    max_top_logprobs=20,     # as OpenAI (harvester.sim_shapes)
    terms=TermsRow("allowed", "harvester's own simulator: synthetic answers, no terms.", None, date(2026, 11, 28)),
)
