"""Fixtures: a real redis-server, the real sandbox over HTTP, a real Celery worker.

Each is started once per session on free ports (``zonepurge.services``, the same code
``zonepurge up`` uses) and reset between tests. Set ZONEPURGE_TEST_REDIS_URL to use a Redis of
your own instead (its databases 14 and 15 are flushed).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis

from zonepurge.runtime import Runtime
from zonepurge.sandbox.client import SandboxClient
from zonepurge.services import (
    SANDBOX_TOKEN,
    ChildProcess,
    RedisServer,
    start_ingest,
    start_sandbox,
    start_worker,
)
from zonepurge.settings import Settings

# The suite runs with its own settings, whatever the user running it has exported.
for _name in list(os.environ):
    if _name.startswith(("ZONEPURGE_", "CLOUDFLARE_")) or _name in ("REDIS_URL", "CELERY_BROKER_URL"):
        if _name != "ZONEPURGE_TEST_REDIS_URL":
            del os.environ[_name]

ZONE = "023e105f4ecef8ad9ca31a8372d0c353"
OTHER_ZONE = "0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b0b"


@pytest.fixture(scope="session")
def redis_base() -> Iterator[str]:
    """``redis://host:port`` of a Redis for the whole session."""
    given = os.environ.get("ZONEPURGE_TEST_REDIS_URL")
    if given:
        yield re.sub(r"/\d*$", "", given)  # databases are chosen below
        return
    server = RedisServer().start()
    try:
        yield f"redis://127.0.0.1:{server.port}"
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def redis_urls(redis_base: str) -> dict[str, str]:
    # State and broker in separate databases, so that flushing state between tests leaves the
    # broker's queue bindings alone.
    return {"REDIS_URL": f"{redis_base}/15", "CELERY_BROKER_URL": f"{redis_base}/14"}


@pytest.fixture
def redis_client(redis_urls: dict[str, str]) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_urls["REDIS_URL"])
    client.flushdb()
    # Queued tasks go, the queue's bindings stay: kombu declares a binding once per connection
    # and caches that it did, so deleting it would make this process's later sends vanish.
    broker = redis.Redis.from_url(redis_urls["CELERY_BROKER_URL"])
    stale = [k for k in broker.scan_iter() if not k.startswith(b"_kombu.binding.")]
    if stale:
        broker.delete(*stale)
    broker.close()
    yield client
    client.close()


@pytest.fixture(scope="session")
def sandbox_process() -> Iterator[tuple[ChildProcess, str]]:
    child, base_url = start_sandbox()
    try:
        yield child, base_url
    finally:
        child.stop()


# The running sandbox, seen from a test: its base URL and its admin endpoints.
Sandbox = SandboxClient


@pytest.fixture
def sandbox(sandbox_process: tuple[ChildProcess, str]) -> Iterator[Sandbox]:
    box = Sandbox(sandbox_process[1])
    box.reset()
    yield box
    box.close()


def _service_env(redis_urls: dict[str, str], sandbox_url: str) -> dict[str, str]:
    return {
        **redis_urls,
        "CLOUDFLARE_BASE_URL": sandbox_url,
        "CLOUDFLARE_API_TOKEN": SANDBOX_TOKEN,
        "ZONEPURGE_DEBOUNCE_S": "0.1",
        "ZONEPURGE_SWEEP_INTERVAL_S": "1",
    }


@pytest.fixture
def service_env(redis_urls: dict[str, str], sandbox: Sandbox, redis_client: redis.Redis) -> dict[str, str]:
    """The environment a producer or worker process of the test runs with."""
    return _service_env(redis_urls, sandbox.base_url)


@pytest.fixture
def settings(service_env: dict[str, str]) -> Settings:
    # Field names from variable names: REDIS_URL -> redis_url, ZONEPURGE_DEBOUNCE_S -> debounce_s.
    return Settings(**{k.lower().removeprefix("zonepurge_"): v for k, v in service_env.items()})


class FakeClock:
    """Time that moves only when told to: ``clock()`` reads it, ``clock.sleep(s)`` moves it."""

    def __init__(self, start: float | None = None) -> None:
        import time

        self.now = time.time() if start is None else start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


