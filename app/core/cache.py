"""A least-recently-used cache of serialized responses, bounded by bytes and by entries."""

from __future__ import annotations

import threading
from collections import OrderedDict


class BytesLRU:
    """``str`` keys to ``bytes`` values; keys and values together stay under ``max_bytes``."""

    def __init__(self, max_bytes: int, max_entries: int) -> None:
        self.max_bytes, self.max_entries = max_bytes, max_entries
        self.size = 0
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def _cost(key: str, value: bytes) -> int:
        return len(key) + len(value)

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        """Keep ``value`` (evicting the least recently used) unless it alone exceeds the bound."""
        cost = self._cost(key, value)
        if cost > self.max_bytes or self.max_entries == 0:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= self._cost(key, old)
            self._items[key] = value
            self.size += cost
            while self.size > self.max_bytes or len(self._items) > self.max_entries:
                evicted_key, evicted = self._items.popitem(last=False)
                self.size -= self._cost(evicted_key, evicted)

    def __len__(self) -> int:
        return len(self._items)
