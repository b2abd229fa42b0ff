"""The budget with real workers: Free limits driven to the limit, and faults that lose nothing.

Two worker processes of several threads each, against the sandbox over HTTP: what the pipeline
issue's design and the budget issue must show.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter

import pytest

from producer import Producer
from tests.conftest import OTHER_ZONE, ZONE
from zonepurge.services import start_worker, wait_for

pytestmark = pytest.mark.integration


def status(env):
    out = subprocess.run([sys.executable, "-m", "zonepurge", "status", "--json"], env=env,
                         capture_output=True, text=True, timeout=60)
    return json.loads(out.stdout)


def workers(env, count=2, threads=4):
    started = []
    try:
        for _ in range(count):
            started.append(start_worker(env, concurrency=threads))
    except BaseException:
        for w in started:
            w.stop()
        raise
    return started


def test_free_limits_two_zones_two_workers_drain_at_the_bucket_rate(service_env, sandbox, live_runtime):
    sandbox.reset(plan="free")
    env = {**service_env, "ZONEPURGE_PLAN": "free"}
    producer = Producer(live_runtime)
    for zone in (ZONE, OTHER_ZONE):
        producer.enqueue({"zone": zone, "files": [f"https://{zone[:6]}.example.com/p/{i}" for i in range(6000)]})
    running = workers(env)
    try:
        wait_for(lambda: sum(len(p["items"]) for p in sandbox.purges()) >= 12_000, 120,
                 "12,000 URLs to be purged")
    finally:
        for w in running:
            w.stop()

    purges = sandbox.purges()
    calls = sandbox.calls()
    assert Counter(u for p in purges for u in p["items"]).most_common(1)[0][1] == 1
    assert {p["account"] for p in purges} == {purges[0]["account"]}, "both zones share one account"
    took = purges[-1]["at"] - purges[0]["at"]
    floor = (12_000 - 800) / 800  # the bucket: 800 URLs of burst, then 800 a second
    print(f"\ndrained 12,000 URLs in {took:.2f}s; the bucket allows {floor:.2f}s; "
          f"{len(calls)} calls, {sum(c['status'] == 429 for c in calls)} answered 429")
    assert took <= floor * 1.10
    throttled = [c for c in calls if c["status"] == 429]
    assert len(throttled) <= 0.02 * len(calls)
    for refusal in throttled:
        closed_until = refusal["at"] + refusal["retry_after"]
        inside = [c for c in calls if c["bucket"] == refusal["bucket"] and refusal["at"] < c["at"] < closed_until]
        assert inside == [], f"calls went into the {refusal['bucket']} bucket during its Retry-After wait"


def test_faults_lose_nothing(service_env, sandbox, live_runtime):
    sandbox.reset(seed=7)
    refs = sandbox.environments(ZONE)
    env = {**service_env, "ZONEPURGE_RETRY_MAX_S": "4"}
    producer = Producer(live_runtime)
    prod_urls = [f"https://www.example.com/a/{i}" for i in range(3000)]
    dev_tags = [f"tag-{i}" for i in range(400)] + ["refused-1", "refused-2", "refused-3"]
    staging_urls = [f"https://www.example.com/s/{i}/page" for i in range(150)]
    producer.enqueue({"zone": ZONE, "files": prod_urls})
    producer.enqueue({"zone": ZONE, "environment": "Development", "tags": dev_tags})
    producer.enqueue({"zone": ZONE, "environment": "Staging", "files": staging_urls})
    sandbox.faults(error_probability=0.15, drop_probability=0.05, throttle_probability=0.05,
                   throttle_retry_after_s=2,
                   reject_items=[{"match": "refused-", "code": 1099, "message": "not purgeable"}])
    running = workers(env)
    try:
        wait_for(lambda: (lambda s: s["pending"] == 0 and s["in_flight"] == 0)(status(service_env)), 180,
                 "the queue to drain through the faults")
    finally:
        for w in running:
            w.stop()

    purged = {(p["environment"], item) for p in sandbox.purges() for item in p["items"]}
    dead = {(r.environment, r.item): r for r in live_runtime.store.dead_letters()}
    for url in prod_urls:
        assert (None, url) in purged, f"{url} was lost"
    for tag in dev_tags:
        if tag.startswith("refused-"):
            record = dead[(refs["Development"], tag)]
            assert (record.code, record.reason) == (1099, "rejected") and "not purgeable" in record.message
            assert (refs["Development"], tag) not in purged
        else:
            assert (refs["Development"], tag) in purged, f"{tag} was lost"
    for url in staging_urls:  # Staging refuses URL purges (1136): each went out as a prefix
        assert (refs["Staging"], url.removeprefix("https://")) in purged
    assert len(dead) == 3
    faults = Counter(c["fault"] for c in sandbox.calls())
    print(f"\nfaults injected: {dict(faults)}")
    assert faults["error"] and faults["throttle"]
