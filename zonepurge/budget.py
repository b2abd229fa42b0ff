"""The account's purge budget, shared by every worker on every host, in Redis.

Cloudflare's purge limits are token buckets per account (shared/cloudflare/README.md, "Limits"):
one for purge by URL, costed per URL, and one for tags, hosts, prefixes and purge-everything,
costed per request. Celery's own ``rate_limit`` cannot express them: it is per worker process
(celery/celery #5732), so N workers would send N times the limit. Here every send first takes its
cost from a bucket kept in Redis by one Lua script, so the check and the spend are one atomic
step however many workers ask at once.

Why a Lua script and not a library: the limiter needs three things at once that the Redis
rate-limit libraries we looked at do not combine: a cost per call (URLs), an answer that says how
long to wait (not only yes/no), and a block for a given time after a 429 (``Retry-After``) that
every worker obeys. The script is about thirty lines and is tested against a real Redis.

Time is Redis's clock (``TIME``) unless a clock is injected: workers on several hosts then agree
on it whatever their own clocks say, and tests can move time by hand.

Buckets:

- ``urls``: ``ZONEPURGE_URL_RATE_PER_S``, ``ZONEPURGE_URL_BURST``; cost = URLs in the request.
- ``flex``: ``ZONEPURGE_FLEX_RATE_PER_S``, ``ZONEPURGE_FLEX_BURST``; cost = 1 per request.
- ``general`` (only with ``ZONEPURGE_GENERAL_LIMIT``): Cloudflare's 1,200 requests per 5 minutes
  per token, cost 1 per request. Off by default; docs/budget.md explains why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import redis

from zonepurge import keys
from zonepurge.items import Kind
from zonepurge.settings import Settings

BucketName = Literal["urls", "flex", "general"]

# A bucket's state outlives a quiet spell this long; after it, a new bucket starts full.
_STATE_TTL_S = 24 * 3600

_ACQUIRE = """
-- KEYS: one hash per bucket. ARGV: now (or '' for Redis's clock), then rate, burst, cost per key.
-- Returns '0' when every bucket had the cost (and spent it), else the seconds to wait.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local wait = 0
local after = {}
for i, key in ipairs(KEYS) do
  local rate = tonumber(ARGV[2 + (i - 1) * 3])
  local burst = tonumber(ARGV[3 + (i - 1) * 3])
  local cost = math.min(tonumber(ARGV[4 + (i - 1) * 3]), burst)
  local h = redis.call('HMGET', key, 'tokens', 'ts', 'blocked_until')
  local ts = tonumber(h[2]) or now
  local tokens = math.min(burst, (tonumber(h[1]) or burst) + math.max(0, now - ts) * rate)
  local blocked = tonumber(h[3]) or 0
  local w = 0
  if blocked > now then
    w = blocked - now
  elseif tokens < cost then
    w = (cost - tokens) / rate
  end
  if w > wait then wait = w end
  after[i] = tokens - cost
end
if wait > 0 then return tostring(wait) end
for i, key in ipairs(KEYS) do
  redis.call('HSET', key, 'tokens', tostring(after[i]), 'ts', tostring(now))
  redis.call('EXPIRE', key, %(ttl)d)
end
return '0'
""" % {"ttl": _STATE_TTL_S}

_BLOCK = """
-- KEYS: one bucket hash. ARGV: now (or ''), seconds to block.
-- After a 429 the bucket is empty (Cloudflare says so) and closed until the wait is over.
local now = tonumber(ARGV[1])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local until_ = now + tonumber(ARGV[2])
local current = tonumber(redis.call('HGET', KEYS[1], 'blocked_until')) or 0
if until_ > current then
  redis.call('HSET', KEYS[1], 'blocked_until', tostring(until_))
end
redis.call('HSET', KEYS[1], 'tokens', '0', 'ts', tostring(now))
redis.call('HINCRBY', KEYS[1], 'throttles', 1)
redis.call('EXPIRE', KEYS[1], %(ttl)d + math.ceil(tonumber(ARGV[2])))
return tostring(math.max(until_, current) - now)
""" % {"ttl": _STATE_TTL_S}


@dataclass(frozen=True, slots=True)
class BucketSpec:
    name: BucketName
    rate_per_s: float
    burst: float


@dataclass(frozen=True, slots=True)
class BucketState:
    name: BucketName
    tokens: float
    burst: float
    blocked_for_s: float
    throttles: int


def bucket_for(kind: Kind) -> BucketName:
    return "urls" if kind is Kind.FILES else "flex"


class Budget:
    """Takes a send's cost from its account's buckets, or says how long to wait for it."""

    def __init__(self, client: redis.Redis, settings: Settings,
                 clock: Callable[[], float] | None = None) -> None:
        self._redis = client
        self._settings = settings
        self._clock = clock
        self._acquire = client.register_script(_ACQUIRE)
        self._block = client.register_script(_BLOCK)

    def _now(self) -> str:
        return "" if self._clock is None else repr(self._clock())

    def specs(self, kind: Kind) -> list[BucketSpec]:
        """The buckets a request of this kind draws from."""
        limits = self._settings.limits
        margin = self._settings.budget_margin_s
        if kind is Kind.FILES:
            rate, burst = limits.url_rate_per_s, limits.url_burst
            # Never smaller than one full request, or a full batch could never be paid for.
            own = BucketSpec("urls", rate, max(limits.url_items_per_request, burst - rate * margin))
        else:
            rate, burst = limits.flex_rate_per_s, limits.flex_burst
            own = BucketSpec("flex", rate, max(1.0, burst - rate * margin))
        general = self._settings.general_limit_spec
        if general is None:
            return [own]
        requests, window_s = general
        return [own, BucketSpec("general", requests / window_s, requests)]

    def acquire(self, account: str, kind: Kind, items: int) -> float:
        """Spend the cost of one request of ``items`` items; 0.0 if done, else seconds to wait
        (nothing is spent then)."""
        specs = self.specs(kind)
        args: list[object] = [self._now()]
        for spec in specs:
            cost = items if spec.name == "urls" else 1
            args += [repr(spec.rate_per_s), repr(float(spec.burst)), cost]
        wait = self._acquire(keys=[keys.budget(account, s.name) for s in specs], args=args)
        return float(wait)

    def block(self, account: str, bucket: BucketName, seconds: float) -> float:
        """Close a bucket for ``seconds`` (a 429's wait) for every worker; returns the time the
        bucket stays closed, which an earlier, longer block may extend."""
        return float(self._block(keys=[keys.budget(account, bucket)], args=[self._now(), repr(seconds)]))

    def state(self, account: str, kind: Kind) -> list[BucketState]:
        """Tokens left and blocks in force, for status and metrics (no tokens are spent)."""
        now = self._clock() if self._clock is not None else _redis_time(self._redis)
        states = []
        for spec in self.specs(kind):
            raw = self._redis.hmget(keys.budget(account, spec.name), "tokens", "ts", "blocked_until", "throttles")
            tokens = float(raw[0]) if raw[0] is not None else float(spec.burst)
            ts = float(raw[1]) if raw[1] is not None else now
            tokens = min(float(spec.burst), tokens + max(0.0, now - ts) * spec.rate_per_s)
            blocked = float(raw[2]) if raw[2] is not None else 0.0
            states.append(BucketState(spec.name, tokens, float(spec.burst), max(0.0, blocked - now),
                                      int(raw[3] or 0)))
        return states


def _redis_time(client: redis.Redis) -> float:
    seconds, micros = client.time()
    return seconds + micros / 1_000_000
