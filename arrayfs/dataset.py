"""``ArrayRecordDataSource``: one concatenated, thread-safe view over many shards.

Global index ``i`` runs over the records of every shard in order (shard 0's
records, then shard 1's, ...). What is read is an immutable
:class:`DatasetSnapshot`: every read takes the current snapshot once and
finishes on it, so :meth:`ArrayRecordDataSource.refresh` can install a new
one (shards added or removed) while reads are in flight, and the FUSE view
or the CLI can pin one with :meth:`ArrayRecordDataSource.snapshot`.

Shards may be local files or fsspec URLs. A dataset holds any number of
shards open while only a bounded number of file descriptors are (see
:mod:`arrayfs.storage.handles`); each shard keeps its compact chunk index.

Drop-in for array_record's ``python/array_record_data_source.py`` (what
Grain users pass to ``grain.MapDataset.source``): ``len``, ``__getitem__``,
batched ``__getitems__``, a short ``repr`` identifying the data, picklable
for worker processes.
"""

from __future__ import annotations

import bisect
import collections
import hashlib
import itertools
import logging
import operator
import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import numpy as np

from .batch import helper_pool, place
from .cache import ChunkCache
from .errors import ArrayRecordError, FileChangedError, PendingShardWarning
from .file import ArrayRecordFile
from .paths import ShardSpec, expand_entries
from .riegeli.simple import check_frame_hashes, decode_zstd_frames, locate_zstd_frames
from .storage import StorageError, is_remote
from .storage import stat as stat_path

__all__ = ["ArrayRecordDataSource", "DatasetSnapshot", "ShardInfo", "RefreshResult", "RecordKeyError"]

log = logging.getLogger("arrayfs.dataset")


class RecordKeyError(IndexError, ValueError):
    """A record index outside ``[0, len)`` of a data source.

    Also a ``ValueError``: Google's ``ArrayRecordDataSource`` raises that
    ("Record key should be in [0, num_records)"), so code written for
    either keeps working."""
_serial = itertools.count()
# Below this many records a batch is read on the calling thread: handing
# work to the pool costs more than it saves.
_PARALLEL_MIN = 64
# Fewest records of one shard in a batch read in place from its map; fewer
# are copied out and gathered with the other shards' (locating frames with
# numpy costs a fixed ~0.1-0.2 ms a call, a copy ~1 us a record).
_FRAMES_MIN = 128
# Object stores: shards opened at once.
_REMOTE_OPENERS = 16
_LIVE: "weakref.WeakSet" = weakref.WeakSet()


def _reset_after_fork() -> None:
    for ds in list(_LIVE):
        ds._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


class ShardInfo(NamedTuple):
    """One shard as the dataset sees it.

    ``num_records`` counts the records used (after a ``path[start:stop]``
    read instruction); ``first_index`` is the global index of the first of
    them; ``start`` is the local index in the file it corresponds to.
    ``size_bytes`` and ``mtime_ns`` describe the file when it was opened.
    """

    path: str
    num_records: int
    first_index: int
    start: int
    size_bytes: int
    mtime_ns: int
    writer_options: str


class RefreshResult(NamedTuple):
    """What :meth:`ArrayRecordDataSource.refresh` changed (paths, as ``str``)."""

    added: tuple
    removed: tuple
    pending: tuple  # (path, reason) of files not (yet) valid ArrayRecord

    @property
    def changed(self) -> bool:
        return bool(self.added or self.removed)


