"""The Redis key layout, all of it. Nothing else in zonepurge spells a key.

    zp:lanes                    set     ids of lanes that may hold pending items
    zp:pending:{lane}           zset    member -> first-enqueued time (ms since epoch)
    zp:flush-queued:{lane}      string  set while a flush task for the lane is queued (debounce)
    zp:leases                   zset    lease id -> deadline (ms); batches taken by a worker
    zp:lease:{lease id}         hash    lane, taken_at, members (JSON [[member, score], ...])
    zp:failures:{lane}          string  consecutive failed sends of the lane (backoff), with a TTL
    zp:backoff:{lane}           string  ms before which the lane sends nothing (after a failed send)
    zp:attempts:{lane}          hash    member -> sends that failed transiently, with a TTL
    zp:split:{lane}             list    batches refused by Cloudflare, halved, to send apart (JSON)
    zp:budget:{account}:{bucket} hash   tokens, ts, blocked_until, throttles (zonepurge.budget)
    zp:paused:{zone}            hash    why and since when a zone's purging is paused (401/403)
    zp:no-url-purge:{zone}:{env} string set when an environment answered 1136, with a TTL
    zp:stats                    hash    running totals: purged, dead_lettered, calls, throttled, failed
    zp:dead                     list    dead-letter records (JSON), newest last
    zp:envs:{zone}              string  the zone's environments (JSON), with a TTL
    zp:receipt:{id}             hash    what one enqueue call accepted and what became of it, with a TTL
    zp:watch:{lane}             hash    member -> comma-joined ids of the receipts waiting for it
    zp:stage:{receipt}          zset    a file's members while it is read, before it joins its lane
    zp:stage-watch:{receipt}    hash    their watch entries (member -> the receipt's id), likewise

A lane id is defined in ``zonepurge.lanes``.
"""

from __future__ import annotations

PREFIX = "zp:"

LANES = PREFIX + "lanes"
LEASES = PREFIX + "leases"
DEAD_LETTERS = PREFIX + "dead"
STATS = PREFIX + "stats"
PENDING_PREFIX = PREFIX + "pending:"
LEASE_PREFIX = PREFIX + "lease:"
RECEIPT_PREFIX = PREFIX + "receipt:"


def pending(lane_id: str) -> str:
    return PENDING_PREFIX + lane_id


def flush_queued(lane_id: str) -> str:
    return PREFIX + "flush-queued:" + lane_id


def failures(lane_id: str) -> str:
    return PREFIX + "failures:" + lane_id


def backoff(lane_id: str) -> str:
    return PREFIX + "backoff:" + lane_id


def attempts(lane_id: str) -> str:
    return PREFIX + "attempts:" + lane_id


def split(lane_id: str) -> str:
    return PREFIX + "split:" + lane_id


def budget(account: str, bucket: str) -> str:
    return f"{PREFIX}budget:{account}:{bucket}"


def paused(zone: str) -> str:
    return PREFIX + "paused:" + zone


def no_url_purge(zone: str, env: str) -> str:
    return f"{PREFIX}no-url-purge:{zone}:{env}"


def lease(lease_id: str) -> str:
    return LEASE_PREFIX + lease_id


def environments(zone: str) -> str:
    return PREFIX + "envs:" + zone


def receipt(receipt_id: str) -> str:
    return RECEIPT_PREFIX + receipt_id


def watch(lane_id: str) -> str:
    return PREFIX + "watch:" + lane_id


def stage(receipt_id: str) -> str:
    return PREFIX + "stage:" + receipt_id


def stage_watch(receipt_id: str) -> str:
    return PREFIX + "stage-watch:" + receipt_id
