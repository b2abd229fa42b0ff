"""Flushes driven one by one (no Celery), against a real Redis and the sandbox over HTTP."""

import time

import pytest
from pydantic import SecretStr

from tests.conftest import ZONE
from worker.flush import Flusher, Outcome
from zonepurge.budget import Budget
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
def flusher(runtime, clock):
    clock.advance(3600)  # every pending item is past its debounce
    return Flusher(runtime, clock=clock, sleep=clock.sleep, budget=Budget(runtime.store.redis, runtime.settings, clock=clock))


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


def test_one_drain_sends_a_backlog_batch_after_batch_and_queues_one_helper(producer, flusher, sender, sandbox):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.FILES, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "files": [f"https://www.example.com/d/{i}" for i in range(1700)]})
    sender.sent.clear()
    assert flusher.drain(lane.id, span_s=3600) == Outcome.PURGED
    assert [len(p["items"]) for p in sandbox.purges()] == [500, 500, 500, 200]
    # Another worker slot was asked to join in once, while the flag said one was queued, and
    # nothing is queued after the lane ran dry.
    assert sender.sent == [(lane.id, 0.0)]


def test_a_drain_whose_span_is_over_hands_the_rest_to_the_next_flush(producer, flusher, sender, sandbox):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.FILES, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "files": [f"https://www.example.com/e/{i}" for i in range(600)]})
    sender.sent.clear()
    assert flusher.drain(lane.id, span_s=0) == Outcome.PURGED  # one batch, as flush() does
    assert [len(p["items"]) for p in sandbox.purges()] == [500]
    assert sender.sent == [(lane.id, 0.0)]


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


def test_url_purges_in_an_ip_filtered_environment_become_prefix_purges(producer, flusher, sender, sandbox, runtime):
    staging = sandbox.environments(ZONE)["Staging"]
    producer.enqueue({"zone": ZONE, "environment": "Staging",
                      "files": ["https://www.example.com/a/b?x=1", "https://www.example.com/a/b?x=2",
                                "https://WWW.example.com/c"]})
    assert drain(flusher, sender) == [Outcome.REDIRECTED, Outcome.PURGED]
    [purge] = sandbox.purges()
    assert (purge["environment"], purge["kind"]) == (staging, "prefixes")
    assert sorted(purge["items"]) == ["www.example.com/a/b", "www.example.com/c"]
    # Running totals count what Cloudflare purged (two prefixes), not the URLs handed over.
    assert runtime.store.totals()["purged"] == 2
    # The environment is remembered: the next URL purge there costs no refused call.
    calls_before = len(sandbox.calls())
    producer.enqueue({"zone": ZONE, "environment": "Staging", "files": ["https://www.example.com/d"]})
    assert drain(flusher, sender) == [Outcome.REDIRECTED, Outcome.PURGED]
    assert [c["kind"] for c in sandbox.calls()[calls_before:]] == ["prefixes"]
    assert runtime.store.dead_letters() == []


def test_url_purges_refused_by_1136_can_be_dead_lettered_instead(settings, redis_client, sender, sandbox, clock):
    from zonepurge.runtime import Runtime

    rt = Runtime(settings.model_copy(update={"on_1136": "dead-letter"}), redis_client=redis_client, send=sender)
    clock.advance(3600)
    Producer(rt).enqueue({"zone": ZONE, "environment": "Staging", "files": ["https://www.example.com/a"]})
    assert drain(Flusher(rt, clock=clock, sleep=clock.sleep), sender) == [Outcome.DEAD_LETTERED]
    [record] = rt.store.dead_letters()
    assert (record.item, record.code, record.reason) == ("https://www.example.com/a", 1136, "url-purge-refused")
    assert record.environment == sandbox.environments(ZONE)["Staging"]


