"""Token-bucket rate limits, one bucket per key (or page session), in the server's memory.

A bucket holds up to ``rate_per_min`` tokens (the allowed burst) and refills continuously at
``rate_per_min / 60`` tokens a second; each request takes one. Limits reset when the server
restarts, which is acceptable for a single-process server on the user's machine.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Decision:
    allowed: bool
    retry_after_s: float  # 0 when allowed
    remaining: int
    limit_per_min: float


class RateLimiter:
    def __init__(self, clock=time.monotonic, max_buckets: int = 100_000):
        self._clock = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill time)
        self._max_buckets = max_buckets

    def check(self, key: str, rate_per_min: float, cost: float = 1.0) -> Decision:
        if rate_per_min <= 0:
            return Decision(False, 60.0, 0, rate_per_min)
        capacity = float(rate_per_min)
        per_second = capacity / 60.0
        with self._lock:
            now = self._clock()
            tokens, last = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - last) * per_second)
            if tokens >= cost:
                tokens -= cost
                decision = Decision(True, 0.0, int(tokens), rate_per_min)
            else:
                decision = Decision(False, (cost - tokens) / per_second, 0, rate_per_min)
            if len(self._buckets) >= self._max_buckets and key not in self._buckets:
                self._evict_full(now)
            self._buckets[key] = (tokens, now)
        return decision

    def _evict_full(self, now: float) -> None:
        # Buckets idle long enough to be full again carry no state worth keeping.
        for k, (tokens, last) in list(self._buckets.items()):
            if now - last > 120:
                del self._buckets[k]
        if len(self._buckets) >= self._max_buckets:
            self._buckets.clear()
