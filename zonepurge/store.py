"""Everything zonepurge keeps in Redis, as atomic operations on lanes, leases and dead letters.

Producers and workers never touch the keys directly; they call this module, so each invariant
lives in one Lua script or transaction:

- An item is in at most one place: a lane's pending set, one lease, or the dead-letter list.
- Enqueueing deduplicates against the pending set, drops a soft purge whose hard twin is pending
  (and removes a pending soft twin when a hard purge arrives), and adds nothing while a covering
  purge-everything is pending.
- Taking a batch moves its members into a lease with a deadline in one step; a lease is settled
  (purged), dead-lettered, or released back to pending, by its worker or, once its deadline has
  passed, by any worker's sweep.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import redis

from zonepurge import keys
from zonepurge.items import EVERYTHING_MEMBER, Kind, Mode
from zonepurge.lanes import Lane

# Redis's Lua stack takes a few thousand arguments to one command; unpack in slices below that.
_LUA_SLICE = 1000

_ENQUEUE = """
-- KEYS: pending, lanes, twin pending, covering purge-everything pending keys...
-- ARGV: lane id, now ms, mode, members...
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {0, redis.call('ZCARD', KEYS[1]), 1}
  end
end
local slice = tonumber(%(slice)d)
local added = 0
for first = 4, #ARGV, slice do
  local last = math.min(first + slice - 1, #ARGV)
  local members = {unpack(ARGV, first, last)}
  if ARGV[3] == 'invalidate' then
    -- a pending hard purge already covers a soft purge of the same item
    local scores = redis.call('ZMSCORE', KEYS[3], unpack(members))
    local kept = {}
    for j = 1, #members do
      if not scores[j] then kept[#kept + 1] = members[j] end
    end
    members = kept
  else
    redis.call('ZREM', KEYS[3], unpack(members))
  end
  if #members > 0 then
    local zargs = {}
    for j = 1, #members do
      zargs[#zargs + 1] = ARGV[2]
      zargs[#zargs + 1] = members[j]
    end
    added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(zargs))
  end
end
redis.call('SADD', KEYS[2], ARGV[1])
return {added, redis.call('ZCARD', KEYS[1]), 0}
""" % {"slice": _LUA_SLICE}

_ENQUEUE_EVERYTHING = """
-- KEYS: pending, lanes, covering purge-everything pending keys (ARGV[3] of them), subsumed...
-- ARGV: lane id, now ms, number of covering keys, member
local ncover = tonumber(ARGV[3])
for i = 3, 2 + ncover do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {0, 0, 1} end
end
local added = redis.call('ZADD', KEYS[1], 'NX', ARGV[2], ARGV[4])
local moot = 0
for i = 3 + ncover, #KEYS do
  moot = moot + redis.call('ZCARD', KEYS[i])
  redis.call('DEL', KEYS[i])
end
redis.call('SADD', KEYS[2], ARGV[1])
return {added, moot, 0}
"""

_TAKE = """
-- KEYS: pending, lanes, leases, lease
-- ARGV: lane id, cap, now ms, debounce ms, lease deadline ms, lease id
local n = redis.call('ZCARD', KEYS[1])
if n == 0 then
  redis.call('SREM', KEYS[2], ARGV[1])
  return {'empty', 0}
end
local now = tonumber(ARGV[3])
if n < tonumber(ARGV[2]) then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local due = tonumber(oldest[2]) + tonumber(ARGV[4])
  if due > now then return {'wait', tostring(due - now)} end
end
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
local count = #popped / 2
redis.call('HSET', KEYS[4], 'lane', ARGV[1], 'taken_at', ARGV[3], 'count', count,
           'members', cjson.encode(popped))
redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
local reply = {'taken', n - count}
for i = 1, #popped do reply[#reply + 1] = popped[i] end
return reply
"""

_RELEASE = """
-- KEYS: lease, leases, lanes, pending of the lease's lane
-- ARGV: lease id, lane id
local raw = redis.call('HGET', KEYS[1], 'members')
if not raw then return -1 end
local popped = cjson.decode(raw)
local zargs = {}
for i = 1, #popped, 2 do
  zargs[#zargs + 1] = popped[i + 1]
  zargs[#zargs + 1] = popped[i]
end
local returned = 0
if #zargs > 0 then returned = redis.call('ZADD', KEYS[4], 'NX', unpack(zargs)) end
redis.call('SADD', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[1])
return returned
"""


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    added: int
    """Members that were not pending before."""
    pending: int
    """The lane's pending count afterwards."""
    covered: bool
    """True when a pending purge-everything made the whole call moot."""
    moot: int = 0
    """Items a purge-everything removed from other lanes."""


@dataclass(frozen=True, slots=True)
class Batch:
    lease_id: str
    lane: Lane
    members: list[str]
    enqueued_ms: list[float]
    remaining: int


@dataclass(frozen=True, slots=True)
class Take:
    status: Literal["empty", "wait", "taken"]
    wait_s: float = 0.0
    batch: Batch | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One item that will not be purged, and why. Never holds a token."""

    item: str
    zone: str
    environment: str
    kind: str
    mode: str
    reason: str
    code: int | None
    message: str
    attempts: int
    first_enqueued_at: float
    dead_at: float
    lane: str
    id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def to_json(self) -> str:
        return json.dumps({k: getattr(self, k) for k in self.__slots__}, ensure_ascii=False)

    @classmethod
    def from_json(cls, raw: str | bytes) -> DeadLetter:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class LaneStats:
    lane: Lane
    pending: int
    oldest_ms: float | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    lanes: list[LaneStats]
    in_flight_by_lane: dict[str, int]
    dead_letters: int


class Store:
    """The Redis operations of zonepurge. Thread-safe as redis-py's client is."""

    def __init__(self, client: redis.Redis) -> None:
        self.redis = client
        self._enqueue = client.register_script(_ENQUEUE)
        self._enqueue_everything = client.register_script(_ENQUEUE_EVERYTHING)
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)

    # -- producers -------------------------------------------------------------------------

    def enqueue(self, lane: Lane, members: Sequence[str], at_ms: int | None = None) -> EnqueueResult:
        """Add members to a lane's pending set; see the module docstring for what is dropped."""
        if lane.kind is Kind.EVERYTHING:
            return self._add_everything(lane, at_ms or now_ms())
        twin = lane.with_(mode=Mode.PURGE if lane.mode is Mode.INVALIDATE else Mode.INVALIDATE)
        cover = [keys.pending(c.id) for c in lane.covering_everything_lanes()]
        added, pending, covered = self._enqueue(
            keys=[keys.pending(lane.id), keys.LANES, keys.pending(twin.id), *cover],
            args=[lane.id, at_ms or now_ms(), lane.mode.value, *members],
        )
        return EnqueueResult(int(added), int(pending), bool(covered))

    def _add_everything(self, lane: Lane, at_ms: int) -> EnqueueResult:
        cover = [c for c in lane.covering_everything_lanes() if c != lane]
        subsumed = [other for other in self.lanes() if self._subsumes(lane, other)]
        added, moot, covered = self._enqueue_everything(
            keys=[
                keys.pending(lane.id),
                keys.LANES,
                *(keys.pending(c.id) for c in cover),
                *(keys.pending(s.id) for s in subsumed),
            ],
            args=[lane.id, at_ms, len(cover), EVERYTHING_MEMBER],
        )
        return EnqueueResult(int(added), 1, bool(covered), int(moot))

    @staticmethod
    def _subsumes(everything: Lane, other: Lane) -> bool:
        """Whether a pending purge-everything in ``everything`` makes ``other``'s items moot.

        Items another lane already handed to a worker are not touched: they are on their way.
        """
        if other == everything or other.zone != everything.zone:
            return False
        if not (everything.env.is_production or other.env == everything.env):
            return False
        return everything.mode is Mode.PURGE or other.mode is Mode.INVALIDATE

    def lanes(self) -> list[Lane]:
        return [Lane.parse(raw.decode()) for raw in self.redis.smembers(keys.LANES)]

    # -- flush scheduling ------------------------------------------------------------------

    def mark_flush_queued(self, lane: Lane, ttl_s: float) -> bool:
        """True if no flush was queued for the lane; the caller then queues one."""
        return bool(self.redis.set(keys.flush_queued(lane.id), 1, nx=True, px=max(1, int(ttl_s * 1000))))

    def clear_flush_queued(self, lane: Lane) -> None:
        self.redis.delete(keys.flush_queued(lane.id))

    # -- workers ---------------------------------------------------------------------------

    def take(self, lane: Lane, cap: int, debounce_s: float, lease_s: float,
             at_ms: int | None = None) -> Take:
        """Lease up to ``cap`` of the oldest members, once a full batch or the oldest is due."""
        at = at_ms or now_ms()
        lease_id = uuid.uuid4().hex
        reply = self._take(
            keys=[keys.pending(lane.id), keys.LANES, keys.LEASES, keys.lease(lease_id)],
            args=[lane.id, cap, at, int(debounce_s * 1000), at + int(lease_s * 1000), lease_id],
        )
        status = reply[0].decode()
        if status == "empty":
            return Take("empty")
        if status == "wait":
            return Take("wait", wait_s=float(reply[1]) / 1000)
        flat = reply[2:]
        members = [m.decode() for m in flat[0::2]]
        scores = [float(s) for s in flat[1::2]]
        return Take("taken", batch=Batch(lease_id, lane, members, scores, int(reply[1])))

    def settle(self, batch: Batch, dead: Iterable[DeadLetter] = ()) -> bool:
        """The batch is done: purged, or recorded as dead letters. False if the lease had
        already expired and been released (the items are then pending again: sent twice at
        worst, never lost)."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.delete(keys.lease(batch.lease_id))
        pipe.zrem(keys.LEASES, batch.lease_id)
        records = [d.to_json() for d in dead]
        if records:
            pipe.rpush(keys.DEAD_LETTERS, *records)
        existed, *_ = pipe.execute()
        return bool(existed)

    def release(self, lease_id: str) -> int:
        """Return a lease's members to pending with their original times; -1 if it is gone."""
        raw_lane = self.redis.hget(keys.lease(lease_id), "lane")
        if raw_lane is None:
            return -1
        lane_id = raw_lane.decode()
        return int(
            self._release(
                keys=[keys.lease(lease_id), keys.LEASES, keys.LANES, keys.pending(lane_id)],
                args=[lease_id, lane_id],
            )
        )

    def release_expired(self, at_ms: int | None = None, limit: int = 100) -> list[Lane]:
        """Release leases whose deadline has passed (their worker died or hung)."""
        expired = self.redis.zrangebyscore(keys.LEASES, "-inf", at_ms or now_ms(), start=0, num=limit)
        lanes = []
        for raw in expired:
            lease_id = raw.decode()
            lane_id = self.redis.hget(keys.lease(lease_id), "lane")
            if self.release(lease_id) >= 0 and lane_id is not None:
                lanes.append(Lane.parse(lane_id.decode()))
            else:
                self.redis.zrem(keys.LEASES, lease_id)  # a lease settled as we looked
        return lanes

    # -- dead letters ----------------------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_json(raw) for raw in self.redis.lrange(keys.DEAD_LETTERS, 0, -1)]

    # -- receipts --------------------------------------------------------------------------

    def save_receipt(self, receipt_id: str, fields: dict[str, Any], ttl_s: int) -> None:
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(keys.receipt(receipt_id), mapping={k: json.dumps(v) for k, v in fields.items()})
        pipe.expire(keys.receipt(receipt_id), ttl_s)
        pipe.execute()

    def receipt(self, receipt_id: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(keys.receipt(receipt_id))
        return {k.decode(): json.loads(v) for k, v in raw.items()} if raw else None

    # -- environments cache ----------------------------------------------------------------

    def cached_environments(self, zone: str) -> list[dict[str, Any]] | None:
        raw = self.redis.get(keys.environments(zone))
        return json.loads(raw) if raw is not None else None

    def cache_environments(self, zone: str, environments: list[dict[str, Any]], ttl_s: float) -> None:
        self.redis.set(keys.environments(zone), json.dumps(environments), px=int(ttl_s * 1000))

    # -- failures (for backoff) ------------------------------------------------------------

    def count_failure(self, lane: Lane, ttl_s: float) -> int:
        key = keys.failures(lane.id)
        pipe = self.redis.pipeline(transaction=True)
        pipe.incr(key)
        pipe.expire(key, max(1, int(ttl_s)))
        count, _ = pipe.execute()
        return int(count)

    def clear_failures(self, lane: Lane) -> None:
        self.redis.delete(keys.failures(lane.id))

    # -- status ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        lanes = self.lanes()
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.zcard(keys.pending(lane.id))
            pipe.zrange(keys.pending(lane.id), 0, 0, withscores=True)
        lease_ids = [raw.decode() for raw in self.redis.zrange(keys.LEASES, 0, -1)]
        for lease_id in lease_ids:
            pipe.hmget(keys.lease(lease_id), "lane", "count")
        pipe.llen(keys.DEAD_LETTERS)
        replies = pipe.execute()
        stats = []
        for i, lane in enumerate(lanes):
            count, oldest = replies[2 * i], replies[2 * i + 1]
            stats.append(LaneStats(lane, int(count), oldest[0][1] if oldest else None))
        in_flight: dict[str, int] = {}
        for lane_raw, count in replies[2 * len(lanes) : -1]:
            if lane_raw is not None:
                in_flight[lane_raw.decode()] = in_flight.get(lane_raw.decode(), 0) + int(count or 0)
        return Snapshot(stats, in_flight, int(replies[-1]))
