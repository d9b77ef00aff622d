"""The limiter's room: admission control over a teacher's rate limits (pure, clock injected).

    limiter.py  RateLimiter and Permit: every dimension at once, 429 pauses, learning unknown limits
    window.py   PacedWindow: one dimension as a paced bucket plus a hard one-second window
"""

from .limiter import (
                      BETA_HARD,
                      CONCURRENCY_HINT,
                      DEFAULT_PAUSE,
                      FAULT_BURST,
                      LEARN_START_RPS,
                      PROBE,
                      SHARED_JITTER,
                      Permit,
                      RateLimiter,
)

__all__ = ["BETA_HARD", "CONCURRENCY_HINT", "DEFAULT_PAUSE", "FAULT_BURST", "LEARN_START_RPS", "PROBE",
           "SHARED_JITTER", "Permit", "RateLimiter"]
