"""The Redis store against a real redis-server: dedupe, soft/hard, subsumption, leases."""

import pytest

from tests.conftest import OTHER_ZONE, ZONE
from zonepurge import keys
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget, Lane
from zonepurge.store import DeadLetter, StageLostError, Store

STAGING = EnvTarget(ref="stg-ref")
DEV = EnvTarget(ref="dev-ref")


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


def lane(env=PRODUCTION_TARGET, kind=Kind.FILES, mode=Mode.PURGE, zone=ZONE):
    return Lane(zone, env, kind, mode)


def pending(store, some_lane):
    return {s.lane: s.pending for s in store.snapshot().lanes}.get(some_lane, 0)


def test_an_item_already_pending_is_not_added_twice(store):
    first = store.enqueue(lane(), ["a", "b", "a"])
    second = store.enqueue(lane(), ["b", "c"])
    assert (first.added, first.pending) == (2, 2)
    assert (second.added, second.pending) == (1, 3)


def test_lanes_keep_kinds_environments_and_zones_apart(store):
    for some in (lane(), lane(kind=Kind.TAGS), lane(env=STAGING), lane(zone=OTHER_ZONE)):
        assert store.enqueue(some, ["x"]).added == 1
    assert len(store.lanes()) == 4


def test_a_pending_hard_purge_makes_a_soft_purge_moot(store):
    store.enqueue(lane(mode=Mode.INVALIDATE), ["a", "b"])
    store.enqueue(lane(), ["a"])  # hard purge of a removes the soft one
    assert pending(store, lane(mode=Mode.INVALIDATE)) == 1
    result = store.enqueue(lane(mode=Mode.INVALIDATE), ["a", "c"])  # a is hard-pending
    assert result.added == 1
    assert pending(store, lane(mode=Mode.INVALIDATE)) == 2  # b, c


def take_now(store, some_lane, at_ms=10_000_000, cap=500):
    return store.take(some_lane, cap=cap, debounce_s=0, lease_s=60, at_ms=at_ms)


def test_a_pending_everything_holds_back_the_items_it_covers(store):
    store.enqueue(lane(env=STAGING), ["a", "b"], at_ms=1000)
    store.enqueue(lane(env=DEV), ["a"], at_ms=1000)
    store.enqueue(lane(env=STAGING, kind=Kind.EVERYTHING), ["*"], at_ms=2000)
    assert take_now(store, lane(env=STAGING)).status == "covered"
    assert take_now(store, lane(env=DEV)).status == "taken"  # another environment goes on


def test_a_purged_everything_drops_what_it_covered_and_keeps_what_came_after(store):
    store.enqueue(lane(env=STAGING), ["old"], at_ms=1000)
    store.enqueue(lane(env=STAGING, kind=Kind.TAGS, mode=Mode.INVALIDATE), ["t"], at_ms=1000)
    store.enqueue(lane(env=STAGING, kind=Kind.EVERYTHING), ["*"], at_ms=2000)
    everything = take_now(store, lane(env=STAGING, kind=Kind.EVERYTHING), at_ms=3000).batch
    store.enqueue(lane(env=STAGING), ["new"], at_ms=4000)  # after it was sent: kept
    store.settle(everything)
    assert store.drop_covered(everything.lane, everything.taken_ms) == 2
    assert take_now(store, lane(env=STAGING)).batch.members == ["new"]


def test_a_failed_everything_lets_the_covered_items_go_out_themselves(store):
    store.enqueue(lane(env=STAGING), ["a"], at_ms=1000)
    store.enqueue(lane(env=STAGING, kind=Kind.EVERYTHING), ["*"], at_ms=2000)
    everything = take_now(store, lane(env=STAGING, kind=Kind.EVERYTHING)).batch
    store.settle(everything, dead=[])  # e.g. dead-lettered: nothing is dropped
    assert take_now(store, lane(env=STAGING)).batch.members == ["a"]


