"""What the filesystem view needs from the dataset: one pinned snapshot.

The mount must answer ``lookup`` (exact size), ``readdir`` and ``read`` of
one name from *one* consistent set of shards, even while the watcher
installs a new snapshot with :meth:`ArrayRecordDataSource.refresh`; and
``ls -l`` of a huge directory needs record sizes in bulk, without a Python
call per record into the dataset.

:class:`PinnedSource` is a thin adapter over the dataset's public
:class:`arrayfs.dataset.DatasetSnapshot` (``ds.snapshot()``), in the terms
the view uses (shard keys for inode numbers, file-local record sizes).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ..dataset import ArrayRecordDataSource, ShardInfo

__all__ = ["PinnedSource", "ShardKey"]


class ShardKey(NamedTuple):
    """What makes two snapshots' shards the same shard: the file's identity
    (``st_dev``, ``st_ino``, size, mtime; size and ETag for an object) and
    the slice of it used."""

    path: str
    start: int
    num_records: int
    identity: tuple


class PinnedSource:
    """One immutable snapshot of an :class:`ArrayRecordDataSource`.

    Args:
        ds: the dataset. Its *current* snapshot is pinned; later
            ``ds.refresh()`` calls do not change what this object reads.

    Attributes:
        shards: ``tuple`` of :class:`ShardInfo`, in global order.
        firsts: ``int64`` array, shape ``(len(shards) + 1,)``: global index
            of each shard's first record, then the total.
        keys: ``tuple`` of :class:`ShardKey`, one per shard.

    Reading is thread-safe. Holding this object keeps the pinned shards
    readable (a shard deleted while being read stays readable while its
    descriptor is open). Closing the dataset ends it: reads then raise
    ``ValueError``.
    """

    def __init__(self, ds: ArrayRecordDataSource):
        snap = ds.snapshot()
        self._snap = snap
        self.shards: tuple[ShardInfo, ...] = snap.shards
        self.firsts = snap.firsts
        self.keys = tuple(ShardKey(s.path, s.start, s.num_records, ident)
                          for s, ident in zip(snap.shards, snap.identities))

    def __len__(self) -> int:
        return len(self._snap)

    def read(self, index: int) -> bytes:
        """Record at global ``index`` (``bytes``). Raises ``IndexError``
        outside ``[0, len)``, :class:`arrayfs.ArrayRecordError` for a corrupt
        record (naming shard, chunk offset and record range)."""
        return self._snap[index]

    def file_num_records(self, k: int) -> int:
        """Records in shard ``k``'s file (the whole file, not the slice used)."""
        return int(self._snap.file(k).num_records)

    def locate_chunk(self, k: int, local: int) -> tuple[int, int]:
        """``(chunk index, chunk byte offset)`` of file-local record
        ``local`` of shard ``k`` (for error messages)."""
        return self._snap.chunk_location(k, local)

    def record_size(self, k: int, local: int) -> int:
        """Exact size in bytes of file-local record ``local`` of shard ``k``.
        Raises :class:`arrayfs.ArrayRecordError` when the footer or the
        chunk's sizes are corrupt."""
        return int(self._snap.record_sizes(k, local, local + 1)[0])

    def record_sizes(self, k: int, lo: int, hi: int) -> np.ndarray:
        """``int64`` sizes (bytes) of file-local records ``[lo, hi)`` of
        shard ``k``, decoding only chunk footers and size blocks."""
        return self._snap.record_sizes(k, lo, hi)

    def shard_bytes(self, k: int) -> int:
        """Exact sum of the sizes of the records of shard ``k`` used by the
        dataset (its slice), in bytes."""
        return self._snap.shard_record_bytes(k)
