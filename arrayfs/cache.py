"""A bounded, thread-safe LRU cache of decoded chunks, sized in bytes."""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["ChunkCache"]


class ChunkCache:
    """Least-recently-used map from a chunk key to its decoded ``(values, offsets)``.

    Args:
        max_bytes: bound on the sum of cached ``values`` sizes (bytes); a
            chunk larger than the bound is never cached. 0 disables caching.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        self.max_bytes = int(max_bytes)
        self._items: OrderedDict = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        """The cached value or ``None``; a hit makes the entry most recent."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item

    def put(self, key, values, offsets) -> None:
        size = len(values) + offsets.nbytes
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= len(old[0]) + old[1].nbytes
            self._items[key] = (values, offsets)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (v, o) = self._items.popitem(last=False)
                self._bytes -= len(v) + o.nbytes

    def discard(self, predicate) -> None:
        """Drop every entry whose key satisfies ``predicate`` (a vanished shard)."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                v, o = self._items.pop(key)
                self._bytes -= len(v) + o.nbytes

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
