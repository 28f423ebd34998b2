"""Per-key rate and in-flight limits, and the budget of key lookups: 429 with ``Retry-After``.

Each API key has a token bucket (``rate_limit_per_second`` sustained, ``rate_limit_burst`` at once)
and at most ``max_in_flight_per_key`` requests being served at a time (a stream counts until it
ends). Keys that are not yet verified share one bucket of ``auth_lookups_per_second`` database
lookups. The numbers are per API process (``distillery serve --workers N`` allows N times as much)
and generous by default: they stop one client from taking the service, not ordinary traffic. Set a
rate to 0 to turn that limit off.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from app.config import Settings
from app.errors import TooManyRequests


class TokenBucket:
    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, max(burst, 1.0)
        self.tokens, self.stamp = self.burst, time.monotonic()

    def take(self) -> float:
        """0 when a token was taken, else the seconds until one is there."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return 0.0
        return (1 - self.tokens) / self.rate


def _too_many(detail: str, code: str, retry_after: float, **limit: object) -> TooManyRequests:
    seconds = max(1, math.ceil(retry_after))
    return TooManyRequests(detail, code=code, headers={"Retry-After": str(seconds)}, limit=limit,
                           retry_after=seconds)


class Limiter:
    MAX_KEYS = 100_000  # buckets of keys idle long enough to be full again are dropped beyond this

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._buckets: dict[str, TokenBucket] = {}
        self._in_flight: dict[str, int] = {}
        self._lookups = TokenBucket(settings.auth_lookups_per_second, 2 * settings.auth_lookups_per_second)
        self._lock = threading.Lock()

    def admit(self, key_id: str) -> Callable[[], None]:
        """Count one request of ``key_id`` (429 when over a limit); call the result when it is done."""
        s = self.settings
        with self._lock:
            if s.rate_limit_per_second > 0:
                bucket = self._buckets.get(key_id)
                if bucket is None:
                    if len(self._buckets) >= self.MAX_KEYS:
                        self._buckets.clear()
                    bucket = self._buckets[key_id] = TokenBucket(s.rate_limit_per_second, s.rate_limit_burst)
                wait = bucket.take()
                if wait > 0:
                    raise _too_many(f"This API key sends more than {s.rate_limit_per_second:g} requests a second "
                                    f"(bursts of {s.rate_limit_burst}); retry later.", "rate_limited", wait,
                                    name="requests_per_second", max=s.rate_limit_per_second)
            busy = self._in_flight.get(key_id, 0)
            if s.max_in_flight_per_key > 0 and busy >= s.max_in_flight_per_key:
                raise _too_many(f"This API key has {busy} requests in flight; the limit is "
                                f"{s.max_in_flight_per_key}.", "too_many_in_flight", 1,
                                name="in_flight", max=s.max_in_flight_per_key)
            self._in_flight[key_id] = busy + 1
        done = False

        def release() -> None:
            nonlocal done
            if done:
                return
            done = True
            with self._lock:
                left = self._in_flight.get(key_id, 1) - 1
                if left > 0:
                    self._in_flight[key_id] = left
                else:
                    self._in_flight.pop(key_id, None)

        return release

    def admit_lookup(self) -> None:
        """One database lookup of a key not verified yet (429 when the process's budget is spent)."""
        if self.settings.auth_lookups_per_second <= 0:
            return
        with self._lock:
            wait = self._lookups.take()
        if wait > 0:
            raise _too_many("Too many unknown API keys are being checked; retry later.", "auth_lookups_exhausted",
                            wait, name="key_lookups_per_second", max=self.settings.auth_lookups_per_second)
