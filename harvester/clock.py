"""The time a run goes by: the quota's day and month, the price in force, the schedule.

`HARVESTER_NOW` (an ISO time, e.g. 2026-12-01T16:29:50Z) makes the process start at that UTC time
and run on from there at the real pace: a rehearsal (and a test) of a schedule or of hourly prices
without waiting for the hour. Nothing else reads it.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from .errors import ConfigError


def _offset() -> timedelta:
    text = os.environ.get("HARVESTER_NOW", "").strip()
    if not text:
        return timedelta(0)
    try:
        start = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigError(f"HARVESTER_NOW: {text!r} is not an ISO time; write e.g. 2026-12-01T16:29:50Z, "
                          "or unset it") from None
    if start.tzinfo is None:
        start = start.replace(tzinfo=UTC)
    return start - datetime.now(UTC)


_OFFSET = _offset()


def utc_now() -> datetime:
    """Now, as an aware UTC datetime (shifted by HARVESTER_NOW, if set)."""
    return datetime.now(UTC) + _OFFSET


__all__ = ["utc_now"]
