"""A thread-safe least-recently-used map bounded by the bytes of its values.

The one LRU of arrayfs: remote blocks (:mod:`.remote`), decoded chunks
(:mod:`arrayfs.cache`) and the mount's decoded big records
(:mod:`arrayfs.fs.records`) are kept in it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

__all__ = ["BoundedLRU"]


class BoundedLRU:
    """Least-recently-used map whose values' sizes add up to at most
    ``max_bytes`` (bytes); a value larger than the bound is never kept, and
    0 keeps nothing, unless ``keep_newest``: then the newest entry stays
    whatever its size (a 200 MiB record read in 128 KiB requests must not
    be decoded once per request)."""

    def __init__(self, max_bytes: int, *, keep_newest: bool = False):
        self.max_bytes = int(max_bytes)
        self.keep_newest = keep_newest
        self._items: OrderedDict = OrderedDict()  # key -> (value, nbytes)
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key):
        """The value or ``None``; a hit makes the entry most recent."""
        with self._lock:
            item = self._items.get(key)
            if item is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return item[0]

    def put(self, key, value, nbytes: int) -> None:
        """Keep ``value`` (``nbytes`` bytes) under ``key``, evicting the
        least recently used entries past the bound."""
        if nbytes > self.max_bytes and not self.keep_newest:
            return
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[1]
            self._items[key] = (value, nbytes)
            self._bytes += nbytes
            while self._bytes > self.max_bytes and len(self._items) > self.keep_newest:
                _, (_, n) = self._items.popitem(last=False)
                self._bytes -= n

    def pop(self, key) -> None:
        """Drop the entry of ``key``, if any."""
        with self._lock:
            item = self._items.pop(key, None)
            if item is not None:
                self._bytes -= item[1]

    def discard(self, predicate) -> None:
        """Drop every entry whose key satisfies ``predicate``."""
        with self._lock:
            for key in [k for k in self._items if predicate(k)]:
                self._bytes -= self._items.pop(key)[1]

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0

    @property
    def nbytes(self) -> int:
        return self._bytes

    def __len__(self) -> int:
        return len(self._items)
