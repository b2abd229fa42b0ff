from zonepurge.backoff import full_jitter


def test_full_jitter_grows_exponentially_up_to_the_cap():
    top = lambda: 1.0  # noqa: E731 - the largest draw
    assert [full_jitter(n, 1, 60, top) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 60, 60]
    assert full_jitter(3, 1, 60, lambda: 0.5) == 2
    assert full_jitter(5, 1, 60, lambda: 0.0) == 0