def test_a_429_closes_the_bucket_for_its_retry_after_and_costs_the_items_nothing(producer, flusher, sender, sandbox, runtime, clock):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "tags": ["a", "b"]})
    sender.sent.clear()
    sandbox.faults(throttle_probability=1.0, throttle_retry_after_s=7)
    assert flusher.flush(lane.id) is Outcome.WAITING
    assert sender.sent == [(lane.id, pytest.approx(7.0))]  # the wait Cloudflare asked for
    sandbox.faults(throttle_probability=0.0)
    calls = len(sandbox.calls())
    clock.advance(6.0)
    assert flusher.flush(lane.id) is Outcome.WAITING  # still closed: no call is made
    assert len(sandbox.calls()) == calls
    clock.advance(0.9)
    assert flusher.flush(lane.id) is Outcome.PURGED  # a short wait is waited in the slot
    assert clock.slept[-1] == pytest.approx(0.1, abs=1e-3)
    assert [p["items"] for p in sandbox.purges()] == [["a", "b"]]
    assert runtime.store.attempts(lane, ["a", "b"]) == [0, 0]


def test_transient_failures_back_off_and_give_up_after_max_attempts(producer, flusher, sender, sandbox, runtime, clock):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "tags": ["a", "b"]})
    sandbox.faults(error_probability=1.0)
    flusher.rng = lambda: 0.5  # the jitter's draw: half of each ceiling
    outcomes, waits = [], []
    for _ in range(runtime.settings.max_attempts):
        sender.sent.clear()
        outcomes.append(flusher.flush(lane.id))
        waits.append(sender.sent[-1][1])
        if outcomes[-1] is Outcome.RETRYING:
            assert runtime.store.snapshot().lanes[0].pending == 2  # safe while they wait
            # While the backoff lasts, whoever flushes the lane (another worker, the sweep) sends
            # nothing; once it is over, the next attempt goes out.
            clock.advance(waits[-1] * 0.9)
            assert flusher.flush(lane.id) is Outcome.WAITING
            clock.advance(waits[-1] * 0.1 + 0.001)
    assert outcomes == [Outcome.RETRYING] * (runtime.settings.max_attempts - 1) + [Outcome.DEAD_LETTERED]
    s = runtime.settings
    assert waits[:-1] == [0.5 * min(s.retry_max_s, s.retry_base_s * 2 ** n) for n in range(s.max_attempts - 1)]
    records = runtime.store.dead_letters()
    assert {r.item for r in records} == {"a", "b"}
    assert {(r.reason, r.attempts) for r in records} == {("gave-up", runtime.settings.max_attempts)}
    assert "HTTP 5" in records[0].message


def test_dropped_connections_are_retried(producer, flusher, sender, sandbox, runtime, clock):
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.HOSTS, Mode.PURGE)
    producer.enqueue({"zone": ZONE, "hosts": ["www.example.com"]})
    sandbox.faults(drop_probability=1.0)
    assert flusher.flush(lane.id) is Outcome.RETRYING
    sandbox.faults(drop_probability=0.0)
    clock.advance(runtime.settings.retry_max_s)  # the backoff is over
    assert flusher.flush(lane.id) is Outcome.PURGED
    assert runtime.store.attempts(lane, ["www.example.com"]) == [0]


def test_a_refused_batch_is_halved_until_the_bad_items_stand_alone(producer, flusher, sender, sandbox, runtime):
    tags = [f"tag-{i:03d}" for i in range(100)]
    sandbox.faults(reject_items=[{"match": "tag-017", "code": 1099, "message": "no such tag"},
                                 {"match": "tag-071", "code": 1099, "message": "no such tag"}])
    producer.enqueue({"zone": ZONE, "tags": tags})
    outcomes = drain(flusher, sender)
    assert outcomes.count(Outcome.DEAD_LETTERED) == 2
    purged = sorted(t for p in sandbox.purges() for t in p["items"])
    assert purged == sorted(set(tags) - {"tag-017", "tag-071"})
    records = runtime.store.dead_letters()
    assert sorted(r.item for r in records) == ["tag-017", "tag-071"]
    assert {(r.code, r.reason) for r in records} == {(1099, "rejected")}
    assert "no such tag" in records[0].message
    assert len(sandbox.calls()) <= 2 * 2 * 7 + 1  # about 2·k·log2(n) calls for k bad items
    assert runtime.store.snapshot().lanes == [] or runtime.store.snapshot().lanes[0].pending == 0


