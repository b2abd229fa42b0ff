"""Receipts follow their items to purged or dead-lettered: flushes driven one by one (no Celery),
against a real Redis and the sandbox over HTTP."""

from __future__ import annotations

import io

import pytest

from producer import Producer, RequestError
from producer.bulk import enqueue_lines
from tests.conftest import ZONE
from tests.integration.test_flush import drain, flusher, producer  # noqa: F401 - fixtures
from worker.flush import Flusher, Outcome
from zonepurge import keys
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, Lane
from zonepurge.receipts import State, read_receipt, wait_for_receipt

pytestmark = pytest.mark.integration

TAGS = Lane(ZONE, PRODUCTION_TARGET, Kind.TAGS, Mode.PURGE)


def report(runtime, receipt):
    found = read_receipt(runtime.store, receipt.id)
    assert found is not None
    return found


def test_a_receipt_is_pending_until_its_items_are_purged_then_done(producer, flusher, sender, runtime):
    receipt = producer.enqueue({"zone": ZONE, "files": ["https://www.example.com/a",
                                                        "https://WWW.example.com:443/a#x",
                                                        "https://www.example.com/b"]})
    before = report(runtime, receipt)
    assert (before.state, before.items, before.accepted, before.outstanding) == (State.PENDING, 3, 2, 2)
    assert before.completed_at is None
    assert drain(flusher, sender) == [Outcome.PURGED]
    after = report(runtime, receipt)
    assert (after.state, after.purged, after.dead_lettered, after.outstanding) == (State.DONE, 2, 0, 0)
    assert after.completed_at is not None and after.completed_at >= after.created_at - 1
    assert runtime.store.redis.exists(keys.watch(TAGS.with_(kind=Kind.FILES).id)) == 0
    # The same, from the producer's side (the Python API of the README).
    assert producer.receipt(receipt.id) == after
    assert producer.wait(receipt.id, timeout_s=5) == after
    assert producer.receipt("0" * 32) is None


def test_a_receipt_for_items_already_pending_waits_for_them_too(producer, flusher, sender, runtime):
    first = producer.enqueue({"zone": ZONE, "tags": ["a", "b"]})
    second = producer.enqueue({"zone": ZONE, "tags": ["B", "c"]})
    assert (second.accepted, second.already_pending) == (1, 1)
    drain(flusher, sender)
    assert (report(runtime, first).state, report(runtime, first).purged) == (State.DONE, 2)
    assert (report(runtime, second).state, report(runtime, second).purged) == (State.DONE, 2)


def test_dead_lettered_items_are_counted_and_the_state_says_so(producer, flusher, sender, sandbox, runtime):
    sandbox.faults(reject_items=[{"match": "tag-3", "code": 1099, "message": "no such tag"}])
    receipt = producer.enqueue({"zone": ZONE, "tags": [f"tag-{i}" for i in range(8)]})
    drain(flusher, sender)
    done = report(runtime, receipt)
    assert (done.state, done.purged, done.dead_lettered, done.outstanding) == (
        State.DONE_WITH_DEAD_LETTERS, 7, 1, 0)


def test_transient_failures_keep_the_receipt_pending_until_the_retry_purges(producer, flusher, sandbox, runtime, clock):
    receipt = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    sandbox.faults(error_probability=1.0)
    assert flusher.flush(TAGS.id) is Outcome.RETRYING
    assert report(runtime, receipt).state is State.PENDING
    sandbox.faults(error_probability=0.0)
    clock.advance(runtime.settings.retry_max_s)  # the backoff is over
    assert flusher.flush(TAGS.id) is Outcome.PURGED
    assert report(runtime, receipt).state is State.DONE


def test_a_soft_purge_covered_by_a_pending_hard_purge_waits_for_the_hard_one(producer, flusher, sender, runtime):
    hard = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    soft = producer.enqueue({"zone": ZONE, "tags": ["a"], "invalidate": True})
    assert soft.accepted == 0
    assert report(runtime, soft).outstanding == 1
    drain(flusher, sender)
    assert report(runtime, soft).state is State.DONE and report(runtime, hard).state is State.DONE