class _Shard:
    """An opened shard: its file (opened lazily after unpickling) and its slice."""

    __slots__ = ("spec", "start", "num_records", "identity", "serial", "verify", "storage_options", "_file",
                 "_lock", "writer_options", "size_bytes", "mtime_ns", "_closed")

    def __init__(self, spec: ShardSpec, verify: bool, storage_options=None, file: ArrayRecordFile | None = None,
                 state=None):
        self.spec = spec
        self.verify = verify
        self.storage_options = storage_options
        self.serial = next(_serial)
        self._lock = threading.Lock()
        self._file = file
        self._closed = False
        if state is not None:  # rebuilt in another process; open on first read
            self.start, self.num_records, self.identity, self.writer_options, self.size_bytes, self.mtime_ns = state
            return
        n = file.num_records
        start, stop = _bounds(spec, n)
        self.start = start
        self.num_records = max(stop - start, 0)
        self.identity = file.identity
        self.writer_options = file.writer_options
        self.size_bytes = file.size
        self.mtime_ns = file.mtime_ns

    @property
    def file(self) -> ArrayRecordFile:
        f = self._file
        if f is None:
            with self._lock:
                if self._closed:
                    raise ValueError(f"{self.spec.path}: read from a closed ArrayRecordDataSource")
                if self._file is None:
                    f = ArrayRecordFile(self.spec.path, verify=self.verify, storage_options=self.storage_options)
                    if tuple(f.identity) != tuple(self.identity):
                        f.close()
                        raise FileChangedError(
                            "shard changed since the dataset was opened (replaced, rewritten or resized)",
                            path=self.spec.path,
                        )
                    self._file = f
                f = self._file
        return f

    def state(self):
        return (self.start, self.num_records, self.identity, self.writer_options, self.size_bytes, self.mtime_ns)

    def release(self) -> None:
        """Close the file; the next read opens it again (if unchanged)."""
        with self._lock:
            f, self._file = self._file, None
        if f is not None:
            f.close()

    def after_fork(self) -> None:
        """Fresh locks in a forked child (here and in the open file): a
        lock held by another thread at fork time would stay held there."""
        self._lock = threading.Lock()
        f = self._file
        if f is not None:
            f.after_fork()

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Close the file for good: later reads raise ``ValueError``."""
        with self._lock:
            self._closed = True
            f, self._file = self._file, None
        if f is not None:
            f.close()


def _bounds(spec: ShardSpec, n: int) -> tuple[int, int]:
    """``(start, stop)`` of ``spec``'s records in a file of ``n`` records:
    negatives count from the end, ``None`` is the file's bound.

    Raises:
        ValueError: a bound past either end of the file (a read instruction,
            or a TFDS split whose ``shardLengths`` disagree with the file,
            would otherwise lose records without a word), naming the file.
    """
    bounds = []
    for b, default in ((spec.start, 0), (spec.stop, n)):
        b = default if b is None else (b + n if b < 0 else b)
        if not 0 <= b <= n:
            raise ValueError(f"{spec.path}: records [{spec.start}, {spec.stop}) asked of a file of {n} records")
        bounds.append(b)
    start, stop = bounds
    return start, max(start, stop)


def _open_shard(spec: ShardSpec, entry, verify: bool, storage_options) -> _Shard:
    f = ArrayRecordFile(spec.path, verify=verify, storage_options=storage_options, entry=entry)
    try:
        return _Shard(spec, verify, storage_options, f)
    except BaseException:
        f.close()
        raise


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


class _Core:
    """What a dataset and all its snapshots share: the chunk cache, the
    thread pool, the options, and whether the dataset is closed."""

    def __init__(self, verify: bool, cache_bytes: int, max_workers: int):
        self.verify = verify
        self.cache = ChunkCache(cache_bytes)
        self.max_workers = max_workers
        self.pool = None
        self.pool_pid = os.getpid()
        self.pool_lock = threading.Lock()
        self.closed = False

    def get_pool(self) -> ThreadPoolExecutor:
        pool = self.pool
        if pool is None or self.pool_pid != os.getpid():
            with self.pool_lock:
                if self.pool is None or self.pool_pid != os.getpid():
                    # A forked child (PyTorch's DataLoader workers) inherits
                    # the pool object but not its threads: make its own.
                    self.pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="arrayfs-read")
                    self.pool_pid = os.getpid()
                pool = self.pool
        return pool


class DatasetSnapshot:
    """An immutable view of a dataset's shards at one moment.

    Obtained from :meth:`ArrayRecordDataSource.snapshot`; every read method
    of the dataset is a read of its current snapshot. Later refreshes do not
    change a snapshot; closing the dataset ends it (reads then raise
    ``ValueError``). Thread-safe.

    Attributes:
        shards: ``tuple`` of :class:`ShardInfo`, in global order.
        firsts: ``int64`` array of shape ``(len(shards) + 1,)``: the global
            index of each shard's first record, then the total.
        identities: ``tuple`` of each shard's file identity (local:
            device, inode, size, mtime; object: size and ETag or
            generation): what tells a shard from a replacement.
    """

    def __init__(self, core: _Core, shards):
        self._core = core
        self._shards = tuple(shards)
        firsts = [0]
        for s in self._shards:
            firsts.append(firsts[-1] + s.num_records)
        self._firsts = firsts
        self.firsts = np.asarray(firsts, dtype=np.int64)
        self.firsts.flags.writeable = False
        self.shards = tuple(
            ShardInfo(s.spec.path, s.num_records, first, s.start, s.size_bytes, s.mtime_ns, s.writer_options)
            for s, first in zip(self._shards, firsts)
        )
        self.identities = tuple(tuple(s.identity) for s in self._shards)
        self._starts = np.array([s.start for s in self._shards], dtype=np.int64)

    # -- sizes and places --------------------------------------------------------

    def __len__(self) -> int:
        return self._firsts[-1]

    def _check_open(self) -> None:
        if self._core.closed:
            raise ValueError("read from a closed ArrayRecordDataSource (or a snapshot of one)")

    def _resolve(self, index) -> tuple[int, _Shard, int]:
        """``(position in shards, shard, index in its file)`` of global
        ``index``; raises like ``__getitem__``."""
        if self._core.closed:
            self._check_open()
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"record index must be an integer, got {type(index).__name__}") from None
        total = self._firsts[-1]
        if not 0 <= i < total:
            raise RecordKeyError(f"record index {i} out of range [0, {total})")
        k = bisect.bisect_right(self._firsts, i) - 1
        shard = self._shards[k]
        return k, shard, i - self._firsts[k] + shard.start

    def locate(self, index) -> tuple[str, int]:
        """``(shard path, local index in that file)`` of global ``index``."""
        _, shard, local = self._resolve(index)
        return shard.spec.path, local

    def shard_of(self, index: int) -> int:
        """Position in :attr:`shards` of the shard holding global ``index``."""
        return self._resolve(index)[0]

    def file(self, k: int) -> ArrayRecordFile:
        """The :class:`arrayfs.file.ArrayRecordFile` of shard ``k`` (owned
        by the dataset: do not close it)."""
        self._check_open()
        return self._shards[k].file

    def chunk_location(self, k: int, local: int) -> tuple[int, int]:
        """``(chunk index, chunk byte offset)`` of file-local record
        ``local`` of shard ``k``, for messages."""
        f = self.file(k)
        c = f.chunk_of(local)
        return c, f.chunk_span(c)[0]

    # -- record sizes --------------------------------------------------------------

    def _chunk_sizes(self, shard: _Shard, k: int) -> np.ndarray:
        key = (shard.serial, k, "sizes")
        cache = self._core.cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        hit = cache.get((shard.serial, k))
        if hit is not None:
            return np.diff(hit[1])
        sizes = shard.file.chunk_record_sizes(k)
        cache.put(key, sizes, sizes.nbytes)
        return sizes

    def record_sizes(self, shard: int, start: int, stop: int) -> np.ndarray:
        """Sizes in bytes (``int64``, shape ``(stop - start,)``) of records
        ``[start, stop)`` of shard ``shard``, counted in its *file* (as
        :attr:`ShardInfo.start` is). One-record chunks need no read (the
        footer has their size); other chunks decode their sizes blocks only,
        cached. Raises :class:`ArrayRecordError` for a corrupt footer or
        sizes block, ``IndexError`` for a range outside the file."""
        self._check_open()
        s = self._shards[shard]
        f = s.file
        if not 0 <= start <= stop <= f.num_records:
            raise IndexError(f"records [{start}, {stop}) outside [0, {f.num_records}) of {s.spec.path}")
        return f.record_sizes(start, stop, chunk_sizes=lambda k: self._chunk_sizes(s, k))

    def record_size(self, index) -> int:
        """Size in bytes of the record at global ``index``."""
        k, _, local = self._resolve(index)
        return int(self.record_sizes(k, local, local + 1)[0])

    def shard_record_bytes(self, k: int) -> int:
        """Exact sum of the sizes (bytes) of the records shard ``k``
        contributes (its slice): whole chunks from the footer, the chunks
        cut by a read instruction from their sizes."""
        self._check_open()
        s = self._shards[k]
        if not s.num_records:
            return 0
        f = s.file
        lo, hi = s.start, s.start + s.num_records
        k0, k1 = f.chunk_of(lo), f.chunk_of(hi - 1)
        if k0 == k1:
            a, b = f.chunk_records(k0)
            if (a, b) == (lo, hi):
                return int(f.chunk_decoded_sizes[k0])
            return int(self.record_sizes(k, lo, hi).sum())
        total = int(f.chunk_decoded_sizes[k0 + 1 : k1].sum())
        total += int(self.record_sizes(k, lo, f.chunk_first(k0 + 1)).sum())
        total += int(self.record_sizes(k, f.chunk_first(k1), hi).sum())
        return total

    # -- reading ---------------------------------------------------------------

    def _chunk(self, shard: _Shard, k: int):
        key = (shard.serial, k)
        cache = self._core.cache
        hit = cache.get(key)
        if hit is not None:
            return hit
        values, offsets = shard.file.decode_chunk(k)
        if len(offsets) > 2:
            cache.put_chunk(key, values, offsets)
        return values, offsets

    def __getitem__(self, index):
        """The record at global ``index`` (an int or numpy integer in
        ``[0, len)``) as ``bytes``; a list, tuple or 1-D integer array of
        indices gives ``list[bytes]`` (as :meth:`__getitems__`), as do
        slices. Raises ``IndexError`` outside ``[0, len)``,
        :class:`ArrayRecordError` for a corrupt record (naming the shard)."""
        if type(index) is int and not self._core.closed:
            # The common case in the fewest steps: an in-range int.
            firsts = self._firsts
            if 0 <= index < firsts[-1]:
                k = bisect.bisect_right(firsts, index) - 1
                shard = self._shards[k]
                f = shard._file or shard.file
                idx = f._index
                if idx is not None and idx.group_size == 1:
                    return f.read_record(index - firsts[k] + shard.start)
        if isinstance(index, (list, tuple, np.ndarray, slice)):
            if isinstance(index, slice):
                index = range(*index.indices(len(self)))
            return self.__getitems__(index)
        _, shard, local = self._resolve(index)
        f = shard.file
        if f.group_size == 1:
            return f.read_record(local)
        k = f.chunk_of(local)
        values, offsets = self._chunk(shard, k)
        if len(offsets) == 2 and isinstance(values, bytes):
            return values
        j = local - f.chunk_first(k)
        return bytes(values[offsets[j] : offsets[j + 1]])

    read = __getitem__

    def __getitems__(self, indices) -> list[bytes]:
        """Records at ``indices`` (a sequence or 1-D integer array), in the
        order asked, as ``list[bytes]``. Each chunk is read and decoded once
        per call; large batches are split across the thread pool (the codecs
        and hashes release the GIL). Raises ``IndexError`` for an index
        outside ``[0, len)``."""
        self._check_open()
        idx = np.asarray(indices)
        if idx.size == 0:
            return []
        if idx.dtype.kind not in "iu":
            raise TypeError(f"record indices must be integers, got {idx.dtype}")
        total = self._firsts[-1]
        if idx.dtype == np.uint64 and (idx >> 63).any():  # would wrap to negative
            raise RecordKeyError(f"record index {int(idx[(idx >> 63) != 0][0])} out of range [0, {total})")
        idx = idx.astype(np.int64, copy=False).ravel()
        bad = (idx < 0) | (idx >= total)
        if bad.any():
            raise RecordKeyError(f"record index {int(idx[bad][0])} out of range [0, {total})")
        return self._read_batch(idx)

    def _read_batch(self, idx) -> list:
        """Records at ``idx``: the one-record zstd chunks of every shard are
        decompressed together in one call on all workers outside the GIL;
        chunks of several records are decoded once each, on the pool when
        there are several."""
        core = self._core
        out: list = [None] * idx.size
        shards = self._shards
        firsts = self.firsts
        many = len(shards) > 1
        sk = np.searchsorted(firsts, idx, side="right") - 1 if many else np.zeros(idx.size, np.int64)
        # Object stores: the chunks of every shard in the batch in flight at once (issue 22).
        ahead = [  # noqa: F841
            shards[s].file.prefetch_records([(i, i + 1) for i in (idx[sk == s] - firsts[s] + shards[s].start).tolist()])
            for s in np.unique(sk).tolist()] if shards[0].file.remote else ()
        frames, frame_slots, checks, singles, grouped = [], [], [], [], []
        views, few = [], []
        try:
            # One sort by shard, then a slice of it per shard: no pass over
            # the whole batch per shard.
            if many:
                order = np.argsort(sk, kind="stable")
                by_shard = sk[order]
                cut = np.flatnonzero(by_shard[1:] != by_shard[:-1]) + 1
                heads = np.concatenate(([0], cut))
                tails = np.concatenate((cut, [idx.size]))
                local_all = (idx - firsts[sk] + self._starts[sk])[order]
                parts = zip(by_shard[heads].tolist(), heads.tolist(), tails.tolist())
            else:
                order = np.arange(idx.size)
                local_all = idx + shards[0].start
                parts = [(0, 0, idx.size)]
            # Most shards hold a few records of a batch over many shards:
            # their part of it is cut from lists, not arrays (a numpy slice
            # costs more than a list's of a few items).
            local_list = local_all.tolist() if many or idx.size < _FRAMES_MIN else None
            for s, a, b in parts:
                shard = shards[s]
                f = shard.file
                g = f.group_size
                if g == 1 and b - a < _FRAMES_MIN:
                    # A few records of this shard: their chunks are copied
                    # out and gathered with those of the other shards.
                    few.append((f, a, b, local_list[a:b]))
                    continue
                sel = order[a:b]
                local = local_all[a:b]
                if g == 1:
                    src = f.source
                    view = src.map_view() if src is not None else None
                    if view is not None:
                        views.append(src)
                    got, group, located, buf = f.single_record_frames(local, view=view)
                    frames.append(group)
                    checks.append((buf, located))
                    frame_slots.append(sel[got])
                    missed = np.ones(sel.size, dtype=bool)
                    missed[got] = False
                    singles.extend((f, slot, i) for slot, i in zip(sel[missed].tolist(), local[missed].tolist()))
                else:
                    grouped.append((shard, sel, local))
            if few:
                self._gather(few, order, frames, checks, frame_slots, singles)
            if frames:
                verify = core.verify
                recs, oks = decode_zstd_frames(
                    frames, helper=helper_pool(core.max_workers) if idx.size >= _PARALLEL_MIN else None,
                    check=lambda: [check_frame_hashes(b, fr, verify=verify) for b, fr in checks])
                del frames, checks
        finally:
            for src in views:
                src.end_view()
        if frame_slots:
            slots = np.concatenate(frame_slots)
            placed = place(idx.size, slots, recs, np.concatenate(oks))
            bad = slots[placed[slots] == None]  # noqa: E711 (elementwise): read one by one to name it
            singles.extend((shards[s].file, slot, int(idx[slot] - firsts[s] + shards[s].start))
                           for slot, s in zip(bad.tolist(), sk[bad].tolist()))
            out = placed.tolist()
        for f, slot, i in singles:
            out[slot] = f.read_record(i)
        if grouped:
            self._read_grouped(grouped, out)
        return out

    @staticmethod
    def _gather(few, order, frames, checks, frame_slots, singles) -> None:
        """The chunk windows of shards with few records in a batch (``few``:
        ``(file, a, b, local indices)``, the shard's slots being
        ``order[a:b]``), copied out (one batch of reads per shard) and
        joined into one buffer located at once: one set-up for the batch,
        not one per shard. Adds to the caller's lists (see
        :meth:`_read_batch`)."""
        windows, begins, decoded, at = [], [], [], []
        for f, a, b, loc in few:
            windows_f, begins_f, decoded_f = f.record_windows(loc)
            windows += windows_f
            begins += begins_f
            decoded += decoded_f
            at += range(a, b)
        buf = b"".join(windows)
        lengths = np.fromiter(map(len, windows), dtype=np.int64, count=len(windows))
        positions = np.zeros(len(windows), dtype=np.int64)
        np.cumsum(lengths[:-1], out=positions[1:])
        begins = np.array(begins, dtype=np.int64)
        decoded = np.array(decoded, dtype=np.int64)
        slots = order[at]
        located = locate_zstd_frames(buf, positions, begins, lengths)
        agree = located.sizes == decoded[located.sel]
        if not agree.all():  # the general path names the disagreement
            located = type(located)(*(a[agree] for a in located))
        frames.append((buf, located.segments, located.sizes))
        checks.append((buf, located))
        frame_slots.append(slots[located.sel])
        missed = np.ones(len(windows), dtype=bool)
        missed[located.sel] = False
        if missed.any():
            owner = [(f, i) for f, _, _, loc in few for i in loc]
            singles.extend((owner[j][0], int(slots[j]), owner[j][1]) for j in np.flatnonzero(missed).tolist())

    def _read_grouped(self, grouped, out) -> None:
        """Fill ``out`` from shards with multi-record chunks; each chunk is
        decoded once, chunks spread over the pool when there are several."""
        tasks = []
        for shard, sel, local in grouped:
            f = shard.file
            for k, part in f.group_by_chunk(local):
                tasks.append((shard, k, sel[part], local[part] - f.chunk_first(k)))

        def run(task):
            shard, k, slots, recs = task
            values, offsets = self._chunk(shard, k)
            if len(offsets) == 2 and isinstance(values, bytes):
                return [(slot, values) for slot in slots.tolist()]
            return [(slot, bytes(values[a:b])) for slot, a, b in zip(slots.tolist(), offsets[recs].tolist(),
                                                                       offsets[recs + 1].tolist())]

        core = self._core
        if len(tasks) > 1 and core.max_workers > 1:
            results = core.get_pool().map(run, tasks)
        else:
            results = map(run, tasks)
        for pairs in results:
            for slot, rec in pairs:
                out[slot] = rec

    def __iter__(self):
        """All records in global order. Shards are read a block at a time
        on the calling thread, with the helper threads a scan uses
        (:meth:`arrayfs.batch.BatchReads.iter_range`): pool threads each
        reading a block of one-record chunks handed the GIL over at every
        1 KB call, 2-2.5x slower than this thread alone. Object stores:
        every block's bytes are fetched ahead first, within the read-ahead
        budget (see :mod:`arrayfs.storage.readahead`); a shard of larger
        chunks then decodes on the thread pool, a few blocks ahead of the
        one consumed, which keeps both cores busy while bytes arrive. A scan
        leaves the chunk cache alone: keeping every chunk it decoded, on a
        100 MB shard, cost 15-30% of its speed and evicted the chunks that
        random reads had put there."""
        self._check_open()
        shards = [s for s in self._shards if s.num_records]
        # Object stores: every shard's chunks fetched ahead (issue 22), as one
        # span each, in pieces of up to 8 MiB (blocks of small records,
        # asked for one by one, went in pieces of 256 KiB: a batch's size).
        ahead = [s.file.prefetch_records([(s.start, s.start + s.num_records)])  # noqa: F841
                 for s in shards if s.file.remote]
        workers = self._core.max_workers
        for shard in shards:
            f = shard.file
            end = shard.start + shard.num_records
            if f.decodes_ahead(workers):
                yield from f.iter_ahead(shard.start, end, self._core.get_pool(), workers)
            else:
                yield from f.iter_range(shard.start, end, workers)

    def __repr__(self):
        return f"DatasetSnapshot(shards={len(self._shards)}, len={len(self)})"


_remote_threads = None
_remote_lock = threading.Lock()


def _remote_pool() -> ThreadPoolExecutor:
    """Threads for opening and reading ahead from object stores (they wait
    on requests, so more of them than cores)."""
    global _remote_threads
    with _remote_lock:
        if _remote_threads is None or _remote_threads[1] != os.getpid():
            _remote_threads = (ThreadPoolExecutor(_REMOTE_OPENERS, thread_name_prefix="arrayfs-remote-ds"),
                               os.getpid())
        return _remote_threads[0]


class ArrayRecordDataSource:
    """Random access to the records of many ArrayRecord shards as one sequence.

    Args:
        paths: a path, URL, glob pattern, directory, ``"path[start:stop]"``
            read instruction, or a list of these (see :mod:`arrayfs.paths`;
            glob matches in natural order, so ``-00002-of-00010`` precedes
            ``-00010-of-00010``). URLs go through fsspec (``s3://``,
            ``gs://``, ``https://``, ``memory://``, ...).
        verify: check chunk data hashes on read (header hashes always are).
        cache_bytes: bound of the decoded-chunk LRU cache (bytes). Only
            chunks of more than one record are cached: they are the ones
            sequential or nearby reads decode again.
        max_workers: threads for decoding chunks of a batch or read-ahead in
            parallel (default: the CPU count). The codecs release the
            GIL.
        storage_options: fsspec options for URLs (credentials,
            ``endpoint_url``, ...); the backend's usual environment
            (``AWS_ENDPOINT_URL``, ...) applies otherwise.

    Opening reads each shard's head and tail (signature, postscript and
    footer: one round trip per shard, overlapped across shards for object
    stores) and keeps no descriptor beyond the bounded pool's.

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing
            (naming it).
        ArrayRecordError: a shard is not a valid ArrayRecord file; the
            message names the shard.
        arrayfs.storage.StorageError: an object store cannot be reached.
    """

    def __init__(self, paths, *, verify: bool = True, cache_bytes: int = 64 << 20, max_workers: int | None = None,
                 storage_options: dict | None = None):
        entries = [paths] if isinstance(paths, (str, bytes, os.PathLike)) or hasattr(paths, "filename") else list(paths)
        self._setup([e if hasattr(e, "filename") else os.fspath(e) for e in entries], verify, cache_bytes,
                    max_workers or os.cpu_count() or 1, storage_options)
        found = expand_entries(self._paths, storage_options=storage_options)
        self._snap = DatasetSnapshot(self._core, self._open_all(found))

    def _setup(self, paths, verify, cache_bytes, max_workers, storage_options) -> None:
        """Everything but the snapshot (shared by ``__init__`` and unpickling)."""
        self._paths = paths
        self._storage_options = storage_options
        self._core = _Core(verify, cache_bytes, max_workers)
        self._refresh_lock = threading.Lock()
        _LIVE.add(self)

    def _open_all(self, found):
        opts = self._storage_options
        verify = self._core.verify
        shards = []
        try:
            if any(is_remote(spec.path) for spec, _ in found) and len(found) > 1:
                # Each open is a request or two: overlap them.
                futures = [_remote_pool().submit(_open_shard, spec, entry, verify, opts) for spec, entry in found]
                err = None
                for fut in futures:
                    try:
                        shards.append(fut.result())
                    except BaseException as e:
                        err = err or e
                if err is not None:
                    raise err
            else:
                # Serial on purpose: a local open is a few system calls and
                # small hashes under the GIL, and a thread pool measured 2.5x
                # slower here.
                for spec, entry in found:
                    shards.append(_open_shard(spec, entry, verify, opts))
        except BaseException:
            for shard in shards:
                shard.close()
            raise
        return shards

    # -- the snapshot and what it says ---------------------------------------------

    def snapshot(self) -> DatasetSnapshot:
        """The current :class:`DatasetSnapshot`: an immutable view that
        later :meth:`refresh` calls do not change. Raises ``ValueError``
        once the dataset is closed."""
        self._check_open()
        return self._snap

    def __len__(self) -> int:
        return len(self._snap)

    @property
    def shards(self) -> tuple:
        """:class:`ShardInfo` of each shard of the current snapshot, in order."""
        return self._snap.shards

    @property
    def paths(self) -> list:
        """The paths/patterns as given."""
        return list(self._paths)

    @property
    def storage_options(self):
        return self._storage_options

    def __repr__(self) -> str:
        """``ArrayRecordDataSource(hash_of_paths=<16 hex>, len=N)``.

        Grain stores ``repr(data_source)`` in every checkpoint and compares
        it on restore, so it must be short at 10,000 shards and survive a
        copy of the dataset to another directory or bucket: it hashes each
        shard's file *name* (not its directory) with the slice of records
        used, in order (array_record's own repr hashes its paths for the
        same reason)."""
        snap = self._snap
        h = hashlib.sha256()
        for s in snap._shards:
            h.update(f"{_basename(s.spec.path)}[{s.start}:{s.start + s.num_records}]\n".encode())
        return f"ArrayRecordDataSource(hash_of_paths={h.hexdigest()[:16]}, len={len(snap)})"

    def locate(self, index) -> tuple[str, int]:
        """``(shard path, local index in that file)`` of global ``index``."""
        return self._snap.locate(index)

    def _check_open(self) -> None:
        if self._core.closed:
            raise ValueError(f"{self!r}: read from a closed ArrayRecordDataSource")

    # -- reading: the current snapshot's -------------------------------------------

    def __getitem__(self, index):
        """The record at global ``index`` as ``bytes``, or a ``list[bytes]``
        for a list, tuple, array or slice of indices (see
        :meth:`DatasetSnapshot.__getitem__`)."""
        return self._snap[index]

    def __getitems__(self, indices) -> list[bytes]:
        """Records at ``indices``, in that order (see
        :meth:`DatasetSnapshot.__getitems__`)."""
        return self._snap.__getitems__(indices)

    def __iter__(self):
        """All records in global order, reading ahead on the thread pool."""
        return iter(self._snap)

    def record_size(self, index) -> int:
        """Size in bytes of the record at global ``index``, decoding at most
        the sizes of its chunk (nothing for single-record chunks)."""
        return self._snap.record_size(index)

    def record_sizes(self, shard: int, start: int, stop: int) -> np.ndarray:
        """See :meth:`DatasetSnapshot.record_sizes`."""
        return self._snap.record_sizes(shard, start, stop)

    # -- refresh and lifetime ----------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Re-expand the paths (listing object stores afresh) and install a
        new snapshot.

        Unchanged shards (same device, inode, size and mtime; for objects,
        the same size and ETag or generation) keep their open files;
        vanished or rewritten shards are dropped from the view and their
        cached chunks evicted (their files are released once no in-flight
        read holds the old snapshot); new shards are opened. A new file that
        is not yet a valid ArrayRecord file (a writer is still writing it)
        is left out with a warning and tried again on the next refresh.
        Returns a :class:`RefreshResult`.
        """
        self._check_open()
        with self._refresh_lock:
            old = self._snap
            # A spec may name several shards (a path given twice, a glob that
            # also matches a listed file): each occurrence takes the next.
            by_spec: dict = {}
            for s in old._shards:
                by_spec.setdefault(s.spec, collections.deque()).append(s)
            new, added, pending, to_open = [], [], [], []
            for spec, entry in expand_entries(self._paths, allow_missing=True, fresh=True,
                                              storage_options=self._storage_options):
                prevs = by_spec.get(spec)
                prev = prevs.popleft() if prevs else None
                if entry is None:
                    try:
                        entry = stat_path(spec.path, self._storage_options)
                    except (FileNotFoundError, StorageError):
                        continue
                if entry.is_dir:
                    continue
                if prev is not None and tuple(prev.identity) == tuple(entry.identity):
                    new.append(prev)
                    continue
                new.append(None)
                to_open.append((len(new) - 1, spec, entry))
            opened = self._open_some(to_open)
            for (slot, spec, _), got in zip(to_open, opened):
                if isinstance(got, BaseException):
                    pending.append((spec.path, str(got)))
                    warnings.warn(f"arrayfs: leaving out {spec.path} for now: {got}", PendingShardWarning, stacklevel=2)
                else:
                    new[slot] = got
                    added.append(spec.path)
            new = [s for s in new if s is not None]
            kept = {id(s) for s in new}
            gone = [s for s in old._shards if id(s) not in kept]
            if not added and not gone:
                return RefreshResult((), (), tuple(pending))
            self._snap = DatasetSnapshot(self._core, new)
            serials = {s.serial for s in gone}
            self._core.cache.forget_shards(serials)
            for s in gone:
                # A read in flight on the old snapshot finishes on the file it
                # began on (even if removed from its path): the descriptor
                # stays open until the last snapshot holding the shard goes.
                if s._file is not None:
                    s._file.pin()
            return RefreshResult(tuple(added), tuple(s.spec.path for s in gone), tuple(pending))

    def release_files(self) -> None:
        """Close the current shards' files and drop the cached chunks, but
        stay usable: each shard reopens on its next read (raising
        :class:`FileChangedError` if it changed meanwhile). Gives back
        descriptors and maps between uses, as array_record's source does on
        ``__exit__``."""
        for shard in self._snap._shards:
            shard.release()
        self._core.cache.clear()

    def release(self, snapshot: DatasetSnapshot, keep=()) -> int:
        """Close the files of ``snapshot``'s shards that neither the current
        snapshot nor any snapshot in ``keep`` uses: a caller done with an
        old snapshot gives back the descriptors of shards deleted or
        replaced since, now rather than at garbage collection. Reads of
        those shards through ``snapshot`` raise ``ValueError`` afterwards.
        Returns how many shards were closed."""
        live = {id(s) for snap in (self._snap, *keep) for s in snap._shards}
        gone = [s for s in snapshot._shards if id(s) not in live and not s.closed]
        for s in gone:
            s.close()
        return len(gone)

    def _open_some(self, jobs) -> list:
        verify, opts = self._core.verify, self._storage_options

        def one(job):
            _, spec, entry = job
            try:
                return _open_shard(spec, entry, verify, opts)
            except (ArrayRecordError, OSError) as e:
                return e

        if len(jobs) > 1 and any(is_remote(spec.path) for _, spec, _ in jobs):
            return list(_remote_pool().map(one, jobs))
        return [one(j) for j in jobs]

    def _after_fork(self) -> None:
        # Locks held by other threads at fork time would stay held forever
        # in the child; start it with fresh ones.
        core = self._core
        core.pool = None
        core.pool_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        core.cache = ChunkCache(core.cache.max_bytes)
        for shard in self._snap._shards:
            shard.after_fork()

    def close(self) -> None:
        """Close every shard and stop the thread pool; this dataset and its
        snapshots refuse reads from now on. Safe to call twice."""
        core = self._core
        core.closed = True
        pool, core.pool = core.pool, None
        if pool is not None and core.pool_pid == os.getpid():
            pool.shutdown(wait=True)
        core.cache.clear()
        for s in self._snap._shards:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Pickling: a worker process gets the same shards and counts and opens
    # each file on its first read there.
    def __getstate__(self):
        snap = self._snap
        core = self._core
        return {
            "paths": self._paths,
            "verify": core.verify,
            "cache_bytes": core.cache.max_bytes,
            "max_workers": core.max_workers,
            "storage_options": self._storage_options,
            "shards": [(s.spec, s.state()) for s in snap._shards],
        }

    def __setstate__(self, state):
        self._setup(state["paths"], state["verify"], state["cache_bytes"], state["max_workers"],
                    state.get("storage_options"))
        opts = state.get("storage_options")
        self._snap = DatasetSnapshot(
            self._core, [_Shard(spec, self._core.verify, opts, state=st) for spec, st in state["shards"]]
        )
