"""Numbers for people: counts with thousands separators, money that never reads `$-0.0000`."""

from __future__ import annotations

import math


def count_text(value: float | None) -> str:
    """`2,000,000`, not `2e+06`; a fractional value keeps one decimal (`1,500.5`)."""
    if value is None:
        return "-"
    if math.isfinite(value) and float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def usd_text(value: float | None) -> str:
    """Dollars at a precision that suits the amount: `$1,234.57`, `$4.9986`, `$0.0123`, `<$0.0001`, `$0.00`.

    Ledger sums are floats added and subtracted many times: a released reservation can leave -1e-18,
    which must read as zero, not `$-0.0000`."""
    if value is None:
        return "-"
    if abs(value) < 1e-9 or -0.0001 < value < 0:
        return "$0.00"
    sign = "-" if value < 0 else ""
    v = abs(value)
    if v >= 1000:  # cents are noise here; below, 4 decimals keep a small spend visible ($4.9986 left of $5)
        return f"{sign}${v:,.2f}"
    if v >= 0.0001:
        return f"{sign}${v:.4f}"
    return "<$0.0001"


def duration_text(seconds: float | None) -> str:
    """`45s`, `12m 5s`, `3h 20m`, `2d 4h`; `unknown` for None."""
    if seconds is None:
        return "unknown"
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m {s}s"
    h, m = divmod(m, 60)
    if h < 48:
        return f"{h}h {m}m"
    d, h = divmod(h, 24)
    return f"{d:,}d {h}h"
