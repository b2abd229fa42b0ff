"""The Redis store against a real redis-server: dedupe, soft/hard, subsumption, leases."""

import pytest

from tests.conftest import OTHER_ZONE, ZONE
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget, Lane
from zonepurge.store import DeadLetter, Store

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
