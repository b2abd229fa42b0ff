"""Chaos: tens of thousands of URLs, several workers SIGKILLed in turn, Redis restarted mid-drain.

Every accepted item must be purged at least once. The figures (items, kills, restarts, lost,
duplicates) are printed and recorded in docs/reliability.md; reproduce them with

    scripts/test tests/integration/test_chaos.py -s
"""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from producer import Producer
from tests.conftest import ZONE
from zonepurge.runtime import Runtime
from zonepurge.services import RedisServer, start_worker, wait_for
from zonepurge.settings import Settings

pytestmark = pytest.mark.integration

ITEMS = 20_000
WORKERS = 3
KILL_EVERY_S = 2.0


def test_chaos_loses_nothing(service_env, sandbox):
    rng = random.Random(4)
    server = RedisServer(appendonly=True).start()
    env = {
        **service_env,
        "REDIS_URL": f"redis://127.0.0.1:{server.port}/0",
        "CELERY_BROKER_URL": f"redis://127.0.0.1:{server.port}/1",
        # Small batches and a Pro-plan rate make the drain last long enough for the chaos.
        "ZONEPURGE_PLAN": "pro",
        "ZONEPURGE_URL_ITEMS_PER_REQUEST": "50",
        "ZONEPURGE_HTTP_TIMEOUT_S": "2",
        "ZONEPURGE_LEASE_S": "5",
        "ZONEPURGE_SWEEP_INTERVAL_S": "1",
        "ZONEPURGE_RETRY_MAX_S": "2",
    }
    sandbox.reset(plan="pro")
    sandbox.faults(latency_ms=30)
    urls = [f"https://www.example.com/chaos/{i}" for i in range(ITEMS)]
    # Producers queue real flush tasks on the chaos's own broker, as beside running workers.
    runtime = Runtime(Settings(**{k.lower().removeprefix("zonepurge_"): v for k, v in env.items()}))
    for first in range(0, ITEMS, 5000):
        Producer(runtime).enqueue({"zone": ZONE, "files": urls[first:first + 5000]})
    workers = [start_worker(env, concurrency=4) for _ in range(WORKERS)]
    kills = restarts = 0

    def purged() -> set[str]:
        return {u for p in sandbox.purges() for u in p["items"]}

    try:
        started = time.monotonic()
        next_kill = started + KILL_EVERY_S
        while len(purged()) < ITEMS and time.monotonic() - started < 240:
            time.sleep(0.2)  # pacing the chaos, not waiting for a result
            if time.monotonic() >= next_kill:
                victim = workers.pop(rng.randrange(len(workers)))
                victim.kill()  # SIGKILL, mid-whatever
                kills += 1
                workers.append(start_worker(env, concurrency=4))
                next_kill = time.monotonic() + KILL_EVERY_S
                if kills == 2:
                    server.restart()  # crash and come back from the append-only file
                    restarts += 1
        wait_for(lambda: len(purged()) >= ITEMS, 120, "every item to be purged")
    finally:
        for worker in workers:
            worker.stop()
        server.cleanup()

    counts = Counter(u for p in sandbox.purges() for u in p["items"])
    lost = ITEMS - len(set(urls) & set(counts))
    duplicates = sum(counts.values()) - len(counts)
    print(f"\nchaos: items={ITEMS} workers={WORKERS} kills={kills} redis_restarts={restarts} "
          f"lost={lost} duplicates={duplicates} took={time.monotonic() - started:.1f}s")
    assert lost == 0
    assert kills >= 2 and restarts == 1
