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


def test_a_sweep_flushes_overdue_lanes_itself_when_no_worker_consumes(runtime, sender, sandbox):
    from worker.flush import Flusher

    store = runtime.store
    old = store.server_ms() - 60_000  # waited a minute: no Celery consumer took its flush
    store.enqueue(LANE, ["stuck-tag"], at_ms=old)
    assert sweep(runtime, Flusher(runtime)) == 1
    assert [p["items"] for p in sandbox.purges()] == [["stuck-tag"]]
    fresh = Lane(ZONE, PRODUCTION_TARGET, Kind.HOSTS, Mode.PURGE)
    store.enqueue(fresh, ["www.example.com"])  # not overdue: left to the queued flush
    sweep(runtime, Flusher(runtime))
    assert len(sandbox.purges()) == 1
