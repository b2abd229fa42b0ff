"""The sandbox's rate-limit bookkeeping, driven by a fake clock (no sleeping)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zonepurge.plans import PLAN_LIMITS, Plan
from zonepurge.sandbox.buckets import BlockingWindow, TokenBucket, retry_after_header


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_starts_full_and_takes_all_or_nothing() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=2, capacity=10, clock=clock)
    assert bucket.available == 10
    assert bucket.try_take(7) == 0
    assert bucket.available == pytest.approx(3)
    # 5 wanted, 3 there: 2 missing at 2 per second = 1 s, and nothing is taken.
    assert bucket.try_take(5) == pytest.approx(1.0)
    assert bucket.available == pytest.approx(3)


def test_refill_is_linear_and_capped() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=4, capacity=10, clock=clock)
    assert bucket.try_take(10) == 0
    clock.advance(0.5)
    assert bucket.available == pytest.approx(2)
    clock.advance(100)
    assert bucket.available == 10


def test_refused_requests_do_not_delay_the_promised_time() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=1, capacity=5, clock=clock)
    assert bucket.try_take(5) == 0
    wait = bucket.try_take(3)
    assert wait == pytest.approx(3)
    # Hammering while waiting changes nothing: refusals take no tokens.
    for _ in range(10):
        clock.advance(0.2)
        assert bucket.try_take(3) > 0
    clock.advance(1.0)  # 3 s in total
    assert bucket.try_take(3) == 0


def test_free_plan_flex_bucket_retry_after_is_twelve_seconds() -> None:
    limits = PLAN_LIMITS[Plan.FREE]
    clock = FakeClock()
    bucket = TokenBucket(limits.flex_rate_per_s, limits.flex_burst, clock)
    for _ in range(limits.flex_burst):
        assert bucket.try_take(1) == 0
    wait = bucket.try_take(1)
    assert retry_after_header(wait) == 12  # 5 per minute
    clock.advance(11.9)
    assert retry_after_header(bucket.try_take(1)) == 1
    clock.advance(0.1)
    assert bucket.try_take(1) == 0


def test_cost_above_capacity_waits_for_a_full_bucket() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=10, capacity=100, clock=clock)
    assert bucket.try_take(50) == 0
    assert bucket.try_take(500) == pytest.approx(5.0)
    clock.advance(5)
    assert bucket.try_take(500) == 0
    assert bucket.available == 0


def test_clock_stepping_back_does_not_drain() -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate_per_s=1, capacity=5, clock=clock)
    bucket.try_take(2)
    clock.advance(-10)
    assert bucket.available == pytest.approx(3)


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        TokenBucket(0, 10, FakeClock())
    with pytest.raises(ValueError):
        BlockingWindow(0, 300, FakeClock())


@pytest.mark.parametrize(
    ("wait", "header"),
    [(0, 0), (-1, 0), (1e-6, 1), (0.5, 1), (1.0, 1), (1.0000000001, 1), (1.2, 2), (299.5, 300)],
)
def test_retry_after_header_rounds_up(wait: float, header: int) -> None:
    assert retry_after_header(wait) == header


@settings(derandomize=True, max_examples=200)
@given(
    rate=st.floats(min_value=0.01, max_value=5000),
    capacity=st.integers(min_value=1, max_value=5000),
    first=st.integers(min_value=0, max_value=5000),
    second=st.integers(min_value=1, max_value=5000),
)
def test_waiting_retry_after_is_always_enough(
    rate: float, capacity: int, first: int, second: int
) -> None:
    clock = FakeClock()
    bucket = TokenBucket(rate, capacity, clock)
    bucket.try_take(min(first, capacity))
    wait = bucket.try_take(second)
    if wait > 0:
        clock.advance(retry_after_header(wait))
        assert bucket.try_take(second) == 0


def test_blocking_window_blocks_for_a_whole_window() -> None:
    clock = FakeClock()
    window = BlockingWindow(requests=3, window_s=300, clock=clock)
    assert [window.hit() for _ in range(3)] == [0, 0, 0]
    assert window.hit() == 300
    clock.advance(100)
    assert window.hit() == pytest.approx(200)
    clock.advance(199.5)
    assert window.hit() == pytest.approx(0.5)
    clock.advance(0.5)
    # The block is over: a fresh window.
    assert [window.hit() for _ in range(3)] == [0, 0, 0]
    assert window.hit() == 300


def test_blocking_window_rolls_over_without_blocking() -> None:
    clock = FakeClock()
    window = BlockingWindow(requests=2, window_s=10, clock=clock)
    assert window.hit() == 0
    clock.advance(9)
    assert window.hit() == 0
    clock.advance(1)  # a new window starts at t=10
    assert window.hit() == 0
    assert window.hit() == 0
    assert window.hit() == 10
