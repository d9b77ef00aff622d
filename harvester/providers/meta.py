"""Meta's Llama licences: Llama 3.0 forbids improving other models with its outputs; 3.1 and later allow
it under conditions. The 3.0 row applies when the model's name says 3 or 3.0."""

from __future__ import annotations

import re
from datetime import date

from .base import Provider, TermsRow

LLAMA_3_0 = Provider(
    name="meta-llama-3.0",
    terms=TermsRow("forbidden", "The Llama 3 license forbids using outputs to improve any other large language "
                   "model (other than Llama 3 derivatives).", "https://www.llama.com/llama3/license/",
                   date(2026, 11, 28)),
)

LLAMA = Provider(
    name="meta-llama",
    aliases=("llama", "meta"),
    terms=TermsRow("conditional", "Llama 3.1+ allows training on outputs, but a model so trained must have "
                   "\"Llama\" at the start of its name, and the license's attribution rules apply.",
                   "https://www.llama.com/llama3_1/license/", date(2026, 11, 28)),
    terms_by_model=((re.compile(r"llama[-_ ]?3(?![.\d])|llama[-_ ]?3[.-]0", re.I), LLAMA_3_0.name),),
)