def test_a_hard_purge_replacing_a_pending_soft_one_takes_its_receipts(producer, flusher, sender, sandbox, runtime):
    soft = producer.enqueue({"zone": ZONE, "tags": ["a", "b"], "invalidate": True})
    hard = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    drain(flusher, sender)
    assert sorted((p["action"], tuple(p["items"])) for p in sandbox.purges()) == [
        ("invalidate_cache", ("b",)), ("purge_cache", ("a",))]
    assert (report(runtime, soft).state, report(runtime, soft).purged) == (State.DONE, 2)
    assert report(runtime, hard).state is State.DONE


def test_items_dropped_under_a_purge_everything_count_as_purged(producer, flusher, sender, sandbox, runtime):
    tags = producer.enqueue({"zone": ZONE, "environment": "Development", "tags": ["x", "y"]})
    everything = producer.enqueue({"zone": ZONE, "purge_everything": True})
    drain(flusher, sender)
    assert [p["kind"] for p in sandbox.purges()] == ["purge_everything"]
    assert (report(runtime, tags).state, report(runtime, tags).purged) == (State.DONE, 2)
    assert report(runtime, everything).state is State.DONE


def test_urls_turned_prefixes_by_1136_carry_their_receipt(producer, flusher, sender, sandbox, runtime):
    receipt = producer.enqueue({"zone": ZONE, "environment": "Staging",
                                "files": ["https://www.example.com/a?x=1", "https://www.example.com/a?x=2",
                                          "https://www.example.com/c"]})
    assert drain(flusher, sender)[0] is Outcome.REDIRECTED
    assert [p["kind"] for p in sandbox.purges()] == ["prefixes"]
    done = report(runtime, receipt)
    # Two URLs went out as one prefix: each is counted, as the items the receipt accepted.
    assert (done.state, done.purged, done.outstanding) == (State.DONE, 3, 0)


def test_an_item_enqueued_again_while_in_flight_is_done_only_when_the_new_copy_is(producer, runtime, sandbox, clock):
    clock.advance(3600)
    first = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    take = runtime.store.take(TAGS, 100, 0, 60, at_ms=int(clock() * 1000))
    again = producer.enqueue({"zone": ZONE, "tags": ["a"]})  # the page changed again meanwhile
    assert again.accepted == 1
    runtime.store.settle(take.batch)  # the first send succeeded
    assert report(runtime, first).state is State.PENDING  # the newer content is not purged yet
    assert report(runtime, again).state is State.PENDING
    flusher = Flusher(runtime, clock=clock, sleep=clock.sleep)
    assert flusher.flush(TAGS.id) is Outcome.PURGED
    assert report(runtime, first).state is State.DONE and report(runtime, again).state is State.DONE


def test_an_expired_lease_keeps_its_receipts_waiting(producer, runtime, clock):
    receipt = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    take = runtime.store.take(TAGS, 100, 0, 1, at_ms=int(clock() * 1000) + 10_000)
    assert take.status == "taken"
    assert runtime.store.release_expired(at_ms=int(clock() * 1000) + 20_000) == [TAGS]
    assert runtime.store.settle(take.batch) is False  # its worker was too late
    assert report(runtime, receipt).state is State.PENDING
    clock.advance(3600)
    assert Flusher(runtime, clock=clock, sleep=clock.sleep).flush(TAGS.id) is Outcome.PURGED
    assert report(runtime, receipt).state is State.DONE


FILES = Lane(ZONE, PRODUCTION_TARGET, Kind.FILES, Mode.PURGE)


