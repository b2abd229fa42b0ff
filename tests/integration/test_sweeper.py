"""The background sweep: expired leases come back, and every lane with items gets a flush."""

from tests.conftest import ZONE
from worker.sweeper import Sweeper, sweep
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, Lane

LANE = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)


def test_a_sweep_returns_expired_leases_and_nudges_lanes_nobody_flushes(runtime, sender):
    store = runtime.store
    store.enqueue(LANE, ["a"])
    # Taken long ago by a worker that died holding it: its lease ran out in 1970.
    assert store.take(LANE, cap=1, debounce_s=0, lease_s=1, at_ms=1000).status == "taken"
    assert store.snapshot().in_flight_by_lane == {LANE.id: 1}
    assert sweep(runtime) == 1
    assert sender.sent == [(LANE.id, 0)]
    assert store.snapshot().lanes[0].pending == 1
    assert sweep(runtime) == 0  # a flush is queued already: no second one


def test_the_sweeper_thread_stops_when_told(runtime):
    sweeper = Sweeper(runtime, interval_s=0.01)
    sweeper.start()
    sweeper.halt()
    sweeper.join(timeout=5)
    assert not sweeper.is_alive()


def test_a_sweep_flushes_a_lane_whose_items_stand_still_when_no_worker_consumes(runtime, sender, sandbox):
    from worker.flush import Flusher
    from worker.sweeper import STILL_SWEEPS

    store = runtime.store
    flusher = Flusher(runtime)
    seen = {}
    old = store.server_ms() - 60_000  # due long ago; no Celery consumer takes its flushes
    store.enqueue(LANE, ["stuck-tag"], at_ms=old)
    moving = Lane(ZONE, PRODUCTION_TARGET, Kind.HOSTS, Mode.PURGE)
    for n in range(STILL_SWEEPS):
        store.enqueue(moving, [f"h{n}.example.com"], at_ms=old)  # a lane whose items change
        sweep(runtime, flusher, seen)
        assert sandbox.purges() == [], "still for fewer sweeps than it takes: left to the pool"
    store.enqueue(moving, ["last.example.com"], at_ms=old)
    sweep(runtime, flusher, seen)
    assert [p["items"] for p in sandbox.purges()] == [["stuck-tag"]]
