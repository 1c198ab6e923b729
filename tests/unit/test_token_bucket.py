"""The per-caller rate limiter's token-bucket arithmetic."""

from __future__ import annotations

import pytest

from rescind_common.ratelimit import TokenBucketLimiter

from support.clock import Clock


def test_token_bucket_arithmetic() -> None:
    clock = Clock()
    bucket = TokenBucketLimiter(rate=2, burst=3, max_keys=2, clock=clock)
    assert [bucket.take("a") for _ in range(3)] == [0, 0, 0]
    assert bucket.take("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert bucket.take("a") == 0
    assert bucket.take("b") == 0 and bucket.take("c") == 0  # "a" is the least recently used: forgotten
    assert [bucket.take("a") for _ in range(3)] == [0, 0, 0]
    with pytest.raises(ValueError):
        TokenBucketLimiter(rate=0, burst=1)
