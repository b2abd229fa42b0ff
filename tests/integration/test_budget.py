"""The shared budget against a real Redis, with time moved by hand."""

import threading

import pytest

from tests.conftest import FakeClock
from zonepurge.budget import Budget
from zonepurge.items import Kind
from zonepurge.settings import Settings


@pytest.fixture
def free(redis_client):
    clock = FakeClock(start=1_000_000.0)
    return Budget(redis_client, Settings(plan="free", budget_margin_s=0), clock=clock), clock


def test_a_full_bucket_pays_until_empty_then_says_how_long_to_wait(free):
    budget, clock = free
    for _ in range(8):
        assert budget.acquire("acct", Kind.FILES, 100) == 0  # burst: 800 URLs
    assert budget.acquire("acct", Kind.FILES, 100) == pytest.approx(100 / 800)
    clock.advance(0.1)
    assert budget.acquire("acct", Kind.FILES, 100) == pytest.approx(0.025)
    clock.advance(0.025)
    assert budget.acquire("acct", Kind.FILES, 100) == 0


def test_flex_requests_cost_one_each_at_five_a_minute(free):
    budget, clock = free
    for _ in range(25):
        assert budget.acquire("acct", Kind.TAGS, 100) == 0
    assert budget.acquire("acct", Kind.PREFIXES, 1) == pytest.approx(12.0)
    assert budget.acquire("acct", Kind.FILES, 100) == 0  # URLs have their own bucket


def test_buckets_are_per_account(free):
    budget, _ = free
    for _ in range(25):
        budget.acquire("a", Kind.HOSTS, 1)
    assert budget.acquire("a", Kind.HOSTS, 1) > 0
    assert budget.acquire("b", Kind.HOSTS, 1) == 0


def test_a_cost_larger_than_the_bucket_waits_for_a_full_bucket_not_forever(free):
    budget, clock = free
    assert budget.acquire("acct", Kind.FILES, 5000) == 0
    assert budget.acquire("acct", Kind.FILES, 5000) == pytest.approx(1.0)


def test_a_block_closes_the_bucket_for_every_worker_and_empties_it(free, redis_client):
    budget, clock = free
    other_worker = Budget(redis_client, Settings(plan="free", budget_margin_s=0), clock=clock)
    assert budget.block("acct", "urls", 120) == pytest.approx(120)
    assert other_worker.acquire("acct", Kind.FILES, 1) == pytest.approx(120)
    assert budget.block("acct", "urls", 2) == pytest.approx(120)  # a shorter block cannot shorten it
    clock.advance(119.9)
    assert other_worker.acquire("acct", Kind.FILES, 1) == pytest.approx(0.1)
    clock.advance(0.1)
    assert other_worker.acquire("acct", Kind.FILES, 800) == 0  # refilled while closed
    [state] = budget.state("acct", Kind.FILES)
    assert state.throttles == 2 and state.blocked_for_s == 0


def test_the_general_limit_is_a_second_bucket_when_set(redis_client):
    clock = FakeClock(start=5_000.0)
    budget = Budget(redis_client, Settings(plan="enterprise", general_limit="3/300", budget_margin_s=0), clock=clock)
    assert [s.name for s in budget.specs(Kind.TAGS)] == ["flex", "general"]
    for _ in range(3):
        assert budget.acquire("acct", Kind.FILES, 1) == 0
    assert budget.acquire("acct", Kind.TAGS, 1) == pytest.approx(100.0)
    assert [s.name for s in Budget(redis_client, Settings()).specs(Kind.TAGS)] == ["flex"]


def test_redis_time_is_the_default_clock(redis_client):
    budget = Budget(redis_client, Settings(plan="free", budget_margin_s=0))
    for _ in range(25):
        assert budget.acquire("acct", Kind.TAGS, 1) == 0
    assert 11 < budget.acquire("acct", Kind.TAGS, 1) <= 12


def test_concurrent_workers_never_spend_more_than_the_bucket(redis_client):
    clock = FakeClock(start=1.0)  # time stands still: only the burst can be spent
    granted = []

    def worker():
        budget = Budget(redis_client, Settings(plan="free", budget_margin_s=0), clock=clock)
        granted.extend(budget.acquire("acct", Kind.FILES, 10) == 0 for _ in range(50))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(granted) == 80  # 800 URLs of burst, 10 at a time, whoever asks


def test_the_margin_keeps_the_bucket_a_little_smaller_than_cloudflares(redis_client):
    clock = FakeClock(start=10.0)
    budget = Budget(redis_client, Settings(plan="free", budget_margin_s=0.1), clock=clock)
    [urls] = budget.specs(Kind.FILES)
    assert urls.burst == 800 - 80
    assert budget.acquire("acct", Kind.FILES, 720) == 0
    assert budget.acquire("acct", Kind.FILES, 100) == pytest.approx(0.125)
    tiny = Budget(redis_client, Settings(plan="free", url_burst=100, budget_margin_s=5), clock=clock)
    assert tiny.specs(Kind.FILES)[0].burst == 100  # never below one full request
