"""What a request costs: the rates in force at a time, and a usage's cost with its cache details.

Pure: a price (harvester.providers.base.ModelPrice), token counts and a time in, dollars out.

`list` prices every input token as fresh, at the day's highest rates, synchronously: the figure a
flat price list gives, and the reservation's basis. What was paid is less by three savings, taken in
this order: caching (cached input at its rate, cache writes at theirs: a premium can make it
negative), the hour (the rates in force when the request was sent), and batches (the batch factor).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .providers.base import ModelPrice, Rates


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """One request's tokens as the provider reported them; `input` counts the cached ones too."""

    input: int
    output: int
    cached: int = 0                  # read from the provider's prompt cache
    cache_write: int = 0             # written to it (Anthropic)


@dataclass(frozen=True, slots=True)
class Cost:
    list: float                      # USD at list price (see the module's docstring)
    paid: float
    saved_cache: float = 0.0
    saved_hour: float = 0.0
    saved_batch: float = 0.0


def rates_at(price: ModelPrice, when: datetime) -> tuple[Rates, str | None]:
    """The rates in force at `when` (UTC), and the label of the window that sets them (None: standard)."""
    for w in price.windows:
        if any(span.contains(when) for span in w.spans):
            return w.rates, w.label
    return price.rates, None


def highest(price: ModelPrice) -> Rates:
    """The day's highest rates, each on its own (the worst case a reservation prices)."""
    every = [price.rates, *(w.rates for w in price.windows)]
    return Rates(max(r.input for r in every), max(r.output for r in every),
                 max(_cached(r) for r in every), max(_write(r) for r in every))


def worst_usd(price: ModelPrice, input_tokens: float, output_tokens: float) -> float:
    """A request's worst case: every input token at the highest input rate of the day (a cache
    write where it costs more than fresh input), every output token at the highest output rate."""
    top = highest(price)
    return _dollars((input_tokens, max(top.input, _write(top))), (output_tokens, top.output))


def cost(price: ModelPrice, usage: TokenUsage, when: datetime | None, *, batch_factor: float = 1.0) -> Cost:
    """The usage's cost, sent at `when` (None: an hour not known, priced at the day's highest rates)."""
    top = highest(price)
    listed = _dollars((usage.input, top.input), (usage.output, top.output))
    cached = _priced(top, usage)
    at_hour = cached if when is None else _priced(rates_at(price, when)[0], usage)
    paid = at_hour * batch_factor
    return Cost(listed, paid, listed - cached, cached - at_hour, at_hour - paid)


def _priced(r: Rates, u: TokenUsage) -> float:
    cached = min(max(u.cached, 0), u.input)
    write = min(max(u.cache_write, 0), u.input - cached)
    fresh = u.input - cached - write
    return _dollars((fresh, r.input), (cached, _cached(r)), (write, _write(r)), (u.output, r.output))


def _dollars(*tokens_at_rate: tuple[float, float]) -> float:
    """USD for (tokens, USD per million tokens) pairs: the one place a price is applied."""
    return sum(tokens * rate for tokens, rate in tokens_at_rate) / 1e6


def _cached(r: Rates) -> float:
    return r.input if r.cached_input is None else r.cached_input


def _write(r: Rates) -> float:
    return r.input if r.cache_write is None else r.cache_write


__all__ = ["Cost", "TokenUsage", "cost", "highest", "rates_at", "worst_usd"]
