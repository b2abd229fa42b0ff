"""Backoff between attempts: a pure function, so it is tested without waiting."""

from __future__ import annotations

import random
from collections.abc import Callable


def full_jitter(attempt: int, base_s: float, cap_s: float,
                rng: Callable[[], float] = random.random) -> float:
    """Seconds to wait before attempt ``attempt + 1``, after ``attempt`` failures (>= 1).

    "Full jitter": uniform in [0, min(cap, base * 2^(attempt - 1))], so that workers that failed
    together do not retry together.
    """
    ceiling = min(cap_s, base_s * 2 ** max(0, attempt - 1))
    return rng() * ceiling