def test_a_file_is_out_of_the_workers_sight_until_its_last_line_is_read(producer, flusher, runtime):
    runtime.settings = runtime.settings.model_copy(update={"enqueue_chunk": 10})
    lines = [f"https://www.example.com/{i}" for i in range(25)] + ["https://www.example.com/0"]
    seen = []

    def while_reading():
        for line in lines:
            yield line + "\n"
            seen.append(flusher.flush(FILES.id))  # a worker looking in meanwhile finds nothing

    receipt = enqueue_lines(producer, ZONE, None, Kind.FILES, Mode.PURGE, while_reading())
    assert set(seen) == {Outcome.EMPTY} and len(seen) == 26
    assert (receipt.items, receipt.accepted, receipt.already_pending) == (26, 25, 1)
    assert runtime.store.redis.keys(keys.stage("*")) == []
    assert report(runtime, receipt).state is State.PENDING
    while flusher.flush(FILES.id) is Outcome.PURGED:
        pass
    done = report(runtime, receipt)
    assert (done.state, done.purged, done.outstanding) == (State.DONE, 25, 0)


def test_a_bad_last_line_leaves_nothing_behind(producer, runtime):
    runtime.settings = runtime.settings.model_copy(update={"enqueue_chunk": 10})
    lines = [f"https://www.example.com/{i}\n" for i in range(45)] + ["ftp://nope\n"]
    with pytest.raises(RequestError, match="line 46"):
        enqueue_lines(producer, ZONE, None, Kind.FILES, Mode.PURGE, iter(lines))
    assert runtime.store.redis.keys("zp:*") == []  # staged chunks dropped, no receipt, no lane


def test_a_busy_lane_takes_a_file_slice_by_slice_and_the_receipt_waits_for_the_last(
        producer, flusher, runtime, monkeypatch):
    import zonepurge.store as store_module

    monkeypatch.setattr(store_module, "STAGE_COMMIT_LIMIT", 0)  # any item held makes it busy
    runtime.settings = runtime.settings.model_copy(update={"enqueue_chunk": 10})
    producer.enqueue({"zone": ZONE, "files": ["https://www.example.com/held"]})
    lines = [f"https://www.example.com/{i}" for i in range(25)]
    seen = []

    def between_slices(progress):
        # Everything enqueued so far is purged before the next slice: the receipt stays pending.
        if progress.phase == "enqueueing" and progress.fraction < 1:
            while flusher.flush(FILES.id) is Outcome.PURGED:
                pass
            ids = [k.decode().removeprefix(keys.RECEIPT_PREFIX) for k in runtime.store.redis.scan_iter(keys.receipt("*"))]
            [still_open] = [i for i in ids if runtime.store.receipt(i).get("open")]  # the file's, not sealed yet
            seen.append(read_receipt(runtime.store, still_open))

    receipt = enqueue_lines(producer, ZONE, None, Kind.FILES, Mode.PURGE, io.StringIO("\n".join(lines)),
                            progress=between_slices)
    assert [r.state for r in seen] == [State.PENDING] * 2 and seen[-1].outstanding == 0
    while flusher.flush(FILES.id) is Outcome.PURGED:
        pass
    done = report(runtime, receipt)
    assert (done.state, done.items, done.accepted, done.purged) == (State.DONE, 25, 25, 25)


def test_a_receipt_past_its_ttl_is_not_brought_back_by_its_items(producer, flusher, sender, runtime):
    receipt = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    runtime.store.redis.delete(keys.receipt(receipt.id))
    drain(flusher, sender)
    assert read_receipt(runtime.store, receipt.id) is None
    assert runtime.store.redis.exists(keys.receipt(receipt.id)) == 0


def test_waiting_for_a_receipt_polls_until_done_or_the_timeout(producer, runtime, clock):
    receipt = producer.enqueue({"zone": ZONE, "tags": ["a"]})
    timed_out = wait_for_receipt(runtime.store, receipt.id, 2.0, clock=clock, sleep=clock.sleep)
    assert timed_out.state is State.PENDING and sum(clock.slept) == pytest.approx(2.0)
    assert wait_for_receipt(runtime.store, "0" * 32, 2.0, clock=clock, sleep=clock.sleep) is None
    flushed = []

    def sleep_then_flush(seconds):
        clock.sleep(seconds)
        if not flushed:
            flushed.append(Flusher(runtime, clock=lambda: clock() + 3600).flush(TAGS.id))

    done = wait_for_receipt(runtime.store, receipt.id, 60.0, clock=clock, sleep=sleep_then_flush)
    assert flushed == [Outcome.PURGED] and done.state is State.DONE