def test_everything_in_production_covers_every_environment_of_the_zone(store):
    store.enqueue(lane(env=STAGING), ["a"], at_ms=1000)
    store.enqueue(lane(env=DEV, kind=Kind.TAGS), ["t"], at_ms=1000)
    store.enqueue(lane(env=DEV, kind=Kind.EVERYTHING), ["*"], at_ms=1000)
    store.enqueue(lane(zone=OTHER_ZONE), ["a"], at_ms=1000)
    store.enqueue(lane(kind=Kind.EVERYTHING), ["*"], at_ms=2000)
    for held in (lane(env=STAGING), lane(env=DEV, kind=Kind.TAGS), lane(env=DEV, kind=Kind.EVERYTHING)):
        assert take_now(store, held).status == "covered"
    assert take_now(store, lane(zone=OTHER_ZONE)).status == "taken"
    everything = take_now(store, lane(kind=Kind.EVERYTHING), at_ms=3000).batch
    assert store.drop_covered(everything.lane, everything.taken_ms) == 3


def test_a_soft_everything_leaves_hard_purges_alone(store):
    store.enqueue(lane(), ["hard"], at_ms=1000)
    store.enqueue(lane(mode=Mode.INVALIDATE), ["soft"], at_ms=1000)
    store.enqueue(lane(kind=Kind.EVERYTHING, mode=Mode.INVALIDATE), ["*"], at_ms=2000)
    assert take_now(store, lane()).status == "taken"
    assert take_now(store, lane(mode=Mode.INVALIDATE)).status == "covered"
    store.enqueue(lane(kind=Kind.EVERYTHING), ["*"], at_ms=2500)  # a hard one makes the soft one moot
    assert pending(store, lane(kind=Kind.EVERYTHING, mode=Mode.INVALIDATE)) == 0


def test_take_waits_for_a_full_batch_or_the_debounce(store):
    t0 = 1_000_000
    store.enqueue(lane(), ["a", "b"], at_ms=t0)
    waiting = store.take(lane(), cap=3, debounce_s=0.5, lease_s=60, at_ms=t0 + 200)
    assert waiting.status == "wait" and waiting.wait_s == pytest.approx(0.3)
    store.enqueue(lane(), ["c", "d"], at_ms=t0 + 250)
    full = store.take(lane(), cap=3, debounce_s=0.5, lease_s=60, at_ms=t0 + 260)
    assert full.status == "taken"
    assert full.batch.members == ["a", "b", "c"] and full.batch.remaining == 1
    due = store.take(lane(), cap=3, debounce_s=0.5, lease_s=60, at_ms=t0 + 750)
    assert due.batch.members == ["d"]
    assert store.take(lane(), cap=3, debounce_s=0.5, lease_s=60).status == "empty"
    assert lane() not in store.lanes()


def test_a_released_lease_returns_items_with_their_first_enqueue_time(store):
    store.enqueue(lane(), ["a", "b"], at_ms=1000)
    store.enqueue(lane(), ["c"], at_ms=2000)
    batch = store.take(lane(), cap=2, debounce_s=0, lease_s=60, at_ms=3000).batch
    assert store.snapshot().in_flight_by_lane == {lane().id: 2}
    assert store.release(batch.lease_id) == 2
    assert store.release(batch.lease_id) == -1
    again = store.take(lane(), cap=3, debounce_s=0, lease_s=60, at_ms=3000).batch
    assert again.members == ["a", "b", "c"] and again.enqueued_ms == [1000, 1000, 2000]


def test_expired_leases_go_back_to_pending(store):
    store.enqueue(lane(), ["a"], at_ms=1000)
    batch = store.take(lane(), cap=10, debounce_s=0, lease_s=5, at_ms=1000).batch
    assert store.release_expired(at_ms=5999) == []
    assert store.release_expired(at_ms=6001) == [lane()]
    assert pending(store, lane()) == 1
    assert store.settle(batch) is False  # its worker comes back too late: nothing is lost


