"""Flushes driven one by one (no Celery), against a real Redis and the sandbox over HTTP."""

import time

import pytest

from tests.conftest import ZONE
from worker.flush import Flusher, Outcome
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, EnvTarget, Lane
from producer import Producer


@pytest.fixture
def producer(runtime):
    return Producer(runtime)


def far_future():
    """A clock an hour ahead, so that every pending item is past its debounce."""
    return time.time() + 3600


@pytest.fixture
def flusher(runtime):
    return Flusher(runtime, clock=far_future)


def drain(flusher, sender, limit=200):
    """Run queued flushes until none is left (ignoring their countdowns)."""
    outcomes = []
    while sender.sent and len(outcomes) < limit:
        lane_id, _ = sender.sent.pop(0)
        outcomes.append(flusher.flush(lane_id))
    return outcomes


def test_a_full_batch_is_flushed_at_once_and_the_rest_after_the_debounce(producer, flusher, sender, sandbox, runtime):
    urls = [f"https://www.example.com/p/{i}" for i in range(1200)]
    receipt = producer.enqueue({"zone": ZONE, "files": urls})
    assert receipt.accepted == 1200
    assert sender.sent == [(Lane(ZONE, PRODUCTION_TARGET, Kind.FILES, Mode.PURGE).id, 0.0)]
    outcomes = drain(flusher, sender)
    assert outcomes.count(Outcome.PURGED) == 3
    purges = sandbox.purges()
    assert [len(p["items"]) for p in purges] == [500, 500, 200]
    assert sorted(u for p in purges for u in p["items"]) == sorted(urls)
    assert all(p["environment"] is None and p["action"] == "purge_cache" for p in purges)


def test_a_lone_item_waits_for_the_debounce(producer, sender, runtime):
    producer.enqueue({"zone": ZONE, "tags": ["home"]})
    assert sender.sent[0][1] == runtime.settings.debounce_s


def test_environments_by_name_go_to_their_ref(producer, flusher, sender, sandbox):
    refs = sandbox.environments(ZONE)
    producer.enqueue({"zone": ZONE, "environment": "development", "files": ["https://dev.example.com/a"]})
    producer.enqueue({"zone": ZONE, "environment": refs["Staging"], "tags": ["Blog"], "invalidate": True})
    producer.enqueue({"zone": ZONE, "environment": "PRODUCTION", "hosts": ["www.example.com"]})
    drain(flusher, sender)
    seen = {(p["environment"], p["action"], p["kind"], tuple(p["items"])) for p in sandbox.purges()}
    assert seen == {
        (refs["Development"], "purge_cache", "files", ("https://dev.example.com/a",)),
        (refs["Staging"], "invalidate_cache", "tags", ("blog",)),
        (None, "purge_cache", "hosts", ("www.example.com",)),
    }


def test_url_purge_in_an_ip_filtered_environment_is_dead_lettered_with_code_1136(producer, flusher, sender, sandbox, runtime):
    producer.enqueue({"zone": ZONE, "environment": "Staging", "files": ["https://www.example.com/a"]})
    assert drain(flusher, sender) == [Outcome.DEAD_LETTERED]
    [record] = runtime.store.dead_letters()
    assert (record.item, record.code, record.reason) == ("https://www.example.com/a", 1136, "rejected")
    assert record.environment == sandbox.environments(ZONE)["Staging"]
    assert runtime.store.snapshot().dead_letters == 1


def test_throttled_and_failed_batches_stay_pending(producer, flusher, sender, sandbox, runtime):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "tags": ["a", "b"]})
    sender.sent.clear()
    sandbox.faults(throttle_probability=1.0, throttle_retry_after_s=7)
    assert flusher.flush(lane.id) is Outcome.RETRYING
    assert sender.sent == [(lane.id, 7.0)]  # the wait Cloudflare asked for
    sandbox.faults(throttle_probability=0.0, error_probability=1.0)
    sender.sent.clear()
    assert flusher.flush(lane.id) is Outcome.RETRYING
    [(_, backoff)] = sender.sent
    assert 0 <= backoff <= runtime.settings.retry_base_s
    report = runtime.store.snapshot()
    assert [s.pending for s in report.lanes] == [2] and report.dead_letters == 0
    sandbox.faults(error_probability=0.0, drop_probability=1.0)
    assert flusher.flush(lane.id) is Outcome.RETRYING
    sandbox.faults(drop_probability=0.0)
    assert flusher.flush(lane.id) is Outcome.PURGED
    assert [p["items"] for p in sandbox.purges()] == [["a", "b"]]


def test_an_unknown_environment_is_refused_at_enqueue(producer, sandbox):
    from producer import UnknownEnvironmentError

    with pytest.raises(UnknownEnvironmentError, match="Production, Staging, Development"):
        producer.enqueue({"zone": ZONE, "environment": "Preview", "tags": ["a"]})


def test_an_environment_created_later_is_found_by_refreshing_the_cache(producer, flusher, sender, sandbox):
    sandbox.environments(ZONE)  # the zone exists with the docs' three environments
    producer.enqueue({"zone": ZONE, "environment": "Staging", "tags": ["warm-the-cache"]})
    sandbox.put_zone(ZONE, environments=[{"name": "Production"}, {"name": "Staging", "expression": "cf.edge.server_ip in {1.2.3.4}"},
                                         {"name": "Preview", "expression": "http.host eq \"p.example.com\""}])
    receipt = producer.enqueue({"zone": ZONE, "environment": "preview", "tags": ["x"]})
    assert receipt.environment == sandbox.environments(ZONE)["Preview"]


def test_an_environment_that_cannot_be_checked_at_enqueue_is_dead_lettered_by_the_worker(
        settings, redis_client, sender, sandbox):
    from zonepurge.runtime import Runtime

    offline = Runtime(settings.model_copy(update={"cloudflare_api_token": None}),
                      redis_client=redis_client, send=sender)
    receipt = Producer(offline).enqueue({"zone": ZONE, "environment": "Nowhere", "tags": ["a"]})
    assert receipt.environment == "Nowhere (unresolved)"
    online = Runtime(settings, redis_client=redis_client, send=sender)
    assert drain(Flusher(online, clock=far_future), sender) == [Outcome.DEAD_LETTERED]
    [record] = online.store.dead_letters()
    assert record.reason == "unknown-environment" and "Nowhere" in record.message
