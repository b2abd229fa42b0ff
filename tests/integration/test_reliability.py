"""Accepted means purged or dead-lettered, whatever dies and whenever.

A worker killed at each instant of a flush; Redis killed and restarted with its append-only file;
producers facing a Redis that is down.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator

import httpx
import pytest
import redis

from producer import Producer, UnavailableError
from tests.conftest import ZONE, RecordingSender
from worker.flush import Flusher, Outcome
from zonepurge import keys
from zonepurge.items import Kind, Mode
from zonepurge.lanes import PRODUCTION_TARGET, Lane
from zonepurge.runtime import Runtime
from zonepurge.services import RedisServer, start_worker, wait_for
from zonepurge.store import STAGE_COMMIT_LIMIT, STAGE_TTL_S, Store

pytestmark = pytest.mark.integration

LANE = Lane(ZONE, PRODUCTION_TARGET, Kind.FILES, Mode.PURGE)
FAR_FUTURE_MS = int((time.time() + 10 * 24 * 3600) * 1000)


class WorkerKilled(BaseException):
    """Stands for SIGKILL inside a flush: nothing after it runs, no handler sees it."""


class DiesAt(httpx.BaseTransport):
    """Real HTTP to the sandbox, with the worker dying before the request or after the answer."""

    def __init__(self, when: str) -> None:
        self.when = when
        self.inner = httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if self.when == "before-send" and request.method == "POST":
            raise WorkerKilled
        response = self.inner.handle_request(request)
        if self.when == "after-answer" and request.method == "POST":
            response.read()
            raise WorkerKilled
        return response


@pytest.mark.parametrize("when, purges", [("before-send", 1), ("after-answer", 2)])
def test_a_worker_killed_at_any_instant_of_a_flush_loses_nothing(when, purges, settings, redis_client, sandbox):
    urls = [f"https://www.example.com/k/{i}" for i in range(10)]
    dying = Runtime(settings, redis_client=redis_client, transport=DiesAt(when), send=RecordingSender())
    Producer(dying).enqueue({"zone": ZONE, "files": urls})
    with pytest.raises(WorkerKilled):
        Flusher(dying, clock=lambda: time.time() + 3600).flush(LANE.id)
    assert dying.store.snapshot().in_flight_by_lane == {LANE.id: 10}  # leased, not lost

    survivor = Runtime(settings, redis_client=redis_client, send=RecordingSender())
    assert survivor.store.release_expired(at_ms=FAR_FUTURE_MS) == [LANE]  # its lease ran out
    assert Flusher(survivor, clock=lambda: time.time() + 3600).flush(LANE.id) is Outcome.PURGED
    counts = Counter(u for p in sandbox.purges() for u in p["items"])
    assert set(counts) == set(urls)
    # Killed after Cloudflare purged but before it was recorded: sent again, once. Duplicates
    # are bounded by the batches in flight; losses are none.
    assert set(counts.values()) == {purges}


@pytest.fixture
def own_redis() -> Iterator[RedisServer]:
    """A redis-server of the test's own, with the append-only file fsynced on every write."""
    server = RedisServer(appendonly=True).start()
    yield server
    server.cleanup()


def env_for(server: RedisServer, base: dict[str, str]) -> dict[str, str]:
    return {**base, "REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
            "CELERY_BROKER_URL": f"redis://127.0.0.1:{server.port}/1"}


