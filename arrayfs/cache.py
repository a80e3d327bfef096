"""A bounded, thread-safe LRU cache of decoded chunks, sized in bytes."""

from __future__ import annotations

from .storage.lru import BoundedLRU

__all__ = ["ChunkCache"]


class ChunkCache(BoundedLRU):
    """Least-recently-used map from a chunk key to its decoded ``(values, offsets)``.

    Args:
        max_bytes: bound on the sum of cached ``values`` and ``offsets``
            sizes (bytes); a chunk larger than the bound is never cached.
            0 disables caching.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        super().__init__(max_bytes)

    def put(self, key, values, offsets) -> None:
        super().put(key, (values, offsets), len(values) + offsets.nbytes)
