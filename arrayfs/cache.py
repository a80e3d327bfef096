"""A bounded, thread-safe LRU cache of decoded chunks, sized in bytes."""

from __future__ import annotations

from .riegeli.records import decoded_nbytes
from .storage.lru import BoundedLRU

__all__ = ["ChunkCache"]


class ChunkCache(BoundedLRU):
    """Least-recently-used map of a dataset's decoded chunks and record sizes.

    Keys begin with the shard's serial number (so that a shard's entries
    can be dropped together): ``(serial, k)`` holds chunk ``k``'s decoded
    ``(values, offsets)`` (:meth:`put_chunk`), ``(serial, k, "sizes")`` its
    record sizes (an array, put with :meth:`BoundedLRU.put`).

    Args:
        max_bytes: bound on the sum of cached ``values`` and ``offsets``
            sizes (bytes); a chunk larger than the bound is never cached.
            0 disables caching.
    """

    def __init__(self, max_bytes: int = 64 << 20):
        super().__init__(max_bytes)

    def put_chunk(self, key, values, offsets) -> None:
        """Keep a decoded chunk: ``values`` (bytes) and ``offsets`` (an
        array), counted as the bytes they hold
        (:func:`~arrayfs.riegeli.records.decoded_nbytes`)."""
        self.put(key, (values, offsets), decoded_nbytes(values, offsets))

    def forget_shards(self, serials) -> None:
        """Drop every entry of the shards whose serial numbers are in ``serials``."""
        self.discard(lambda key: key[0] in serials)
