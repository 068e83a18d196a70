"""The lock for an API exposed beyond localhost: API keys and per-client rate limiting.

``APILock`` holds the configuration and the token buckets; ``app.api.deps.guard`` applies it
as a dependency of the ``/v1`` routers, so it follows routing (a ``--root-path`` cannot route
around it) and the key is declared in the OpenAPI schema. Both are off by default (local use)
and on in docker-compose.yml.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

API_KEY_HEADER = "X-API-Key"


class TokenBuckets:
    """One token bucket per client: ``burst`` requests at once, refilled at ``rate`` per second.

    Only the ``max_clients`` most recently seen clients are tracked; a forgotten client starts
    again with a full bucket, which bounds memory whatever the number of clients.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        max_clients: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be > 0 and burst >= 1")
        self.rate, self.burst, self.max_clients, self.clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def take(self, client: str) -> float:
        """Spend one token of ``client``: 0.0 when allowed, else the seconds until one is back."""
        now = self.clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        wait = 0.0
        if tokens >= 1.0:
            tokens -= 1.0
        else:
            wait = (1.0 - tokens) / self.rate
        self._buckets[client] = (tokens, now)
        if len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return wait


def key_owner(key: str) -> str:
    """What the job store keeps of a key: its SHA-256 in hex, never the key itself."""
    return hashlib.sha256(key.encode()).hexdigest()


@dataclass(frozen=True)
class Caller:
    """Who is calling: ``owner`` tags the jobs they create; ``admin`` sees every job."""

    owner: str | None
    admin: bool


class APILock:
    """API keys (users and admins) and the per-client token buckets.

    No keys configured: every caller is an anonymous admin (a local, single-user service).
    """

    def __init__(
        self,
        api_keys: Iterable[str] = (),
        admin_keys: Iterable[str] = (),
        rate_per_s: float = 0.0,
        burst: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._admins = [key_owner(k) for k in admin_keys]
        self._keys = [key_owner(k) for k in api_keys] + self._admins
        self.buckets = TokenBuckets(rate_per_s, burst, clock=clock) if rate_per_s > 0 else None

    @property
    def keys_required(self) -> bool:
        return bool(self._keys)

    def caller(self, key: str | None) -> Caller | None:
        """The caller holding ``key``; None when keys are required and it is not one (constant-time)."""
        if not self._keys:
            return Caller(owner=None, admin=True)
        if key is None:
            return None
        owner = key_owner(key)
        if not any([hmac.compare_digest(owner, known) for known in self._keys]):
            return None
        return Caller(owner=owner, admin=any([hmac.compare_digest(owner, a) for a in self._admins]))
