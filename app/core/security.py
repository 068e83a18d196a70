"""The lock for an API exposed beyond localhost: API keys and per-client rate limiting.

Both guard the versioned API (``/v1``) only: health probes, docs and static files stay open.
Both are off by default (local use) and on in docker-compose.yml. A pure ASGI middleware that
answers before the body is read, so a rejected client costs almost nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from app.core.errors import send_error

API_KEY_HEADER = "x-api-key"
PROTECTED_PREFIX = "/v1"


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


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class APILockMiddleware:
    """Rate-limits, then checks the API key of, every request under ``/v1``.

    A client is its key when the key is valid, else its address, so a client guessing keys is
    limited by address. 429 carries ``Retry-After``; 401 names the header to send.
    """

    def __init__(
        self,
        app: ASGIApp,
        api_keys: Iterable[str] = (),
        rate_per_s: float = 0.0,
        burst: int = 30,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._keys = [_digest(k) for k in api_keys]
        self._buckets = TokenBuckets(rate_per_s, burst, clock=clock) if rate_per_s > 0 else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        guarded = path == PROTECTED_PREFIX or path.startswith(PROTECTED_PREFIX + "/")
        if scope["type"] != "http" or not guarded or (not self._keys and self._buckets is None):
            await self.app(scope, receive, send)
            return
        key = self._valid_key(scope)
        if self._buckets is not None:
            client = f"key:{key.hex()}" if key else f"addr:{(scope.get('client') or ('?',))[0]}"
            wait = self._buckets.take(client)
            if wait > 0:
                retry_after = max(1, math.ceil(wait))
                msg = f"too many requests; retry in {retry_after} s"
                retry = [(b"retry-after", str(retry_after).encode())]
                await send_error(send, 429, "rate_limited", ["request"], msg, headers=retry)
                return
        if self._keys and key is None:
            msg = f"a valid API key is required in the {API_KEY_HEADER!r} header"
            challenge = [(b"www-authenticate", b'ApiKey header="X-API-Key"')]
            await send_error(send, 401, "api_key_invalid", ["header", API_KEY_HEADER], msg, headers=challenge)
            return
        await self.app(scope, receive, send)

    def _valid_key(self, scope: Scope) -> bytes | None:
        """The digest of the request's key if it is one of ours (constant-time), else None."""
        given = next((v for k, v in scope["headers"] if k == API_KEY_HEADER.encode()), None)
        if given is None:
            return None
        digest = hashlib.sha256(given).digest()
        matches = [hmac.compare_digest(digest, known) for known in self._keys]
        return digest if any(matches) else None
