"""Per-key rate limits: one token bucket per caller (API key id, or client address without a key)."""

from __future__ import annotations

import time
from collections.abc import Callable

MAX_BUCKETS = 10_000


class RateLimiter:
    """`per_minute` requests a minute with bursts of up to `burst`. Runs on the event loop (no lock needed)."""

    def __init__(self, per_minute: float, burst: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = per_minute / 60.0
        self.burst = float(burst)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # caller -> (tokens, when)

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, caller: str) -> float:
        """0 when the request may go ahead (a token is spent), else the seconds until a token is free."""
        if not self.enabled:
            return 0.0
        now = self.clock()
        tokens, when = self._buckets.get(caller, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        if tokens >= 1.0:
            self._buckets[caller] = (tokens - 1.0, now)
            if len(self._buckets) > MAX_BUCKETS:
                self._forget_full(now)
            return 0.0
        self._buckets[caller] = (tokens, now)
        return (1.0 - tokens) / self.rate

    def _forget_full(self, now: float) -> None:
        """Drop callers whose bucket has refilled: they are indistinguishable from new ones."""
        for caller, (tokens, when) in list(self._buckets.items()):
            if tokens + (now - when) * self.rate >= self.burst:
                del self._buckets[caller]
