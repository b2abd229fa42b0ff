"""The whole path: CLI producers, Redis, a real Celery worker, the sandbox over HTTP.

The scenario of the pipeline issue: with the docs' environments (Production, Staging,
Development), several producers enqueue at once 10,000 URLs with 30% duplicates (some spelled
differently) for Production and Development and tags for Staging; one worker drains them at
Enterprise caps. Every unique item is purged exactly once, at the right endpoint, in full
batches, none over the cap, and `status --json` then reports nothing pending.

The worker starts once the producers are done. Deduplication is among *pending* items: a copy
that arrives after its twin was sent is purged again, as it must be (the page may have changed in
between), so "exactly once" is only a fair expectation when nothing is sent mid-enqueue.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections import Counter

import pytest

from tests.conftest import ZONE
from zonepurge.plans import PLAN_LIMITS, Plan
from zonepurge.services import start_worker, wait_for

pytestmark = pytest.mark.integration


def respell(url: str, rng: random.Random) -> str:
    """The same cache key, written another way."""
    scheme, rest = url.split("://", 1)
    host, path = rest.split("/", 1)
    choice = rng.randrange(4)
    if choice == 0:
        return f"{scheme}://{host.upper()}/{path}"
    if choice == 1:
        return f"{scheme}://{host}:443/{path}"
    if choice == 2:
        return f"{url}#comments"
    return url


def with_duplicates(unique: list[str], duplicates: int, rng: random.Random, respeller) -> list[str]:
    lines = unique + [respeller(rng.choice(unique), rng) for _ in range(duplicates)]
    rng.shuffle(lines)
    return lines


def run_cli(args: list[str], env: dict[str, str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zonepurge", *args], env={**env}, input=stdin,
                          capture_output=True, text=True, timeout=120)


def test_concurrent_producers_one_worker_every_unique_item_purged_once(tmp_path, service_env, sandbox):
    rng = random.Random(2026)
    refs = sandbox.environments(ZONE)
    prod = [f"https://www.example.com/articles/{i}?page=1" for i in range(3500)]
    dev = [f"https://dev.example.com/docs/{i}" for i in range(3500)]
    tags = [f"section-{i}" for i in range(700)]
    prod_lines = with_duplicates(prod, 1500, rng, respell)
    dev_lines = with_duplicates(dev, 1500, rng, respell)
    tag_lines = with_duplicates(tags, 300, rng, lambda t, r: t.upper() if r.random() < 0.5 else t)
    assert len(prod_lines) + len(dev_lines) == 10_000

    jobs = []  # two producers per URL environment, each with half the lines; one for tags
    for env_name, lines, kind in (("Production", prod_lines, "files"), ("development", dev_lines, "files"),
                                  ("STAGING", tag_lines, "tags")):
        parts = [lines[: len(lines) // 2], lines[len(lines) // 2 :]] if kind == "files" else [lines]
        for n, part in enumerate(parts):
            path = tmp_path / f"{env_name}-{n}.txt"
            path.write_text("\n".join(part) + "\n")
            jobs.append(["enqueue", "--zone", ZONE, "--env", env_name, "--kind", kind,
                         "--from-file", str(path), "--json"])
    producers = [subprocess.Popen([sys.executable, "-m", "zonepurge", *args], env=service_env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for args in jobs]
    receipts = []
    for process in producers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        receipts.append(json.loads(out))
    assert sum(r["items"] for r in receipts) == 10_000 + 1000
    assert sum(r["accepted"] for r in receipts) == 3500 + 3500 + 700

    worker = start_worker(service_env, concurrency=4)
    expected = {(None, u) for u in prod} | {(refs["Development"], u) for u in dev} | {(refs["Staging"], t) for t in tags}

    def purged_items() -> list[tuple[str | None, str]]:
        return [(p["environment"], item) for p in sandbox.purges() for item in p["items"]]

    try:
        wait_for(lambda: len(purged_items()) >= len(expected), timeout_s=90, what="the worker to drain the queue")
        wait_for(lambda: json.loads(run_cli(["status", "--json"], service_env).stdout)["in_flight"] == 0,
                 timeout_s=30, what="the last batch to be settled")
    finally:
        worker.stop()

    counts = Counter(purged_items())
    assert set(counts) == expected, "some item was purged in the wrong environment, or not at all"
    assert max(counts.values()) == 1, "some item was purged twice"

    limits = PLAN_LIMITS[Plan.ENTERPRISE]
    purges = sandbox.purges()
    assert all(p["action"] == "purge_cache" for p in purges)
    by_lane = Counter((p["environment"], p["kind"]) for p in purges)
    for (env, kind), calls in by_lane.items():
        cap = limits.url_items_per_request if kind == "files" else limits.flex_items_per_request
        assert all(len(p["items"]) <= cap for p in purges if (p["environment"], p["kind"]) == (env, kind))
        unique = sum(1 for e, _ in expected if e == env)
        assert calls <= math.ceil(unique / cap) + 2, f"{calls} calls for {unique} items of {kind} in {env}"
    # Nothing was refused. (Before the shared rate budget, a few 429s are possible when the
    # worker outruns the bucket; they are retried and do not count as purges.)
    assert {c["status"] for c in sandbox.calls()} <= {200, 429}

    status = json.loads(run_cli(["status", "--json"], service_env).stdout)
    assert (status["pending"], status["in_flight"], status["dead_letters"]) == (0, 0, 0)
    assert status["lanes"] == []
