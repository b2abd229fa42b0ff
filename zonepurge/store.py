"""Everything zonepurge keeps in Redis, as atomic operations on lanes, leases and dead letters.

Producers and workers never touch the keys directly; they call this module, so each invariant
lives in one Lua script or transaction:

- An item is in at most one place: a lane's pending set, one lease, or the dead-letter list.
- Enqueueing deduplicates against the pending set (an item pending already keeps its first
  enqueue time), drops a soft purge whose hard twin is pending, and removes a pending soft twin
  when a hard purge arrives; a file is staged out of sight and joins its lane the same way.
- Taking a batch waits while a covering purge-everything is pending, and while the lane backs
  off after a failed send.
- Taking a batch moves its members into a lease with a deadline in one step; a lease is settled
  (purged), dead-lettered, or released back to pending, by its worker or, once its deadline has
  passed, by any worker's sweep.
- A receipt follows its items: enqueueing registers the receipt on each member's watch entry in
  the same script that adds it, and whatever settles a member (purged, dead-lettered, dropped
  under a purge-everything, redirected to another lane) settles or moves its watchers in the
  same transaction. docs/architecture.md, "Receipts", explains the design.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal

import redis

from zonepurge import keys
from zonepurge.items import EVERYTHING_MEMBER, Kind, Mode
from zonepurge.lanes import Lane

# Redis's Lua stack takes a few thousand arguments to one command; unpack in slices below that.
_LUA_SLICE = 1000

# Times are Redis's (TIME) unless a caller passes its own (tests): producers and workers on
# several hosts then agree on "before" and "after", which purge-everything depends on.
_NOW = f"local SLICE = {_LUA_SLICE}\n" + """
local function now_ms(given)
  local n = tonumber(given)
  if n then return n end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
"""

# Watch entries: zp:watch:{lane} maps a member to the comma-joined ids of the receipts waiting
# for it. Each id in an entry stands for one item of its receipt; the receipt's ``outstanding``
# counts them, and reaches 0 once every one was settled. A receipt still being registered (a
# bulk file, chunk by chunk) carries ``open`` and is not complete before it is sealed. Receipt
# keys are built from a prefix passed in (zonepurge.keys spells it): scripts touch receipts they
# cannot declare, which a single Redis allows (Cluster is not supported, docs/architecture.md).
_WATCH = """
local function seconds(ms) return string.format('%.3f', ms / 1000) end

-- Hands a member's watchers to another member (of this or another lane), all of them: when
-- two URLs become one prefix, the prefix carries both URLs' receipts, each once per URL.
local function watch_move(from_watch, from_member, to_watch, to_member)
  local ids = redis.call('HGET', from_watch, from_member)
  if not ids then return end
  redis.call('HDEL', from_watch, from_member)
  local cur = redis.call('HGET', to_watch, to_member)
  redis.call('HSET', to_watch, to_member, cur and (cur .. ',' .. ids) or ids)
end