def test_settle_records_dead_letters_atomically(store):
    store.enqueue(lane(), ["a"])
    batch = store.take(lane(), cap=10, debounce_s=0, lease_s=60).batch
    record = DeadLetter(item="a", zone=ZONE, environment="production", kind="files", mode="purge",
                        reason="rejected", code=1234, message="no", attempts=1,
                        first_enqueued_at=1.0, dead_at=2.0, lane=lane().id)
    assert store.settle(batch, dead=[record]) is True
    assert store.dead_letters() == [record]
    snap = store.snapshot()
    assert (snap.dead_letters, snap.in_flight_by_lane) == (1, {})


def test_big_enqueues_go_through_lua_in_slices(store):
    members = [f"https://a.com/{i}" for i in range(25_000)]
    assert store.enqueue(lane(mode=Mode.INVALIDATE), members[:10]).added == 10
    assert store.enqueue(lane(), members).added == 25_000
    assert pending(store, lane(mode=Mode.INVALIDATE)) == 0
    assert store.enqueue(lane(mode=Mode.INVALIDATE), members).added == 0


# A file is staged, then joins its lane: in one step when the lane holds few items, slice by
# slice when it holds many. Both must leave the lane and its receipts as enqueueing the same
# members in one request does.
HARD, SOFT = lane(kind=Kind.TAGS), lane(kind=Kind.TAGS, mode=Mode.INVALIDATE)


def _busy_lane_scenario(store):
    """A lane with items pending, in flight and a soft twin pending, each with a receipt."""
    store.enqueue(HARD, ["d"], at_ms=500, receipt_id="r2")
    assert store.take(HARD, cap=1, debounce_s=0, lease_s=60, at_ms=600).batch.members == ["d"]  # in flight
    store.enqueue(HARD, ["a", "b"], at_ms=1000, receipt_id="r0")
    store.enqueue(SOFT, ["c", "s"], at_ms=1000, receipt_id="r1")


def _state(store, receipt_id):
    def watchers(some_lane):
        raw = store.redis.hgetall(keys.watch(some_lane.id))
        return {k.decode(): sorted(v.decode().split(",")) for k, v in raw.items()}

    def members(some_lane):
        return {m.decode() for m in store.redis.zrange(keys.pending(some_lane.id), 0, -1)}

    return {"hard": members(HARD), "soft": members(SOFT), "hard_watch": watchers(HARD),
            "soft_watch": watchers(SOFT), "a_score": store.redis.zscore(keys.pending(HARD.id), "a"),
            "outstanding": int(store.redis.hget(keys.receipt(receipt_id), "outstanding")),
            "stage_left": store.redis.exists(keys.stage(receipt_id), keys.stage_watch(receipt_id))}


@pytest.mark.parametrize("target, file", [(HARD, ["a", "c", "d", "e", "e"]), (SOFT, ["b", "a", "t", "t", "s"])])
def test_a_staged_file_joins_its_lane_as_one_request_of_it_would(store, redis_client, monkeypatch, target, file):
    import zonepurge.store as store_module

    outcomes = []
    for way in ("request", "one step", "slices"):
        redis_client.flushdb()
        _busy_lane_scenario(store)
        if way == "request":
            result = store.enqueue(target, file, receipt_id="r3")
        else:
            monkeypatch.setattr(store_module, "STAGE_COMMIT_LIMIT", 10**6 if way == "one step" else 0)
            staged = store.stage("r3", file[:3], ttl_s=60) + store.stage("r3", file[3:], ttl_s=60)
            assert staged == 4  # distinct members
            assert store.snapshot().lanes and _state(store, "r0")["hard"] == {"a", "b"}, "staged out of sight"
            slices = []
            result = store.commit_stage(target, "r3", staged, 60, slice_size=2,
                                        on_slice=lambda d, n: slices.append(d))
            assert slices == ([4] if way == "one step" else [2, 4])
        outcomes.append((result.added, result.pending, _state(store, "r3")))
    assert outcomes[0] == outcomes[1] == outcomes[2]
    added, _, state = outcomes[0]
    assert state["a_score"] == 1000 and state["stage_left"] == 0  # a pending item keeps its time
    if target is HARD:
        # c was a pending soft purge: moot now, its receipt waits for the hard one; d was in
        # flight: pending again, both receipts wait for it; a and e counted once each.
        assert added == 3 and state["hard"] == {"a", "b", "c", "d", "e"} and state["soft"] == {"s"}
        assert state["hard_watch"]["c"] == ["r1", "r3"] and state["hard_watch"]["d"] == ["r2", "r3"]
        assert state["outstanding"] == 4
    else:
        # a and b are pending hard purges: the soft ones wait for them; s was pending already.
        assert added == 1 and state["soft"] == {"c", "s", "t"}
        assert state["hard_watch"]["b"] == ["r0", "r3"] and state["soft_watch"]["s"] == ["r1", "r3"]
        assert state["outstanding"] == 4


