"""Per-client limits on password guesses (logins and e-signatures): a token bucket per client
address, in the API process. The lock-out stops guessing one name; this stops one client
guessing many names (about 10 a second before)."""

from __future__ import annotations

import threading
from collections import OrderedDict

from coldtrail.clock import Clock

MAX_CLIENTS = 10_000
"""Buckets kept at most; the least recently used go first (a full one refills anyway)."""


class Throttle:
    def __init__(self, clock: Clock, *, per_minute: float, burst: int) -> None:
        self._clock = clock
        self._rate_s = per_minute / 60.0
        self._burst = float(burst)
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, client: str) -> float:
        """Take one attempt for ``client``: 0 if it may go on, else the seconds until it may."""
        now = self._clock.now().timestamp()
        with self._lock:
            tokens, at = self._buckets.pop(client, (self._burst, now))
            tokens = min(self._burst, tokens + (now - at) * self._rate_s)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                return (1.0 - tokens) / self._rate_s
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
            return 0.0