-- Members are done (field: 'purged' or 'dead_lettered'): each receipt waiting for them counts
-- them, and one whose last item this was, and that is sealed, is complete. Bulk calls per
-- slice of members, and one update per receipt, however many of its members are settled.
local function watch_settle_all(watch, members, field, receipt_prefix, now)
  local per_receipt = {}
  for first = 1, #members, SLICE do
    local part = {unpack(members, first, math.min(first + SLICE - 1, #members))}
    local entries = redis.call('HMGET', watch, unpack(part))
    local gone = {}
    for j = 1, #part do
      if entries[j] then
        gone[#gone + 1] = part[j]
        for id in string.gmatch(entries[j], '[^,]+') do
          per_receipt[id] = (per_receipt[id] or 0) + 1
        end
      end
    end
    if #gone > 0 then redis.call('HDEL', watch, unpack(gone)) end
  end
  for id, count in pairs(per_receipt) do
    local key = receipt_prefix .. id
    -- A receipt past its TTL is gone; counting into it would bring it back without one.
    if redis.call('EXISTS', key) == 1 then
      redis.call('HINCRBY', key, field, count)
      local left = redis.call('HINCRBY', key, 'outstanding', -count)
      if left <= 0 and redis.call('HEXISTS', key, 'open') == 0 then
        redis.call('HSETNX', key, 'completed_at', seconds(now))
      end
    end
  end
end
"""

# Adding members to a lane, shared by a request's enqueue and a staged file's slices. Every
# Redis call here is made once per slice of members, never once per member: a file of a million
# URLs is enqueued at the speed of a few bulk commands (bench/, docs/benchmarks.md).
_ADD_MEMBERS = """
-- Adds `all` (a table of members) to lane `k` (pending, lanes, twin, watch, twin_watch: the
-- lane's keys), dropping soft purges whose hard twin is pending and removing pending soft twins
-- of hard purges; registers receipt `rid` (or '') on each member once. Returns the members
-- newly pending, and the members the receipt now waits for.
local function add_members(k, all, mode, rid, now)
  local twin_pending = redis.call('EXISTS', k.twin) == 1
  local added, watched = 0, 0
  local seen = {}
  local function watch_add_all(watch, list)
    if rid == '' or #list == 0 then return end
    local cur = redis.call('HMGET', watch, unpack(list))
    local hset = {}
    for j = 1, #list do
      local member, c = list[j], cur[j]
      if not seen[member] then
        seen[member] = true
        if not c then
          hset[#hset + 1] = member
          hset[#hset + 1] = rid
          watched = watched + 1
        elseif not string.find(',' .. c .. ',', ',' .. rid .. ',', 1, true) then
          hset[#hset + 1] = member
          hset[#hset + 1] = c .. ',' .. rid
          watched = watched + 1
        end
      end
    end
    if #hset > 0 then redis.call('HSET', watch, unpack(hset)) end
  end
  for first = 1, #all, SLICE do
    local members = {unpack(all, first, math.min(first + SLICE - 1, #all))}
    local kept = members
    if twin_pending then
      local twin = redis.call('ZMSCORE', k.twin, unpack(members))
      if mode == 'invalidate' then
        -- a pending hard purge already covers a soft purge of the same item: wait for it
        local covered = {}
        kept = {}
        for j = 1, #members do
          if twin[j] then covered[#covered + 1] = members[j] else kept[#kept + 1] = members[j] end
        end
        watch_add_all(k.twin_watch, covered)
      else
        -- a pending soft purge of the same item is moot: its receipts wait for this one instead
        local moot = {}
        for j = 1, #members do
          if twin[j] then
            moot[#moot + 1] = members[j]
            watch_move(k.twin_watch, members[j], k.watch, members[j])
          end
        end
        if #moot > 0 then redis.call('ZREM', k.twin, unpack(moot)) end
      end
    end
    if #kept > 0 then
      local zargs = {}
      for j = 1, #kept do
        zargs[#zargs + 1] = now
        zargs[#zargs + 1] = kept[j]
      end
      added = added + redis.call('ZADD', k.pending, 'NX', unpack(zargs))
      watch_add_all(k.watch, kept)
    end
  end
  redis.call('SADD', k.lanes, k.lane_id)
  return added, watched
end

local function open_receipt(key, rid, watched, ttl)
  if rid == '' then return end
  redis.call('HINCRBY', key, 'outstanding', watched)
  redis.call('HSET', key, 'open', '1')
  redis.call('EXPIRE', key, tonumber(ttl))
end
"""

_ENQUEUE = _NOW + _WATCH + _ADD_MEMBERS + """
-- KEYS: pending, lanes, twin pending (the same lane in the other mode), watch, twin watch,
--       receipt
-- ARGV: lane id, now ms (or ''), mode, receipt id (or ''), receipt ttl s, member count,
--       members joined by newlines (no member holds one: zonepurge.items forbids it)
local all = {}
for m in string.gmatch(ARGV[7], '[^\\n]+') do all[#all + 1] = m end
if #all ~= tonumber(ARGV[6]) then
  return redis.error_reply('enqueue: expected ' .. ARGV[6] .. ' members, read ' .. #all)
end
local k = {pending = KEYS[1], lanes = KEYS[2], twin = KEYS[3], watch = KEYS[4],
           twin_watch = KEYS[5], lane_id = ARGV[1]}
local added, watched = add_members(k, all, ARGV[3], ARGV[4], now_ms(ARGV[2]))
open_receipt(KEYS[6], ARGV[4], watched, ARGV[5])
return {added, redis.call('ZCARD', KEYS[1])}
"""

# A file is staged while it is read: its members go to a sorted set and a watch hash of the
# receipt's own, out of every worker's sight, so that Redis stores them while the producer
# validates the lines that follow (the two work at once, on two cores). Once the whole file is
# valid, the stage becomes the lane's in one step; a bad line, or a producer that dies, leaves
# nothing in the queue (the stage is dropped, or expires).
_STAGE = _NOW + """
-- KEYS: stage, stage watch. ARGV: now ms (or ''), receipt id, ttl s, member count, members
-- joined by newlines. Returns the members new to the stage.
local now = now_ms(ARGV[1])
local added = 0
local all = {}
for m in string.gmatch(ARGV[5], '[^\\n]+') do all[#all + 1] = m end
if #all ~= tonumber(ARGV[4]) then
  return redis.error_reply('stage: expected ' .. ARGV[4] .. ' members, read ' .. #all)
end
for first = 1, #all, SLICE do
  local last = math.min(first + SLICE - 1, #all)
  local zargs, hargs = {}, {}
  for j = first, last do
    zargs[#zargs + 1] = now
    zargs[#zargs + 1] = all[j]
    hargs[#hargs + 1] = all[j]
    hargs[#hargs + 1] = ARGV[2]
  end
  added = added + redis.call('ZADD', KEYS[1], 'NX', unpack(zargs))
  redis.call('HSET', KEYS[2], unpack(hargs))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
redis.call('EXPIRE', KEYS[2], tonumber(ARGV[3]))
return added
"""

_COMMIT_STAGE = _NOW + _WATCH + """
-- The whole file was valid: its stage becomes the lane's pending set and watch hash, in one
-- step, by renaming them, after the few items the lane already holds were folded into the stage
-- (with what the enqueue script does to them: an item pending already keeps its older time; a
-- soft purge whose hard twin is pending waits for the twin; a pending soft twin of a hard purge
-- is dropped, its receipts waiting for the hard one). A lane holding more than `limit` items
-- (pending, watched or twins) answers 'busy': the stage is then merged slice by slice instead
-- (_MERGE_STAGE_SLICE), so that no script blocks Redis for long.
-- KEYS: stage, stage watch, pending, lanes, twin pending, watch, twin watch, receipt
-- ARGV: lane id, mode, receipt id, receipt ttl s, limit, members staged
-- Reply: {newly pending, the lane's pending count, members the receipt waits for}, {'busy'}, or
-- {'lost', members found}: fewer than were staged (the stage expired, or Redis evicted it).
local stage, stage_watch, pending, twin, watch, twin_watch = KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[6], KEYS[7]
local rid = ARGV[3]
local staged = redis.call('ZCARD', stage)
if staged ~= tonumber(ARGV[6]) then return {'lost', staged} end
local held = redis.call('ZCARD', pending) + redis.call('HLEN', watch) + redis.call('ZCARD', twin)
if held > tonumber(ARGV[5]) then return {'busy'} end
local already = 0
if redis.call('EXISTS', twin) == 1 then
  local twins = redis.call('ZRANGE', twin, 0, -1)
  for first = 1, #twins, SLICE do
    local part = {unpack(twins, first, math.min(first + SLICE - 1, #twins))}
    local in_stage = redis.call('ZMSCORE', stage, unpack(part))
    for j = 1, #part do
      local m = part[j]
      if in_stage[j] then
        if ARGV[2] == 'invalidate' then
          -- staged soft purge, hard twin pending: the receipt waits for the twin
          redis.call('ZREM', stage, m)
          redis.call('HDEL', stage_watch, m)
          local cur = redis.call('HGET', twin_watch, m)
          redis.call('HSET', twin_watch, m, cur and (cur .. ',' .. rid) or rid)
          already = already + 1
        else
          -- staged hard purge, soft twin pending: the twin is moot, its receipts wait here
          redis.call('ZREM', twin, m)
          watch_move(twin_watch, m, stage_watch, m)
        end
      end
    end
  end
end
if redis.call('EXISTS', pending) == 1 then
  local held_items = redis.call('ZRANGE', pending, 0, -1, 'WITHSCORES')
  for first = 1, #held_items, 2 * SLICE do
    local members, zargs = {}, {}
    for j = first, math.min(first + 2 * SLICE - 1, #held_items), 2 do
      members[#members + 1] = held_items[j]
      zargs[#zargs + 1] = held_items[j + 1]
      zargs[#zargs + 1] = held_items[j]
    end
    for _, score in ipairs(redis.call('ZMSCORE', stage, unpack(members))) do
      if score then already = already + 1 end
    end
    -- A member pending already keeps its time, as with the enqueue script's ZADD NX: the time
    -- it was first enqueued, which a purge-everything compares with the time it was sent.
    redis.call('ZADD', stage, unpack(zargs))
  end
end
if redis.call('EXISTS', watch) == 1 then
  local entries = redis.call('HGETALL', watch)
  for j = 1, #entries, 2 do
    local m, ids = entries[j], entries[j + 1]
    local cur = redis.call('HGET', stage_watch, m)
    redis.call('HSET', stage_watch, m, cur and (ids .. ',' .. cur) or ids)
  end
end
if redis.call('EXISTS', stage) == 1 then redis.call('RENAME', stage, pending) end
if redis.call('EXISTS', stage_watch) == 1 then
  redis.call('RENAME', stage_watch, watch)
  redis.call('PERSIST', watch)
end
redis.call('PERSIST', pending)
redis.call('SADD', KEYS[4], ARGV[1])
if rid ~= '' then
  redis.call('HINCRBY', KEYS[8], 'outstanding', staged)
  redis.call('HSET', KEYS[8], 'open', '1')
  redis.call('EXPIRE', KEYS[8], tonumber(ARGV[4]))
end
return {staged - already, redis.call('ZCARD', pending), staged}
"""

_MERGE_STAGE_SLICE = _NOW + _WATCH + _ADD_MEMBERS + """
-- A busy lane: enqueue up to `count` staged members as a request's would be (add_members).
-- KEYS: stage, stage watch, pending, lanes, twin pending, watch, twin watch, receipt
-- ARGV: lane id, mode, receipt id, receipt ttl s, count
-- Reply: {newly pending, the lane's pending count, staged members left}
local popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[5]))
local all = {}
for j = 1, #popped, 2 do all[#all + 1] = popped[j] end
-- Their staged watch entries go with them, a slice at a time (add_members registers the
-- receipt anew): no big delete at the end.
for first = 1, #all, SLICE do
  redis.call('HDEL', KEYS[2], unpack(all, first, math.min(first + SLICE - 1, #all)))
end
local k = {pending = KEYS[3], lanes = KEYS[4], twin = KEYS[5], watch = KEYS[6],
           twin_watch = KEYS[7], lane_id = ARGV[1]}
local added, watched = add_members(k, all, ARGV[2], ARGV[3], now_ms(''))
open_receipt(KEYS[8], ARGV[3], watched, ARGV[4])
local left = redis.call('ZCARD', KEYS[1])
if left == 0 then redis.call('DEL', KEYS[2]) end  -- empty by now, or nearly
return {added, redis.call('ZCARD', KEYS[3]), left}
"""

_TAKE = _NOW + """
-- KEYS: pending, lanes, leases, lease, split, watch, backoff, covering purge-everything pending
--       keys...
-- ARGV: lane id, cap, now ms (or ''), debounce ms, lease ms, lease id
-- Reply when taken: 'taken', items still waiting, origin, now, then the batch's members, their
-- first-enqueue times and the receipts waiting for them, each list joined into one string
-- (members by newlines, which no member holds; the others by commas): three strings for the
-- worker to split, not a thousand replies to parse.
local now = now_ms(ARGV[3])
-- While a purge-everything that covers this lane is pending, the lane's items wait for it:
-- once it is purged they are dropped, and if it is not, they go out themselves.
for i = 8, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then return {'covered', 0} end
end
-- After a failed send the lane backs off: no batch goes out before then, whoever flushes it.
local not_before = tonumber(redis.call('GET', KEYS[7]))
if not_before and not_before > now then return {'wait', tostring(not_before - now)} end
-- A batch Cloudflare refused and that was halved goes first, whatever its size.
local split = redis.call('LPOP', KEYS[5])
local popped
local origin = 'pending'
local n = redis.call('ZCARD', KEYS[1])
if split then
  popped = cjson.decode(split)
  origin = 'split'
else
  if n == 0 then
    redis.call('SREM', KEYS[2], ARGV[1])
    return {'empty', 0}
  end
  if n < tonumber(ARGV[2]) then
    local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
    local due = tonumber(oldest[2]) + tonumber(ARGV[4])
    if due > now then return {'wait', tostring(due - now)} end
  end
  popped = redis.call('ZPOPMIN', KEYS[1], tonumber(ARGV[2]))
  n = n - #popped / 2
end
redis.call('HSET', KEYS[4], 'lane', ARGV[1], 'taken_at', tostring(now), 'count', #popped / 2,
           'origin', origin, 'members', cjson.encode(popped))
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[5]), ARGV[6])
local members, scores = {}, {}
for i = 1, #popped, 2 do
  members[#members + 1] = popped[i]
  scores[#scores + 1] = popped[i + 1]
end
local receipts, seen = {}, {}
for first = 1, #members, %(slice)d do
  local entries = redis.call('HMGET', KEYS[6], unpack(members, first, math.min(first + %(slice)d - 1, #members)))
  for j = 1, #entries do
    if entries[j] then
      for id in string.gmatch(entries[j], '[^,]+') do
        if not seen[id] then
          seen[id] = true
          receipts[#receipts + 1] = id
        end
      end
    end
  end
end
return {'taken', n + redis.call('LLEN', KEYS[5]), origin, tostring(now), table.concat(members, '\\n'),
        table.concat(scores, ','), table.concat(receipts, ',')}
""" % {"slice": _LUA_SLICE}

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


_REPLAY = """
-- KEYS: dead letters, pending, attempts, lanes. ARGV: raw record, member, now ms, lane id
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('ZADD', KEYS[2], 'NX', ARGV[3], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('SADD', KEYS[4], ARGV[4])
return 1
"""

_SETTLE = _NOW + _WATCH + """
-- What a finished batch did to its receipts. Queued inside Store.finish's transaction.
-- KEYS: watch, pending, redirect target's watch (or the watch again), attempts
-- ARGV: receipt prefix, now ms (or ''), JSON {purged: [m...], dead: [m...], moved: [[m, to]...]}
local now = now_ms(ARGV[2])
local done = cjson.decode(ARGV[3])
for _, pair in ipairs(done.moved) do
  watch_move(KEYS[1], pair[1], KEYS[3], pair[2])
end
for field, members in pairs({purged = done.purged, dead_lettered = done.dead}) do
  if #members > 0 then
    -- Enqueued again while its batch was out: its receipts wait for the copy now pending,
    -- which may carry content newer than what was just sent.
    local settled = {}
    for first = 1, #members, %(slice)d do
      local part = {unpack(members, first, math.min(first + %(slice)d - 1, #members))}
      local again = redis.call('ZMSCORE', KEYS[2], unpack(part))
      for j = 1, #part do
        if not again[j] then settled[#settled + 1] = part[j] end
      end
    end
    watch_settle_all(KEYS[1], settled, field, ARGV[1], now)
  end
end
-- The members no longer to be sent forget their failed attempts (rarely any: checked first).
if redis.call('EXISTS', KEYS[4]) == 1 then
  local finished = {}
  for _, m in ipairs(done.purged) do finished[#finished + 1] = m end
  for _, m in ipairs(done.dead) do finished[#finished + 1] = m end
  for _, pair in ipairs(done.moved) do finished[#finished + 1] = pair[1] end
  for first = 1, #finished, %(slice)d do
    redis.call('HDEL', KEYS[4], unpack(finished, first, math.min(first + %(slice)d - 1, #finished)))
  end
end
return 1
""" % {"slice": _LUA_SLICE}

_BACK_OFF = _NOW + """
-- KEYS: backoff. ARGV: now ms (or ''), ms to wait. Queued inside Store.finish's transaction.
local now = now_ms(ARGV[1])
local wait = tonumber(ARGV[2])
redis.call('SET', KEYS[1], tostring(now + wait), 'PX', math.max(1, math.ceil(wait)))
return 1
"""

_DROP_COVERED = _NOW + _WATCH + """
-- A purge-everything was purged: drop up to `most` of the items it covered, settling their
-- receipts as purged. Store.drop_covered calls it until none is left, so that a million covered
-- items never block Redis in one script.
-- KEYS: pending, watch, pending, watch, ... (one pair per covered lane)
-- ARGV: taken-at ms (items first enqueued up to then are covered), receipt prefix, now ms (or ''),
--       most
-- Reply: {items dropped, 1 if there may be more}
local now = now_ms(ARGV[3])
local slice = tonumber(%(slice)d)
local left = tonumber(ARGV[4])
local dropped = 0
for i = 1, #KEYS, 2 do
  if left <= 0 then break end
  local members = redis.call('ZRANGEBYSCORE', KEYS[i], '-inf', ARGV[1], 'LIMIT', 0, left)
  for first = 1, #members, slice do
    redis.call('ZREM', KEYS[i], unpack(members, first, math.min(first + slice - 1, #members)))
  end
  watch_settle_all(KEYS[i + 1], members, 'purged', ARGV[2], now)
  dropped = dropped + #members
  left = left - #members
end
return {dropped, left <= 0 and 1 or 0}
""" % {"slice": _LUA_SLICE}

_SEAL_RECEIPT = _NOW + _WATCH + """
-- Writes a receipt's fields and seals it: no more items will be registered to it, so it is
-- complete now if every item it waits for was settled already.
-- KEYS: receipt. ARGV: ttl s, now ms (or ''), field, value, field, value, ...
local now = now_ms(ARGV[2])
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
redis.call('HDEL', KEYS[1], 'open')
if tonumber(redis.call('HGET', KEYS[1], 'outstanding') or '0') <= 0 then
  redis.call('HSETNX', KEYS[1], 'completed_at', seconds(now))
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1]))
return 1
"""


def _encode_group(members: Sequence[str], scores: dict[str, float]) -> str:
    flat: list[str] = []
    for member in members:
        flat += [member, repr(scores[member])]
    return json.dumps(flat)


# A lane holding more than this (its pending items, its watch entries and its twin's pending
# items, each counted) takes a staged file slice by slice: folding this many into the stage keeps
# the one-step commit within some 50 ms of Redis's time (measured: 20,000 took about 110 ms).
STAGE_COMMIT_LIMIT = 10_000
# Covered items dropped per script once a purge-everything went out (some 20 ms of Redis each).
DROP_COVERED_SLICE = 10_000
# A stage nobody added to for this long is dropped by Redis: its producer died or lost Redis.
STAGE_TTL_S = 3600


class StageLostError(RuntimeError):
    """A staged file's members were gone from Redis before it was committed."""


def _joined(members: Sequence[str]) -> str:
    """Members as one script argument, not one each: packing thousands of arguments costs the
    producer more than the script costs Redis. No member holds a newline (zonepurge.items)."""
    joined = "\n".join(members)
    if members and (joined.count("\n") != len(members) - 1 or not all(members)):
        raise ValueError("a member is empty or holds a newline: not made by zonepurge.items")
    return joined


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    added: int
    """Members that were not pending before."""
    pending: int
    """The lane's pending count afterwards."""


@dataclass(frozen=True, slots=True)
class Batch:
    lease_id: str
    lane: Lane
    members: list[str]
    enqueued_ms: list[float]
    remaining: int
    """Items of the lane still waiting (pending or split) after this batch was taken."""
    origin: Literal["pending", "split"] = "pending"
    taken_ms: float = 0.0
    receipts: list[str] = field(default_factory=list)
    """The receipts waiting for the batch's members when it was taken (for logs)."""

    def scores(self) -> dict[str, float]:
        return dict(zip(self.members, self.enqueued_ms, strict=True))


@dataclass(frozen=True, slots=True)
class Settlement:
    """What became of a leased batch. Members named nowhere here were purged.

    - ``back``: to wait again where they came from (pending, or the front of the split list),
      with an attempt counted when ``count_attempt`` (a transient failure, not a 429 or a wait
      for budget).
    - ``split``: groups to send apart (Cloudflare refused the batch because of some items).
    - ``dead``: dead-letter records.
    - ``redirect``: members (with their first-enqueue times) to enqueue in another lane: a URL
      purge turned prefix purge; ``moved`` says which member of the batch each one stands for
      (batch member -> redirected member), so that their receipts wait for it.
    """

    back: list[str] = field(default_factory=list)
    count_attempt: bool = False
    split: list[list[str]] = field(default_factory=list)
    dead: list[DeadLetter] = field(default_factory=list)
    redirect: tuple[Lane, dict[str, float]] | None = None
    moved: dict[str, str] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    """What the send adds to the running totals `zonepurge top` reads (calls, throttled,
    failed), recorded in the same transaction as the outcome."""
    sent_ok: bool = False
    """Cloudflare accepted the send: the lane's run of failures (its backoff) is over."""
    backoff_s: float = 0.0
    """The send failed: the lane sends nothing for this long, whoever flushes it."""


@dataclass(frozen=True, slots=True)
class Take:
    status: Literal["empty", "wait", "covered", "taken"]
    wait_s: float = 0.0
    batch: Batch | None = None


class DeadReason(StrEnum):
    """Why an item will not be purged."""

    REJECTED = "rejected"
    """Cloudflare refused it (its code and message are in the record)."""
    GAVE_UP = "gave-up"
    """It failed transiently past ZONEPURGE_MAX_ATTEMPTS or ZONEPURGE_MAX_AGE_S."""
    URL_PURGE_REFUSED = "url-purge-refused"
    """Error 1136, with ZONEPURGE_ON_1136=dead-letter (or no prefix can stand in for it)."""
    UNKNOWN_ENVIRONMENT = "unknown-environment"
    """The zone has no environment of the name it was enqueued for."""


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
        self._stage = client.register_script(_STAGE)
        self._commit_stage = client.register_script(_COMMIT_STAGE)
        self._merge_stage_slice = client.register_script(_MERGE_STAGE_SLICE)
        self._take = client.register_script(_TAKE)
        self._release = client.register_script(_RELEASE)
        self._replay = client.register_script(_REPLAY)
        self._settle = client.register_script(_SETTLE)
        self._drop_covered = client.register_script(_DROP_COVERED)
        self._back_off = client.register_script(_BACK_OFF)
        self._seal_receipt = client.register_script(_SEAL_RECEIPT)

    # -- producers -------------------------------------------------------------------------

    def enqueue(self, lane: Lane, members: Sequence[str], at_ms: int | None = None,
                receipt_id: str | None = None, receipt_ttl_s: int = 86400) -> EnqueueResult:
        """Add members to a lane's pending set; see the module docstring for what is dropped.

        With ``receipt_id``, the receipt waits for every member (new or already pending; for a
        soft purge whose hard twin is pending, for the twin) until ``save_receipt`` seals it.
        """
        twin = lane.with_(mode=Mode.PURGE if lane.mode is Mode.INVALIDATE else Mode.INVALIDATE)
        added, pending = self._enqueue(
            keys=[keys.pending(lane.id), keys.LANES, keys.pending(twin.id), keys.watch(lane.id),
                  keys.watch(twin.id), keys.receipt(receipt_id or "")],
            args=[lane.id, "" if at_ms is None else at_ms, lane.mode.value, receipt_id or "",
                  receipt_ttl_s, len(members), _joined(members)],
        )
        return EnqueueResult(int(added), int(pending))

    def stage(self, receipt_id: str, members: Sequence[str], ttl_s: int) -> int:
        """Keep members of a file being read under its receipt, out of the workers' sight;
        ``commit_stage`` hands them to their lane. The stage expires after ``ttl_s`` without
        a new chunk (a producer that died leaves nothing in the queue). Returns the members
        new to the stage."""
        return int(self._stage(keys=[keys.stage(receipt_id), keys.stage_watch(receipt_id)],
                               args=["", receipt_id, ttl_s, len(members), _joined(members)]))

    def commit_stage(self, lane: Lane, receipt_id: str, staged: int, receipt_ttl_s: int,
                     slice_size: int, on_slice: Callable[[int, int], None] | None = None) -> EnqueueResult:
        """Enqueue the ``staged`` members staged under ``receipt_id`` into ``lane``,
        registering the receipt on them: in one step when the lane holds few items, else slice
        by slice (each atomic; ``on_slice(done, staged)`` hears how many are enqueued).

        StageLostError, with nothing enqueued, if fewer are there than were staged: the stage
        expired between two chunks (more than STAGE_TTL_S apart) or Redis evicted it.
        """
        twin = lane.with_(mode=Mode.PURGE if lane.mode is Mode.INVALIDATE else Mode.INVALIDATE)
        lane_keys = [keys.stage(receipt_id), keys.stage_watch(receipt_id), keys.pending(lane.id),
                     keys.LANES, keys.pending(twin.id), keys.watch(lane.id), keys.watch(twin.id),
                     keys.receipt(receipt_id)]
        reply = self._commit_stage(keys=lane_keys, args=[lane.id, lane.mode.value, receipt_id,
                                                         receipt_ttl_s, STAGE_COMMIT_LIMIT, staged])
        if reply[0] == b"lost":
            self.discard_stage(receipt_id)
            raise StageLostError(
                f"{staged - int(reply[1])} of the {staged} items staged were gone from Redis before the "
                f"file was read to the end (more than {STAGE_TTL_S} s between two chunks, or Redis "
                "evicted them); nothing of the file was enqueued")
        if reply[0] != b"busy":
            if on_slice is not None:
                on_slice(int(reply[2]), int(reply[2]))
            return EnqueueResult(int(reply[0]), int(reply[1]))
        added = pending = 0
        left = staged
        while left:
            slice_added, pending, left = (int(x) for x in self._merge_stage_slice(
                keys=lane_keys, args=[lane.id, lane.mode.value, receipt_id, receipt_ttl_s, slice_size]))
            added += slice_added
            if on_slice is not None:
                on_slice(staged - left, staged)
        return EnqueueResult(added, pending)

    def discard_stage(self, receipt_id: str) -> None:
        # UNLINK: a million-member stage is freed in the background, not while Redis waits.
        self.redis.unlink(keys.stage(receipt_id), keys.stage_watch(receipt_id))

    def covered_lanes(self, everything: Lane) -> list[Lane]:
        """The lanes whose items a purge-everything in ``everything`` purges too."""
        return [other for other in self.lanes() if self._subsumes(everything, other)]

    def drop_covered(self, everything: Lane, sent_at_ms: float) -> int:
        """A purge-everything was purged: drop the items it covered, those first enqueued
        before it was taken, and count them purged on their receipts, DROP_COVERED_SLICE at a
        time (each slice one script). Items enqueued since are kept: their content may have
        changed."""
        lanes = self.covered_lanes(everything)
        if not lanes:
            return 0
        lane_keys = [k for other in lanes for k in (keys.pending(other.id), keys.watch(other.id))]
        dropped, more = 0, 1
        while more:
            n, more = self._drop_covered(keys=lane_keys, args=[sent_at_ms, keys.RECEIPT_PREFIX, "",
                                                               DROP_COVERED_SLICE])
            dropped += int(n)
        return dropped

    @staticmethod
    def _subsumes(everything: Lane, other: Lane) -> bool:
        """Whether a purge-everything in ``everything`` purges ``other``'s items too."""
        if other == everything or other.zone != everything.zone:
            return False
        if not (everything.env.is_production or other.env == everything.env):
            return False
        return everything.mode is Mode.PURGE or other.mode is Mode.INVALIDATE

    def server_ms(self) -> int:
        """Redis's clock, which every producer and worker shares."""
        seconds, micros = self.redis.time()
        return seconds * 1000 + micros // 1000

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
        lease_id = uuid.uuid4().hex
        cover = [keys.pending(c.id) for c in lane.covering_everything_lanes()]
        reply = self._take(
            keys=[keys.pending(lane.id), keys.LANES, keys.LEASES, keys.lease(lease_id),
                  keys.split(lane.id), keys.watch(lane.id), keys.backoff(lane.id), *cover],
            args=[lane.id, cap, "" if at_ms is None else at_ms, int(debounce_s * 1000),
                  int(lease_s * 1000), lease_id],
        )
        status = reply[0].decode()
        if status in ("empty", "covered"):
            return Take(status)
        if status == "wait":
            return Take("wait", wait_s=float(reply[1]) / 1000)
        origin = reply[2].decode()
        taken_ms = float(reply[3])
        members = reply[4].decode().split("\n")
        scores = [float(s) for s in reply[5].split(b",")]
        receipts = reply[6].decode().split(",") if reply[6] else []
        return Take("taken", batch=Batch(lease_id, lane, members, scores, int(reply[1]),
                                         origin=origin, taken_ms=taken_ms, receipts=receipts))

    def settle(self, batch: Batch, dead: Iterable[DeadLetter] = ()) -> bool:
        """The batch was purged (or, for ``dead``, refused)."""
        return self.finish(batch, Settlement(dead=list(dead)))

    def finish(self, batch: Batch, outcome: Settlement, attempts_ttl_s: float = 86400,
               at_ms: int | None = None) -> bool:
        """Record what became of a leased batch, in one transaction (``at_ms``: the time, for
        tests; Redis's by default).

        False if the lease had expired and been released meanwhile: its items are pending again
        (sent twice at worst, never lost) and this outcome is dropped.
        """
        lane = batch.lane
        scores = batch.scores()
        lease_key = keys.lease(batch.lease_id)
        pending_key = keys.pending(lane.id)
        attempts_key = keys.attempts(lane.id)
        # Members still to be sent keep their attempt counts; the others' are dropped.
        still_waiting = set(outcome.back) | {m for group in outcome.split for m in group}
        with self.redis.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(lease_key)
                if not pipe.exists(lease_key):
                    return False
                pipe.multi()
                if outcome.back:
                    if batch.origin == "split":
                        pipe.lpush(keys.split(lane.id), _encode_group(outcome.back, scores))
                    else:
                        pipe.zadd(pending_key, {m: scores[m] for m in outcome.back}, nx=True)
                    if outcome.count_attempt:
                        for member in outcome.back:
                            pipe.hincrby(attempts_key, member, 1)
                        pipe.expire(attempts_key, max(1, int(attempts_ttl_s)))
                for group in outcome.split:
                    pipe.rpush(keys.split(lane.id), _encode_group(group, scores))
                if outcome.redirect is not None:
                    target, redirected = outcome.redirect
                    if redirected:
                        pipe.zadd(keys.pending(target.id), redirected, nx=True)
                    pipe.sadd(keys.LANES, target.id)
                if outcome.back or outcome.split:
                    pipe.sadd(keys.LANES, lane.id)
                if outcome.dead:
                    pipe.rpush(keys.DEAD_LETTERS, *(d.to_json() for d in outcome.dead))
                self._settle_receipts(pipe, batch, outcome, still_waiting)
                # Finished: purged, dead-lettered, or handed to another lane (URLs turned prefixes,
                # counted when the prefixes are purged).
                finished = len(batch.members) - len(still_waiting)
                totals = {"purged": finished - len(outcome.dead) - len(outcome.moved),
                          "dead_lettered": len(outcome.dead), **outcome.counts}
                for name, n in totals.items():
                    if n > 0:
                        pipe.hincrby(keys.STATS, name, n)
                if outcome.sent_ok:
                    pipe.delete(keys.failures(lane.id), keys.backoff(lane.id))
                if outcome.backoff_s > 0:
                    self._back_off(keys=[keys.backoff(lane.id)],
                                   args=["" if at_ms is None else at_ms, int(outcome.backoff_s * 1000)],
                                   client=pipe)
                pipe.delete(lease_key)
                pipe.zrem(keys.LEASES, batch.lease_id)
                pipe.execute()
            except redis.WatchError:
                return False
        return True

    def _settle_receipts(self, pipe: Any, batch: Batch, outcome: Settlement,
                         still_waiting: set[str]) -> None:
        """Queue, in finish's transaction, what the outcome means for the batch's receipts:
        members still waiting keep their watchers, redirected ones hand them on, the others
        are done."""
        dead = {d.item for d in outcome.dead}
        moved = [[m, to] for m, to in outcome.moved.items() if m not in still_waiting]
        done = [m for m in batch.members if m not in still_waiting and m not in outcome.moved]
        target = outcome.redirect[0] if outcome.redirect is not None else batch.lane
        self._settle(
            keys=[keys.watch(batch.lane.id), keys.pending(batch.lane.id), keys.watch(target.id),
                  keys.attempts(batch.lane.id)],
            args=[keys.RECEIPT_PREFIX, "", json.dumps({
                "purged": [m for m in done if m not in dead],
                "dead": [m for m in done if m in dead],
                "moved": moved,
            })],
            client=pipe,
        )

    def totals(self) -> dict[str, int]:
        return {k.decode(): int(v) for k, v in self.redis.hgetall(keys.STATS).items()}

    def attempts(self, lane: Lane, members: Sequence[str]) -> list[int]:
        """Transient failures counted so far for each member."""
        if not members:
            return []
        return [int(v or 0) for v in self.redis.hmget(keys.attempts(lane.id), list(members))]

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
        expired = self.redis.zrangebyscore(keys.LEASES, "-inf", at_ms or self.server_ms(), start=0, num=limit)
        lanes = []
        for raw in expired:
            lease_id = raw.decode()
            lane_id = self.redis.hget(keys.lease(lease_id), "lane")
            if self.release(lease_id) >= 0 and lane_id is not None:
                lanes.append(Lane.parse(lane_id.decode()))
            else:
                self.redis.zrem(keys.LEASES, lease_id)  # a lease settled as we looked
        return lanes

    # -- pauses (401/403) and environments that refuse URL purges (1136) -------------------

    def pause(self, zone: str, reason: str, probe_at: float) -> None:
        """Pause a zone's purging; the first pause keeps its ``since``."""
        key = keys.paused(zone)
        pipe = self.redis.pipeline(transaction=True)
        pipe.hsetnx(key, "since", repr(time.time()))
        pipe.hset(key, mapping={"reason": reason, "probe_at": repr(probe_at)})
        pipe.execute()

    def paused(self, zone: str) -> dict[str, Any] | None:
        raw = self.redis.hgetall(keys.paused(zone))
        if not raw:
            return None
        fields = {k.decode(): v.decode() for k, v in raw.items()}
        return {"zone": zone, "reason": fields.get("reason", ""),
                "since": float(fields.get("since", 0)), "probe_at": float(fields.get("probe_at", 0))}

    def resume(self, zone: str) -> bool:
        """Lift a pause; True if there was one."""
        return bool(self.redis.delete(keys.paused(zone)))

    def paused_zones(self) -> list[dict[str, Any]]:
        zones = {lane.zone for lane in self.lanes()} | {
            k.decode().removeprefix(keys.paused("")) for k in self.redis.scan_iter(keys.paused("*"))
        }
        return [p for z in sorted(zones) if (p := self.paused(z)) is not None]

    def mark_no_url_purge(self, lane: Lane, ttl_s: float) -> None:
        self.redis.set(keys.no_url_purge(lane.zone, lane.env.encode()), 1, px=int(ttl_s * 1000))

    def refuses_url_purge(self, lane: Lane) -> bool:
        return bool(self.redis.exists(keys.no_url_purge(lane.zone, lane.env.encode())))

    # -- dead letters ----------------------------------------------------------------------

    def dead_letters(self) -> list[DeadLetter]:
        return [DeadLetter.from_json(raw) for raw in self.redis.lrange(keys.DEAD_LETTERS, 0, -1)]

    def iter_dead_letters(self, page: int = 1000) -> Iterable[tuple[bytes, DeadLetter]]:
        """Every record with its raw form, oldest first, read a page at a time."""
        start = 0
        while True:
            raws = self.redis.lrange(keys.DEAD_LETTERS, start, start + page - 1)
            for raw in raws:
                yield raw, DeadLetter.from_json(raw)
            if len(raws) < page:
                return
            start += page

    def drop_dead_letters(self, raws: Sequence[bytes]) -> int:
        """Remove these records; returns how many were there."""
        removed = 0
        for first in range(0, len(raws), 1000):
            pipe = self.redis.pipeline(transaction=True)
            for raw in raws[first : first + 1000]:
                pipe.lrem(keys.DEAD_LETTERS, 1, raw)
            removed += sum(int(n) for n in pipe.execute())
        return removed

    def replay_dead_letters(self, records: Sequence[tuple[bytes, DeadLetter]]) -> int:
        """Move records back to pending in their lanes, attempts reset. A record is moved only
        if it is still in the list, in one script, so it is never both dead and pending, nor
        neither. Returns how many went back."""
        replayed = 0
        at = now_ms()
        for raw, record in records:
            replayed += int(self._replay(
                keys=[keys.DEAD_LETTERS, keys.pending(record.lane), keys.attempts(record.lane), keys.LANES],
                args=[raw, record.item, at, record.lane],
            ))
        return replayed

    # -- receipts --------------------------------------------------------------------------

    def save_receipt(self, receipt_id: str, fields: dict[str, Any], ttl_s: int) -> None:
        """Write a receipt's fields (JSON values) and seal it: no more items will be
        registered to it (``enqueue``'s ``receipt_id``)."""
        flat: list[str] = []
        for name, value in fields.items():
            flat += [name, json.dumps(value)]
        self._seal_receipt(keys=[keys.receipt(receipt_id)], args=[ttl_s, "", *flat])

    def receipt(self, receipt_id: str) -> dict[str, Any] | None:
        """A receipt's fields as saved, with the counters the store keeps on it:
        ``outstanding``, ``purged``, ``dead_lettered`` (absent until the first is counted),
        ``open`` while items are still being registered, ``completed_at`` once all are done."""
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

    # -- status ----------------------------------------------------------------------------

    def snapshot(self) -> Snapshot:
        lanes = self.lanes()
        pipe = self.redis.pipeline(transaction=False)
        for lane in lanes:
            pipe.zcard(keys.pending(lane.id))
            pipe.zrange(keys.pending(lane.id), 0, 0, withscores=True)
            pipe.lrange(keys.split(lane.id), 0, -1)
        lease_ids = [raw.decode() for raw in self.redis.zrange(keys.LEASES, 0, -1)]
        for lease_id in lease_ids:
            pipe.hmget(keys.lease(lease_id), "lane", "count")
        pipe.llen(keys.DEAD_LETTERS)
        replies = pipe.execute()
        stats = []
        for i, lane in enumerate(lanes):
            count, oldest, splits = replies[3 * i], replies[3 * i + 1], replies[3 * i + 2]
            oldest_ms = oldest[0][1] if oldest else None
            for group in splits:
                flat = json.loads(group)
                count += len(flat) // 2
                first = min(float(x) for x in flat[1::2])
                oldest_ms = first if oldest_ms is None else min(oldest_ms, first)
            stats.append(LaneStats(lane, int(count), oldest_ms))
        in_flight: dict[str, int] = {}
        for lane_raw, count in replies[3 * len(lanes) : -1]:
            if lane_raw is not None:
                in_flight[lane_raw.decode()] = in_flight.get(lane_raw.decode(), 0) + int(count or 0)
        return Snapshot(stats, in_flight, int(replies[-1]))
