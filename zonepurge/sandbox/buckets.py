"""Rate limiting for the sandbox: Cloudflare's purge token buckets and its general API limit.

Pure bookkeeping: time comes from an injected clock (seconds, monotonic), nothing sleeps and
nothing does I/O, so tests drive both classes with a fake clock.
"""

from __future__ import annotations

import math
from collections.abc import Callable

Clock = Callable[[], float]

# Float refill arithmetic can leave a bucket a hair short of a whole token; without the slack a
# caller who waited exactly the advertised time could be refused once more.
_EPSILON = 1e-9


def retry_after_header(wait_s: float) -> int:
    """Whole seconds for a ``Retry-After`` header: rounded up, so waiting that long is enough,
    and at least 1 for any positive wait (0 would invite an immediate retry)."""
    if wait_s <= 0:
        return 0
    return max(1, math.ceil(wait_s - _EPSILON))


class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate_per_s``, starting full.

    :meth:`try_take` is all-or-nothing: a refused request takes nothing, so a client that is
    told to wait and does wait finds exactly the tokens it was promised.
    """

    def __init__(self, rate_per_s: float, capacity: float, clock: Clock) -> None:
        if rate_per_s <= 0 or capacity <= 0:
            raise ValueError("rate_per_s and capacity must be positive")
        self.rate_per_s = rate_per_s
        self.capacity = capacity
        self._clock = clock
        self._tokens = float(capacity)
        self._updated = clock()

    def __repr__(self) -> str:
        return (
            f"TokenBucket(rate_per_s={self.rate_per_s}, capacity={self.capacity}, "
            f"available={self.available:.3f})"
        )

    def _refill(self) -> None:
        now = self._clock()
        # A clock that steps back (it should not) must not drain the bucket.
        elapsed = max(0.0, now - self._updated)
        self._tokens = min(self.capacity, self._tokens + elapsed * self.rate_per_s)
        self._updated = now

    @property
    def available(self) -> float:
        """Tokens in the bucket now."""
        self._refill()
        return self._tokens

    def try_take(self, cost: float) -> float:
        """Take ``cost`` tokens if they are there.

        Returns 0.0 when taken, else the seconds until the bucket will hold ``cost`` tokens
        (and takes nothing). A cost above the capacity could never be met; it is treated as
        the whole bucket, so an oversized request waits for a full bucket and then empties it.
        """
        cost = min(float(cost), self.capacity)
        self._refill()
        if self._tokens + _EPSILON >= cost:
            self._tokens = max(0.0, self._tokens - cost)
            return 0.0
        return (cost - self._tokens) / self.rate_per_s


class BlockingWindow:
    """Cloudflare's general API limit: ``requests`` calls per ``window_s`` seconds; the call that
    goes over starts a block of ``window_s`` seconds in which every call is refused.

    Windows are fixed (they start at the first call after the previous one ended), which is
    the simplest reading of "1,200 requests per 5 minutes"; refused calls do not count.
    """

    def __init__(self, requests: int, window_s: float, clock: Clock) -> None:
        if requests < 1 or window_s <= 0:
            raise ValueError("requests must be >= 1 and window_s positive")
        self.requests = requests
        self.window_s = window_s
        self._clock = clock
        self._window_start: float | None = None
        self._count = 0
        self._blocked_until: float | None = None

    def __repr__(self) -> str:
        return f"BlockingWindow(requests={self.requests}, window_s={self.window_s})"

    def hit(self) -> float:
        """Count one call. Returns 0.0 if it is allowed, else the seconds left in the block."""
        now = self._clock()
        if self._blocked_until is not None:
            if now < self._blocked_until:
                return self._blocked_until - now
            self._blocked_until = None
            self._window_start = None
        if self._window_start is None or now - self._window_start >= self.window_s:
            self._window_start = now
            self._count = 0
        if self._count >= self.requests:
            self._blocked_until = now + self.window_s
            return self.window_s
        self._count += 1
        return 0.0
