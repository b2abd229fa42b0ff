"""Prometheus metrics: what happened (counters, histograms) and where things stand (gauges).

Two kinds, kept apart because they are right in different ways:

- **Events** (items enqueued, purged, dead-lettered; API calls; 429s; budget waits; retries;
  batch sizes; enqueue-to-purge latency) are counted by the process where they happen. Under
  Celery's prefork pool they happen in child processes, so the worker sets
  ``PROMETHEUS_MULTIPROC_DIR`` before forking and the main process serves the children's
  counts merged (prometheus_client's multiprocess mode). With the threads pool (the default) one
  process counts everything.
- **State** (pending items and the age of the oldest, items in flight, dead letters, the budget
  left, paused zones) is read from Redis when Prometheus scrapes, so every worker and the ingest
  report the same, global figures: use ``max`` over instances, not ``sum``.

Label values: ``environment`` is "production" or the environment's ref; ``kind`` is files, tags,
hosts, prefixes or everything.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from zonepurge.lanes import Lane

_LANE = ["zone", "environment", "kind"]

ITEMS_ENQUEUED = Counter("zonepurge_items_enqueued", "Items newly pending after an enqueue", _LANE)
ITEMS_DEDUPLICATED = Counter(
    "zonepurge_items_deduplicated",
    "Items of an enqueue that were pending already (or repeated, or covered by a hard purge)", _LANE)
ITEMS_PURGED = Counter("zonepurge_items_purged", "Items in purge requests Cloudflare accepted", _LANE)
ITEMS_DEAD_LETTERED = Counter("zonepurge_items_dead_lettered", "Items moved to the dead-letter list",
                              [*_LANE, "reason"])
API_CALLS = Counter("zonepurge_api_calls", "Purge calls to Cloudflare, by answer",
                    ["kind", "status", "code"])
THROTTLED = Counter("zonepurge_throttled", "429 answers, by budget bucket", ["bucket"])
BUDGET_WAITS = Counter("zonepurge_budget_waits", "Sends that had to wait for budget", ["bucket"])
BUDGET_WAIT_SECONDS = Counter("zonepurge_budget_wait_seconds", "Seconds of those waits", ["bucket"])
RETRIES = Counter("zonepurge_retries", "Batches sent back to pending after a transient failure",
                  ["kind"])
BATCH_SIZE = Histogram("zonepurge_batch_size", "Items per purge call", ["kind"],
                       buckets=(1, 2, 5, 10, 30, 50, 100, 200, 300, 500, 1000))
PURGE_LATENCY = Histogram(
    "zonepurge_purge_latency_seconds", "From an item's first enqueue to Cloudflare accepting its purge",
    ["kind"], buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600))
CALL_DURATION = Histogram("zonepurge_api_call_seconds", "Duration of purge calls", ["kind"],
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))


def lane_labels(lane: Lane) -> dict[str, str]:
    return {"zone": lane.zone, "environment": str(lane.env), "kind": lane.kind.value}


class QueueStateCollector(Collector):
    """Gauges read at scrape time from a status report (zonepurge.status.collect: Redis)."""

    def __init__(self, report: Callable[[], dict[str, Any]]) -> None:
        self._report = report

    def collect(self) -> Iterator[GaugeMetricFamily]:
        report = self._report()
        labels = ["zone", "environment", "kind", "mode"]
        pending = GaugeMetricFamily("zonepurge_pending_items", "Items waiting to be sent", labels=labels)
        in_flight = GaugeMetricFamily("zonepurge_in_flight_items", "Items taken by a worker, not yet settled",
                                      labels=labels)
        oldest = GaugeMetricFamily("zonepurge_oldest_pending_age_seconds",
                                   "Age of the oldest pending item", labels=labels)
        for lane in report["lanes"]:
            values = [lane["zone"], lane["environment"], lane["kind"], lane["mode"]]
            pending.add_metric(values, lane["pending"])
            in_flight.add_metric(values, lane["in_flight"])
            if lane["oldest_pending_age_s"] is not None:
                oldest.add_metric(values, lane["oldest_pending_age_s"])
        yield pending
        yield in_flight
        yield oldest
        yield GaugeMetricFamily("zonepurge_dead_letters", "Items in the dead-letter list",
                                value=report["dead_letters"])
        tokens = GaugeMetricFamily("zonepurge_budget_tokens", "Budget left in a bucket",
                                   labels=["account", "bucket"])
        closed = GaugeMetricFamily("zonepurge_budget_closed_seconds",
                                   "Seconds a bucket stays closed after a 429", labels=["account", "bucket"])
        for account, buckets in report["budget"].items():
            for name, bucket in buckets.items():
                tokens.add_metric([account, name], bucket["tokens"])
                closed.add_metric([account, name], bucket["closed_for_s"])
        yield tokens
        yield closed
        paused = GaugeMetricFamily("zonepurge_zone_paused", "1 while a zone's purging is paused (401/403)",
                                   labels=["zone"])
        for pause in report["paused_zones"]:
            paused.add_metric([pause["zone"]], 1)
        yield paused


def _events_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        merged = CollectorRegistry()
        multiprocess.MultiProcessCollector(merged)
        return merged
    from prometheus_client import REGISTRY

    return REGISTRY


class _Both(Collector):
    """This process's events and the queue's state, as one registry serves them."""

    def __init__(self, events: CollectorRegistry, state: Collector | None) -> None:
        self._events = events
        self._state = state

    def collect(self) -> Iterator[Any]:
        yield from self._events.collect()
        if self._state is not None:
            yield from self._state.collect()


def registry(runtime: Any | None = None) -> CollectorRegistry:
    """What /metrics serves: this process's events (merged across prefork children when
    PROMETHEUS_MULTIPROC_DIR is set) and, given a runtime, the queue's state from Redis."""
    state = None
    if runtime is not None:
        from zonepurge.status import collect

        state = QueueStateCollector(lambda: collect(runtime))
    combined = CollectorRegistry(auto_describe=False)
    combined.register(_Both(_events_registry(), state))
    return combined


def exposition(runtime: Any | None = None) -> bytes:
    return generate_latest(registry(runtime))


def serve(port: int, runtime: Any) -> None:
    """Serve /metrics on ``port`` from a background thread (the worker's main process)."""
    from prometheus_client import start_http_server

    start_http_server(port, registry=registry(runtime))
