"""What teachers' terms say about training on their outputs: a built-in table, and the check.

This table is information, not legal advice: it records what each provider's terms said on the day
they were read, with the source, so that a dataset can carry its provenance. The job file's `terms:`
block always overrides it, field by field.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlparse

from . import providers
from .config import Teacher, Terms, did_you_mean
from .errors import TermsRefused

# provider name → its built-in position (harvester.providers: one row per provider module)
KNOWN: dict[str, Terms] = {
    p.name: Terms(provider=p.name, terms_url=p.terms.url, checked_on=p.terms.read_on,
                  training_use=p.terms.training_use, conditions=p.terms.conditions)
    for p in providers.PROVIDERS if p.terms is not None}


def provider_for(teacher: Teacher) -> str | None:
    """The name of the provider whose terms apply: the one the job names (a name the table does not
    know stays as given), or the one its base_url belongs to, if that provider has terms of its own."""
    named = (teacher.terms.provider if teacher.terms and teacher.terms.provider else teacher.provider)
    found = providers.named(named) if named else providers.at(teacher.base_url)
    if found is None:
        return named.lower() if named else None
    for pattern, other in found.terms_by_model:   # e.g. Llama 3.0's older licence
        if pattern.search(teacher.model):
            return other
    return found.name if named or found.terms is not None else None


def is_local(base_url: str) -> bool:
    host = urlparse(base_url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# Open-weight model families whose name says whose licence applies: a hint in the refusal, never applied
# by itself (the licence of a fine-tune or a merge may differ).
_FAMILIES = (("llama", "meta-llama"), ("qwen", "qwen"), ("qwq", "qwen"), ("mistral", "mistral"),
             ("mixtral", "mistral"), ("deepseek", "deepseek"))


def _unknown_message(teacher: Teacher, provider: str | None) -> str:
    """Why a remote teacher of unknown terms is refused, and the three ways to go on."""
    known = ", ".join(k for k in KNOWN if k != "meta-llama-3.0")
    if provider:
        what = (f"teacher.provider {provider!r} is not in harvester's table of terms"
                f"{did_you_mean(provider, KNOWN)}")
    else:
        what = (f"harvester does not know whose terms apply to model {teacher.model!r} at {teacher.base_url} "
                "(a server on another host, such as vLLM on a GPU box, serves a model under that model's "
                "own licence)")
    hint = next((p for word, p in _FAMILIES if word in teacher.model.lower()), None)
    guess = f"   # the model's name suggests {hint}" if hint and not provider else ""
    end = "" if what.endswith("?") else "."
    return (f"teacher.terms: training_use is 'unknown': {what}{end}\n"
            "harvester will not send a request until the job file says one of:\n"
            f"  - whose model it is, for the built-in position ({known}):\n"
            f"      teacher: {{provider: {hint or '<one of them>'}}}{guess}\n"
            "  - a licence the table does not list (e.g. Apache-2.0, MIT), with its position, as you read it:\n"
            "      teacher: {terms: {provider: \"Apache-2.0\", terms_url: \"<the model card>\", "
            "training_use: allowed}}\n"
            "  - an acknowledgement: who decided to go ahead, and on what basis:\n"
            "      teacher: {terms: {acknowledgement: \"<who>, <on what basis>\"}}\n"
            "This is information, not legal advice.")


def resolve_terms(teacher: Teacher) -> Terms:
    """The built-in position for the teacher's provider, overridden field by field by the job file."""
    provider = provider_for(teacher)
    base = KNOWN.get(provider or "", Terms(provider=provider, training_use="unknown"))
    own = teacher.terms.model_dump(exclude_none=True) if teacher.terms else {}
    merged = {**base.model_dump(), **own}
    if merged.get("training_use") is None:
        merged["training_use"] = "unknown"
    return Terms(**merged)


def check_terms(teacher: Teacher) -> Terms:
    """The terms in force, or TermsRefused when they don't allow training and nobody acknowledged them.

    An `unknown` position is refused for a remote teacher; a loopback teacher with no named provider
    (vLLM, Ollama or the simulator on this machine) runs, recorded as unknown.
    """
    terms = resolve_terms(teacher)
    if terms.training_use == "allowed" or terms.acknowledgement:
        return terms
    if terms.training_use == "unknown" and is_local(teacher.base_url):
        return terms
    if terms.training_use == "unknown":
        raise TermsRefused(_unknown_message(teacher, provider_for(teacher)))
    source = f" (source: {terms.terms_url}, read {terms.checked_on})" if terms.terms_url else ""
    who = terms.provider or "this teacher"
    raise TermsRefused(
        f"teacher.terms: training_use for {who} is {terms.training_use!r}{source}"
        + (f": {terms.conditions}" if terms.conditions else "")
        + "\nharvester will not send a request until the job file records an acknowledgement, e.g.\n"
          "  teacher:\n    terms: {acknowledgement: \"<who>, on what basis (e.g. an enterprise agreement)\"}\n"
          "or sets teacher.terms.training_use after checking the terms yourself. This is information, "
          "not legal advice.")
