"""What the filesystem view needs from the dataset: one pinned snapshot.

The mount must answer ``lookup`` (exact size), ``readdir`` and ``read`` of
one name from *one* consistent set of shards, even while the watcher
installs a new snapshot with :meth:`ArrayRecordDataSource.refresh`; and
``ls -l`` of a huge directory needs record sizes in bulk, without a Python
call per record into the dataset.

:class:`PinnedSource` gives both. It is the only module of ``arrayfs.fs``
that touches the dataset's private state (``_snap``, ``_Shard.file``,
``ArrayRecordFile.index()`` and ``chunk_decoded_sizes``), so that when the
dataset grows a public ``snapshot()`` / ``record_sizes(start, stop)`` API,
this file is the one to change. Reads go through the dataset's own
``__getitem__`` (its chunk cache and error reporting) on a shallow copy of
the dataset whose snapshot is frozen.
"""

from __future__ import annotations

import threading
from typing import NamedTuple

import numpy as np

from ..dataset import ArrayRecordDataSource, ShardInfo

__all__ = ["PinnedSource", "ShardKey"]


class ShardKey(NamedTuple):
    """What makes two snapshots' shards the same shard: the file's identity
    (``st_dev``, ``st_ino``, size, mtime) and the slice of it used."""

    path: str
    start: int
    num_records: int
    identity: tuple


class _ShardSizes:
    """Exact record sizes (bytes) of one shard, decoded lazily per chunk.

    Single-record chunks (``group_size:1``, today's array_record default)
    need no decoding: the footer's ``decoded_data_size`` of the chunk is the
    record's size. Other chunks decode only their sizes block (no values),
    once, on first use.
    """

    __slots__ = ("_file", "_sizes", "_done", "_lock", "uniform_one", "_counts", "_first", "_chunk_bytes")

    def __init__(self, file):
        self._file = file
        _, counts, first = file.index()
        self._counts = counts
        self._first = first
        self._chunk_bytes = file.chunk_decoded_sizes
        self.uniform_one = bool(len(counts) == 0 or (counts == 1).all())
        self._sizes = self._chunk_bytes if self.uniform_one else None
        self._done = None
        self._lock = threading.Lock()

    def _fill(self, k0: int, k1: int) -> None:
        """Decode the sizes of chunks ``[k0, k1)`` not decoded yet."""
        if self._sizes is None:
            with self._lock:
                if self._sizes is None:
                    self._done = np.zeros(len(self._counts), dtype=bool)
                    self._sizes = np.zeros(int(self._first[-1]), dtype=np.int64)
        done, sizes, first = self._done, self._sizes, self._first
        for k in np.flatnonzero(~done[k0:k1]).tolist():
            k += k0
            # Idempotent: two threads filling the same chunk write the same values.
            sizes[first[k] : first[k + 1]] = self._file.chunk_record_sizes(k).astype(np.int64)
            done[k] = True

    def sizes(self, lo: int, hi: int) -> np.ndarray:
        """``int64`` sizes of file-local records ``[lo, hi)``."""
        if hi <= lo:
            return np.zeros(0, dtype=np.int64)
        if not self.uniform_one:
            f = self._file
            self._fill(f.chunk_of(lo), f.chunk_of(hi - 1) + 1)
        return self._sizes[lo:hi]

    def size(self, i: int) -> int:
        """Size in bytes of file-local record ``i``."""
        if self.uniform_one:
            return int(self._sizes[i])
        k = self._file.chunk_of(i)
        if self._done is None or not self._done[k]:
            self._fill(k, k + 1)
        return int(self._sizes[i])

    def total(self, lo: int, hi: int) -> int:
        """Sum of the sizes of file-local records ``[lo, hi)`` (bytes):
        whole chunks from the footer, partial chunks from their sizes."""
        if hi <= lo:
            return 0
        f = self._file
        k0, k1 = f.chunk_of(lo), f.chunk_of(hi - 1)
        first = self._first
        if k0 == k1:
            if lo == first[k0] and hi == first[k0 + 1]:
                return int(self._chunk_bytes[k0])
            return int(self.sizes(lo, hi).sum())
        total = int(self._chunk_bytes[k0 + 1 : k1].sum())
        total += int(self.sizes(lo, int(first[k0 + 1])).sum())
        total += int(self.sizes(int(first[k1]), hi).sum())
        return total


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
    mapped (so a shard deleted while being read stays readable); drop it
    to let them go. Never call ``close()`` on it: the files belong to the
    dataset.
    """

    def __init__(self, ds: ArrayRecordDataSource):
        # A shallow copy whose ``_snap`` attribute stays as it is now: the
        # dataset's methods all read ``self._snap`` once per call, so the
        # copy reads the pinned shards through the dataset's own code,
        # sharing its chunk cache and thread pool.
        pinned = object.__new__(type(ds))
        pinned.__dict__.update(ds.__dict__)
        self._ds = pinned
        snap = pinned._snap
        self._shards = snap.shards
        self.shards: tuple[ShardInfo, ...] = pinned.shards
        self.firsts = np.asarray(snap.firsts, dtype=np.int64)
        self.keys = tuple(
            ShardKey(s.spec.path, s.start, s.num_records, tuple(s.identity)) for s in self._shards
        )
        self._sizes: list[_ShardSizes | None] = [None] * len(self._shards)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self.firsts[-1])

    def read(self, index: int) -> bytes:
        """Record at global ``index`` (``bytes``). Raises ``IndexError``
        outside ``[0, len)``, :class:`arrayfs.ArrayRecordError` for a corrupt
        record (naming shard, chunk offset and record range)."""
        return self._ds[index]

    def file_num_records(self, k: int) -> int:
        """Records in shard ``k``'s file (the whole file, not the slice used)."""
        return int(self._shards[k].file.num_records)

    def locate_chunk(self, k: int, local: int) -> tuple[int, int]:
        """``(chunk index, chunk byte offset)`` of file-local record
        ``local`` of shard ``k`` (for error messages)."""
        f = self._shards[k].file
        c = f.chunk_of(local)
        return c, int(f.index()[0][c])

    def _shard_sizes(self, k: int) -> _ShardSizes:
        s = self._sizes[k]
        if s is None:
            with self._lock:
                s = self._sizes[k]
                if s is None:
                    s = self._sizes[k] = _ShardSizes(self._shards[k].file)
        return s

    def record_size(self, k: int, local: int) -> int:
        """Exact size in bytes of file-local record ``local`` of shard ``k``.
        Raises :class:`arrayfs.ArrayRecordError` when the footer or the
        chunk's sizes are corrupt."""
        return self._shard_sizes(k).size(local)

    def record_sizes(self, k: int, lo: int, hi: int) -> np.ndarray:
        """``int64`` sizes (bytes) of file-local records ``[lo, hi)`` of
        shard ``k``, decoding only chunk footers and size blocks."""
        return self._shard_sizes(k).sizes(lo, hi)

    def shard_bytes(self, k: int) -> int:
        """Exact sum of the sizes of the records of shard ``k`` used by the
        dataset (its slice), in bytes."""
        info = self.shards[k]
        return self._shard_sizes(k).total(info.start, info.start + info.num_records)
