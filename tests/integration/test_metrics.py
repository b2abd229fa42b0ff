"""Operators' view: the metrics counted while draining match what the sandbox says it purged,
and every Cloudflare call is one structured log line."""

from __future__ import annotations

import json
import re
from collections import Counter

import httpx
import pytest

from producer import Producer
from tests.conftest import ZONE
from zonepurge.services import free_port, start_worker, wait_for

pytestmark = pytest.mark.integration


def scrape(url: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text -> {(name, labels): value}."""
    samples = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        assert match, line
        name, labels, value = match.groups()
        pairs = frozenset(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', labels or ""))
        samples[(name, pairs)] = float(value)
    return samples


def total(samples, name: str, **labels: str) -> float:
    wanted = set(labels.items())
    return sum(v for (n, l), v in samples.items() if n == name and wanted <= set(l))


def test_counters_match_the_sandbox_record_and_calls_are_logged_as_json(service_env, sandbox, live_runtime):
    refs = sandbox.environments(ZONE)
    port = free_port()
    env = {**service_env, "ZONEPURGE_METRICS_PORT": str(port), "ZONEPURGE_LOG_FORMAT": "json"}
    producer = Producer(live_runtime)
    producer.enqueue({"zone": ZONE, "files": [f"https://www.example.com/m/{i}" for i in range(1200)]})
    producer.enqueue({"zone": ZONE, "environment": "Development", "tags": [f"t{i}" for i in range(150)]})
    sandbox.faults(throttle_probability=0.3, throttle_retry_after_s=1)
    worker = start_worker(env, concurrency=4)
    try:
        wait_for(lambda: sum(len(p["items"]) for p in sandbox.purges()) >= 1350, 60, "the drain")
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        calls = [c for c in sandbox.calls() if c["method"] == "POST"]  # purges, not environment lists
        wait_for(lambda: total(scrape(metrics_url), "zonepurge_api_calls_total") >= len(calls), 30,
                 "the last call to be counted")
        samples = scrape(metrics_url)
    finally:
        worker.stop()

    purged = Counter((p["environment"] or "production", p["kind"]) for p in sandbox.purges() for _ in p["items"])
    assert total(samples, "zonepurge_items_purged_total", environment="production", kind="files") == purged[("production", "files")] == 1200
    assert total(samples, "zonepurge_items_purged_total", environment=refs["Development"], kind="tags") == purged[(refs["Development"], "tags")] == 150
    assert total(samples, "zonepurge_api_calls_total", status="200") == sum(c["status"] == 200 for c in calls)
    throttled = sum(c["status"] == 429 for c in calls)
    assert total(samples, "zonepurge_api_calls_total", status="429") == throttled
    assert total(samples, "zonepurge_throttled_total") == throttled
    assert total(samples, "zonepurge_batch_size_count") == len(calls)
    assert total(samples, "zonepurge_purge_latency_seconds_count") == 1350
    assert total(samples, "zonepurge_pending_items") == 0  # state read from Redis at scrape time

    lines = [json.loads(line) for line in worker.output.lines if line.startswith("{")]
    api_calls = [line for line in lines if line.get("event") == "api_call"]
    assert len(api_calls) == len(calls)
    assert {"zone", "environment", "kind", "mode", "items", "status", "code", "duration_ms", "receipts"} <= set(api_calls[0])
    assert sum(c["items"] for c in api_calls if c["status"] == "200") == 1350
    assert all(c["receipts"] for c in api_calls), "each call names the receipts it serves"


def test_the_ingest_serves_metrics_too(ingest):
    before = total(scrape(f"{ingest.root}/metrics"), "zonepurge_items_enqueued_total", kind="tags")
    assert ingest.call("POST", f"/client/v4/zones/{ZONE}/purge_cache", json={"tags": ["m1", "m2"]}).status_code == 200
    samples = scrape(f"{ingest.root}/metrics")  # the ingest lives for the session: count the change
    assert total(samples, "zonepurge_items_enqueued_total", kind="tags") == before + 2
    assert total(samples, "zonepurge_pending_items", kind="tags") == 2


def test_counters_add_up_across_prefork_worker_processes(service_env, sandbox, live_runtime, tmp_path):
    # Under Celery's prefork pool the flushes run in child processes: each counts into files of
    # its own (prometheus_client's multiprocess mode) and the main process serves their sum.
    port = free_port()
    env = {**service_env, "ZONEPURGE_METRICS_PORT": str(port), "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    producer = Producer(live_runtime)
    kinds = {"files": [f"https://www.example.com/pf/{i}" for i in range(300)], "tags": ["t1", "t2"],
             "hosts": ["a.example.com"], "prefixes": ["www.example.com/pf"]}
    for kind, items in kinds.items():
        producer.enqueue({"zone": ZONE, kind: items})
    sandbox.faults(latency_ms=300)  # each call keeps its child busy: the next lane goes to the other
    worker = start_worker(env, concurrency=2, pool="prefork")
    try:
        wait_for(lambda: sandbox.stats()["items_purged"] >= 304, 60, "the drain")
        metrics_url = f"http://127.0.0.1:{port}/metrics"
        wait_for(lambda: total(scrape(metrics_url), "zonepurge_api_calls_total") >= sandbox.stats()["calls"], 30,
                 "every call to be counted")
        samples = scrape(metrics_url)
    finally:
        worker.stop()
    assert total(samples, "zonepurge_items_purged_total") == 304
    assert total(samples, "zonepurge_items_purged_total", kind="files") == 300
    assert total(samples, "zonepurge_api_calls_total", status="200") == sandbox.stats()["calls"] == 4
    writers = {path.stem.rsplit("_", 1)[1] for path in tmp_path.glob("counter_*.db")}
    assert len(writers) >= 2, f"the counts came from one process only: {writers}\n" + worker.output.tail(60)