class RecordingSender:
    """Stands in for Celery when a test drives flushes itself: records what would be queued."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, float]] = []

    def __call__(self, lane_id: str, delay_s: float) -> None:
        self.sent.append((lane_id, delay_s))


@pytest.fixture
def sender() -> RecordingSender:
    return RecordingSender()


@pytest.fixture
def runtime(settings: Settings, redis_client: redis.Redis, sender: RecordingSender) -> Iterator[Runtime]:
    rt = Runtime(settings, redis_client=redis_client, send=sender)
    yield rt
    rt.close()


@pytest.fixture
def live_runtime(settings: Settings, redis_client: redis.Redis) -> Iterator[Runtime]:
    """A runtime whose producers queue real flush tasks on the test's broker, as a producer beside
    running workers does (``runtime`` records them instead, for tests that flush by hand)."""
    rt = Runtime(settings, redis_client=redis_client)
    yield rt
    rt.close()


@pytest.fixture
def worker(service_env: dict[str, str]) -> Iterator[ChildProcess]:
    """A real Celery worker process (threads pool) against the test's Redis and sandbox."""
    child = start_worker(service_env, concurrency=4)
    try:
        yield child
    finally:
        child.stop()


# The ingest's tokens in the tests, by what they may purge. The Staging ref is the sandbox's
# (an automatic zone has the same refs after every reset).
INGEST_TOKENS = {
    "all": "tok-all-zones-all-environments",
    "staging": "tok-zone-staging-by-name-only",
    "staging-ref": "tok-zone-staging-by-ref-only",
    "production": "tok-zone-production-only-xx",
    "other-zone": "tok-other-zone-everything-x",
}
INGEST_MAX_BODY_BYTES = 8192


class Ingest:
    """The running ingest (``zonepurge serve``), seen from a test."""

    def __init__(self, child: ChildProcess, root: str) -> None:
        self.child = child
        self.root = root
        self.api = f"{root}/client/v4"
        self.http = httpx.Client(base_url=root, timeout=30)

    def call(self, method: str, path: str, token: str | None = "all", **kwargs: Any) -> httpx.Response:
        """A request with one of INGEST_TOKENS (by key), or none."""
        headers = dict(kwargs.pop("headers", {}))
        if token is not None:
            headers["Authorization"] = f"Bearer {INGEST_TOKENS.get(token, token)}"
        return self.http.request(method, path, headers=headers, **kwargs)


@pytest.fixture(scope="session")
def ingest_process(redis_urls: dict[str, str],
                   sandbox_process: tuple[ChildProcess, str]) -> Iterator[Ingest]:
    """`zonepurge serve` on a free port, as a child process, against the tests' Redis and
    sandbox, with INGEST_TOKENS."""
    import json

    base_url = sandbox_process[1]
    staging_ref = Sandbox(base_url).environments(ZONE)["Staging"]
    scopes = {
        "all": (["*"], ["*"]),
        "staging": ([ZONE], ["staging"]),
        "staging-ref": ([ZONE], [staging_ref]),
        "production": ([ZONE], ["production"]),
        "other-zone": ([OTHER_ZONE], ["*"]),
    }
    tokens = [{"token": INGEST_TOKENS[name], "zones": zones, "environments": envs, "name": name}
              for name, (zones, envs) in scopes.items()]
    env = {**_service_env(redis_urls, base_url), "ZONEPURGE_INGEST_TOKENS": json.dumps(tokens),
           "ZONEPURGE_INGEST_MAX_BODY_BYTES": str(INGEST_MAX_BODY_BYTES)}
    child, root = start_ingest(env)
    ingest = Ingest(child, root)
    try:
        yield ingest
    finally:
        ingest.http.close()
        child.stop()


@pytest.fixture
def ingest(ingest_process: Ingest, sandbox: Sandbox, redis_client: redis.Redis) -> Ingest:
    """The ingest, with Redis flushed and the sandbox reset for the test."""
    return ingest_process