def test_a_wrong_token_pauses_the_zone_and_it_resumes_by_itself(settings, redis_client, sender, sandbox, clock):
    from zonepurge.runtime import Runtime

    wrong = Runtime(settings.model_copy(update={"cloudflare_api_token": SecretStr("wrong-token")}),
                    redis_client=redis_client, send=sender)
    clock.advance(3600)
    flusher = Flusher(wrong, clock=clock, sleep=clock.sleep)
    Producer(wrong).enqueue({"zone": ZONE, "tags": ["a"]})
    Producer(wrong).enqueue({"zone": ZONE, "hosts": ["www.example.com"]})
    tags = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    hosts = Lane(ZONE, PRODUCTION_TARGET, Kind.HOSTS, Mode.PURGE)
    assert flusher.flush(tags.id) is Outcome.WAITING
    pause = wrong.store.paused(ZONE)
    assert pause is not None and "401" in pause["reason"]
    assert "wrong-token" not in str(pause)
    calls = len(sandbox.calls())
    assert flusher.flush(hosts.id) is Outcome.WAITING  # paused: no call until the probe
    assert len(sandbox.calls()) == calls
    assert wrong.store.snapshot().dead_letters == 0
    fixed = Runtime(settings, redis_client=redis_client, send=sender)
    clock.advance(settings.pause_probe_s)
    assert Flusher(fixed, clock=clock, sleep=clock.sleep).flush(hosts.id) is Outcome.PURGED
    assert fixed.store.paused(ZONE) is None


def test_two_workers_share_one_budget(producer, runtime, sender, sandbox, clock):
    clock.advance(3600)
    free = runtime.settings.model_copy(update={"plan": "free"})
    from zonepurge.runtime import Runtime

    workers = [Flusher(Runtime(free, redis_client=runtime.store.redis, send=sender), clock=clock,
                       sleep=clock.sleep, budget=Budget(runtime.store.redis, free, clock=clock))
               for _ in range(2)]
    producer.enqueue({"zone": ZONE, "tags": [f"t{i}" for i in range(3000)]})  # 30 requests at Free
    lane = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)
    outcomes = [workers[i % 2].flush(lane.id) for i in range(40)]
    assert outcomes.count(Outcome.PURGED) == 25  # the Free flex bucket: 25 requests, then 5 a minute
    assert all(o is Outcome.WAITING for o in outcomes[25:])
    clock.advance(12)
    assert workers[1].flush(lane.id) is Outcome.PURGED


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


def test_a_purge_everything_goes_first_and_the_items_it_covers_are_not_sent(producer, flusher, sender, sandbox, runtime):
    staging = sandbox.environments(ZONE)["Staging"]
    producer.enqueue({"zone": ZONE, "environment": "Staging", "tags": ["a", "b"]})
    producer.enqueue({"zone": ZONE, "environment": "Staging", "hosts": ["www.example.com"]})
    producer.enqueue({"zone": ZONE, "environment": "Development", "tags": ["dev"]})
    producer.enqueue({"zone": ZONE, "environment": "Staging", "purge_everything": True})
    outcomes = drain(flusher, sender)
    assert Outcome.PURGED in outcomes
    seen = [(p["environment"], p["kind"], p["items"]) for p in sandbox.purges()]
    assert (staging, "purge_everything", []) in seen
    assert not any(env == staging and kind != "purge_everything" for env, kind, _ in seen)
    assert any(kind == "tags" and items == ["dev"] for _, kind, items in seen)
    assert runtime.store.snapshot().lanes == [] or all(s.pending == 0 for s in runtime.store.snapshot().lanes)