def test_redis_killed_and_restarted_keeps_what_it_acknowledged_and_workers_carry_on(own_redis, service_env, sandbox):
    env = env_for(own_redis, service_env)
    urls = [f"https://www.example.com/r/{i}" for i in range(3000)]
    settings_env = {k.lower().removeprefix("zonepurge_"): v for k, v in env.items()}
    from zonepurge.settings import Settings

    runtime = Runtime(Settings(**settings_env), send=RecordingSender())
    receipt = Producer(runtime).enqueue({"zone": ZONE, "files": urls})
    assert receipt.accepted == 3000
    own_redis.restart()
    assert runtime.store.snapshot().lanes[0].pending == 3000  # acknowledged, so kept
    worker = start_worker(env, concurrency=2)
    try:
        wait_for(lambda: {u for p in sandbox.purges() for u in p["items"]} >= set(urls), 60,
                 "the worker to purge after the restart")
        own_redis.restart()  # again, with a worker connected: it reconnects by itself
        more = [f"https://www.example.com/r2/{i}" for i in range(100)]
        wait_for(lambda: Producer(runtime).enqueue({"zone": ZONE, "files": more}) is not None, 30,
                 "Redis to be back")
        try:
            wait_for(lambda: {u for p in sandbox.purges() for u in p["items"]} >= set(more), 60,
                     "the worker to purge after reconnecting")
        except Exception as exc:
            raise AssertionError(f"{exc}; worker exit status {worker.process.poll()}\nworker log:\n{worker.output.tail(60)}") from None
    finally:
        worker.stop()


def test_producers_fail_fast_while_redis_is_down(own_redis, service_env):
    env = env_for(own_redis, service_env)
    own_redis.kill()
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE, "--tag", "a"],
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3
    assert "cannot reach Redis" in result.stderr and "0 item(s)" in result.stderr
    from zonepurge.settings import Settings

    runtime = Runtime(Settings(redis_url=env["REDIS_URL"]), send=RecordingSender())
    with pytest.raises(UnavailableError, match="cannot reach Redis"):
        Producer(runtime).enqueue({"zone": ZONE, "tags": ["a"]})
    assert time.monotonic() - started < 30  # fails, never hangs (bound far above the few seconds it takes)


def _enqueue_file(env, path):
    return subprocess.Popen([sys.executable, "-m", "zonepurge", "enqueue", "-z", ZONE, "--from-file", str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stored(err: str) -> int:
    return int(re.search(r"(\d+) item\(s\) of this request were stored", err).group(1))


def test_an_outage_while_a_file_is_read_stores_none_of_it_and_says_so(own_redis, service_env, tmp_path):
    env = {**env_for(own_redis, service_env), "ZONEPURGE_ENQUEUE_CHUNK": "200"}
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.example.com/f/{i}\n" for i in range(600_000)))
    client = redis.Redis(port=own_redis.port)
    producer = _enqueue_file(env, path)
    wait_for(lambda: client.keys(keys.stage("*")), 120, "the file to be staged")
    own_redis.kill()
    _, err = producer.communicate(timeout=120)
    assert producer.returncode == 3, err
    assert _stored(err) == 0
    own_redis.start()
    client = redis.Redis(port=own_redis.port)
    assert client.zcard(f"zp:pending:{LANE.id}") == 0  # none of the file is in the queue
    assert all(0 < client.ttl(k) <= STAGE_TTL_S for k in client.keys(keys.stage("*")))  # and what was staged goes


def test_an_outage_while_a_busy_lane_takes_a_file_says_how_much_was_stored_and_that_much_is_there(
        own_redis, service_env, tmp_path):
    env = {**env_for(own_redis, service_env), "ZONEPURGE_ENQUEUE_CHUNK": "200"}
    held = [f"https://www.example.com/held/{i}" for i in range(STAGE_COMMIT_LIMIT + 1)]
    store = Store(redis.Redis(port=own_redis.port))
    store.enqueue(LANE, held)  # more than a one-step commit takes: the file goes in slice by slice
    path = tmp_path / "urls.txt"
    path.write_text("".join(f"https://www.example.com/f/{i}\n" for i in range(300_000)))
    client = redis.Redis(port=own_redis.port)
    pending_key = f"zp:pending:{LANE.id}"
    producer = _enqueue_file(env, path)
    wait_for(lambda: client.zcard(pending_key) > len(held), 120, "the file's slices to be enqueued")
    own_redis.kill()
    _, err = producer.communicate(timeout=120)
    assert producer.returncode == 3, err
    stored = _stored(err)
    assert 0 < stored < 300_000
    own_redis.start()
    client = redis.Redis(port=own_redis.port)
    assert client.zcard(pending_key) >= len(held) + stored  # nothing reported as stored is missing