def test_a_discarded_stage_leaves_nothing(store):
    store.stage("r9", ["x", "y"], ttl_s=60)
    store.discard_stage("r9")
    assert store.redis.keys("zp:*") == []


@pytest.mark.parametrize("limit", [10**6, 0], ids=["one step", "slices"])
def test_an_item_enqueued_after_a_purge_everything_was_sent_outlives_it_whatever_a_file_staged(
        store, monkeypatch, limit):
    import zonepurge.store as store_module

    monkeypatch.setattr(store_module, "STAGE_COMMIT_LIMIT", limit)
    everything = lane(kind=Kind.EVERYTHING)
    t0 = store.server_ms()
    store.stage("file", ["m"], ttl_s=60)  # a file staged m, at about t0...
    store.enqueue(everything, ["*"], at_ms=t0 + 1000)
    taken = store.take(everything, cap=1, debounce_s=0, lease_s=60, at_ms=t0 + 2000)  # ...everything goes out...
    store.enqueue(lane(), ["m"], at_ms=t0 + 3000)  # ...m changes again, and is enqueued
    store.commit_stage(lane(), "file", 1, 60, slice_size=10)
    store.settle(taken.batch)
    assert store.drop_covered(everything, taken.batch.taken_ms) == 0
    assert store.redis.zscore(keys.pending(lane().id), "m") == t0 + 3000  # kept, with its own time


def test_a_stage_found_short_at_commit_enqueues_nothing(store):
    staged = store.stage("file", ["a", "b", "c"], ttl_s=60)
    store.redis.zrem(keys.stage("file"), "a", "b")  # as if the stage had expired and begun again
    with pytest.raises(StageLostError, match="2 of the 3 items staged were gone"):
        store.commit_stage(lane(), "file", staged, 60, slice_size=10)
    assert store.redis.keys("zp:*") == []


def test_a_purged_everything_drops_a_big_backlog_a_slice_at_a_time(store, monkeypatch):
    import zonepurge.store as store_module

    monkeypatch.setattr(store_module, "DROP_COVERED_SLICE", 3)
    store.enqueue(lane(env=STAGING), [f"s{i}" for i in range(5)], at_ms=1000, receipt_id="rs")
    store.enqueue(lane(env=DEV, kind=Kind.TAGS), [f"t{i}" for i in range(4)], at_ms=1000)
    store.enqueue(lane(env=DEV, kind=Kind.TAGS), ["later"], at_ms=5000)
    store.save_receipt("rs", {"items": 5}, 60)
    assert store.drop_covered(lane(kind=Kind.EVERYTHING), sent_at_ms=2000) == 9
    assert pending(store, lane(env=STAGING)) == 0 and pending(store, lane(env=DEV, kind=Kind.TAGS)) == 1
    assert store.receipt("rs")["purged"] == 5 and "completed_at" in store.receipt("rs")
