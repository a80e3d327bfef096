"""``ArrayRecordDataSource``: one concatenated, thread-safe view over many shards.

Global index ``i`` runs over the records of every shard in order (shard 0's
records, then shard 1's, ...). The view is an immutable *snapshot*; reads
take the current snapshot once and finish on it, so :meth:`refresh` can
install a new one (shards added or removed) while reads are in flight.

Drop-in for array_record's ``python/array_record_data_source.py`` (what
Grain users pass to ``grain.MapDataset.source``): ``len``, ``__getitem__``,
batched ``__getitems__``, a ``repr`` identifying the data, picklable for
worker processes.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import logging
import operator
import os
import threading
import warnings
import weakref
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from .cache import ChunkCache
from .errors import ArrayRecordError
from .file import ArrayRecordFile
from .paths import ShardSpec, expand_paths
from .riegeli.chunk import decompress_zstd_frames

__all__ = ["ArrayRecordDataSource", "ShardInfo", "RefreshResult"]

log = logging.getLogger("arrayfs.dataset")
_serial = itertools.count()
# Below this many records a batch is read on the calling thread: handing
# work to the pool costs more than it saves.
_PARALLEL_MIN = 64
# Records per read-ahead task when iterating (at least one chunk).
_ITER_BLOCK = 1024
# Fewest records of one shard in a batch worth the vectorised zstd path.
_FRAMES_MIN = 16
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
    """An opened shard: the file (opened lazily after unpickling) and its slice."""

    __slots__ = ("spec", "start", "num_records", "identity", "serial", "verify", "_file", "_lock", "writer_options",
                 "size_bytes", "mtime_ns")

    def __init__(self, spec: ShardSpec, verify: bool, file: ArrayRecordFile | None = None, state=None):
        self.spec = spec
        self.verify = verify
        self.serial = next(_serial)
        self._lock = threading.Lock()
        self._file = file
        if state is not None:  # rebuilt in another process; open on first read
            self.start, self.num_records, self.identity, self.writer_options, self.size_bytes, self.mtime_ns = state
            return
        n = file.num_records
        start, stop, _ = slice(spec.start, spec.stop).indices(n)
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
                if self._file is None:
                    f = ArrayRecordFile(self.spec.path, verify=self.verify)
                    if f.identity[2:] != self.identity[2:]:
                        f.close()
                        raise ArrayRecordError(
                            "shard changed since the dataset was opened (size or mtime differ)",
                            path=self.spec.path,
                        )
                    self._file = f
                f = self._file
        return f

    def state(self):
        return (self.start, self.num_records, self.identity, self.writer_options, self.size_bytes, self.mtime_ns)

    def close(self):
        f, self._file = self._file, None
        if f is not None:
            f.close()


@dataclass(frozen=True)
class _Snapshot:
    shards: tuple
    firsts: list = field(default_factory=list)  # global index of each shard's first record, plus the total

    @classmethod
    def build(cls, shards):
        firsts = [0]
        for s in shards:
            firsts.append(firsts[-1] + s.num_records)
        return cls(tuple(shards), firsts)

    @property
    def total(self) -> int:
        return self.firsts[-1]


def _basename(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1].rsplit(os.sep, 1)[-1]


def _open_shard(spec: ShardSpec, verify: bool) -> _Shard:
    return _Shard(spec, verify, ArrayRecordFile(spec.path, verify=verify))


class ArrayRecordDataSource:
    """Random access to the records of many ArrayRecord shards as one sequence.

    Args:
        paths: a path, glob pattern, directory, ``"path[start:stop]"`` read
            instruction, or a list of these (see :mod:`arrayfs.paths`; glob
            matches in natural order, so ``-00002-of-00010`` precedes
            ``-00010-of-00010``).
        verify: check chunk data hashes on read (header hashes always are).
        cache_bytes: bound of the decoded-chunk LRU cache (bytes). Only
            chunks of more than one record are cached: they are the ones
            sequential or nearby reads decode again.
        max_workers: threads for decoding chunks of a batch or read-ahead in
            parallel (default: CPU count, at most 8). The codecs release the
            GIL.

    Opening reads each shard's postscript and footer metadata (its record
    count); a shard's per-chunk index is decoded on its first read.

    Raises:
        FileNotFoundError: a path does not exist or a pattern matches nothing.
        ArrayRecordError: a shard is not a valid ArrayRecord file; the
            message names the shard.
    """

    def __init__(self, paths, *, verify: bool = True, cache_bytes: int = 64 << 20, max_workers: int | None = None):
        entries = [paths] if isinstance(paths, (str, bytes, os.PathLike)) or hasattr(paths, "filename") else list(paths)
        self._setup([e if hasattr(e, "filename") else os.fspath(e) for e in entries], verify, cache_bytes,
                    max_workers or min(8, os.cpu_count() or 1))
        specs = expand_paths(self._paths)
        self._snap = _Snapshot.build(self._open_all(specs))

    def _setup(self, paths, verify, cache_bytes, max_workers) -> None:
        """Everything but the snapshot (shared by ``__init__`` and unpickling)."""
        self._paths = paths
        self._verify = verify
        self._cache = ChunkCache(cache_bytes)
        self._max_workers = max_workers
        self._pool = None
        self._pool_pid = os.getpid()
        self._pool_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._closed = False
        _LIVE.add(self)

    def _open_all(self, specs):
        # Serial on purpose: opening is a few system calls and small hashes
        # under the GIL, and a thread pool measured 2.5x slower here.
        shards = []
        try:
            for spec in specs:
                shards.append(_open_shard(spec, self._verify))
        except BaseException:
            for shard in shards:
                shard.close()
            raise
        return shards

    # -- sizes and identity ----------------------------------------------------

    def __len__(self) -> int:
        return self._snap.total

    @property
    def shards(self) -> tuple:
        """:class:`ShardInfo` of each shard of the current snapshot, in order."""
        snap = self._snap
        return tuple(
            ShardInfo(s.spec.path, s.num_records, first, s.start, s.size_bytes, s.mtime_ns, s.writer_options)
            for s, first in zip(snap.shards, snap.firsts)
        )

    @property
    def paths(self) -> list:
        """The paths/patterns as given."""
        return list(self._paths)

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
        for s in snap.shards:
            h.update(f"{_basename(s.spec.path)}[{s.start}:{s.start + s.num_records}]\n".encode())
        return f"ArrayRecordDataSource(hash_of_paths={h.hexdigest()[:16]}, len={snap.total})"

    def locate(self, index) -> tuple[str, int]:
        """``(shard path, local index in that file)`` of global ``index``."""
        shard, local = self._resolve(index)
        return shard.spec.path, local

    # -- reading ---------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise ValueError(f"{self!r}: read from a closed ArrayRecordDataSource")

    def _resolve(self, index):
        """``(shard, index in its file)`` of global ``index`` in the current
        snapshot; raises like ``__getitem__``."""
        if self._closed:
            self._check_open()
        snap = self._snap
        k, local = self._locate(snap, self._check_index(snap, index))
        shard = snap.shards[k]
        return shard, local + shard.start

    @staticmethod
    def _check_index(snap, index) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"record index must be an integer, got {type(index).__name__}") from None
        if not 0 <= i < snap.total:
            raise IndexError(f"record index {i} out of range [0, {snap.total})")
        return i

    @staticmethod
    def _locate(snap, i: int) -> tuple[int, int]:
        k = bisect.bisect_right(snap.firsts, i) - 1
        return k, i - snap.firsts[k]

    def _chunk(self, shard: _Shard, k: int):
        f = shard.file
        key = (shard.serial, k)
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        values, offsets = f.decode_chunk(k)
        if len(offsets) > 2:
            self._cache.put(key, values, offsets)
        return values, offsets

    def __getitem__(self, index):
        """The record at global ``index`` (an int or numpy integer in
        ``[0, len)``) as ``bytes``; a list, tuple or 1-D integer array of
        indices gives ``list[bytes]`` (as :meth:`__getitems__`), as do
        slices. Raises ``IndexError`` outside ``[0, len)``,
        :class:`ArrayRecordError` for a corrupt record (naming the shard)."""
        if isinstance(index, (list, tuple, np.ndarray, slice)):
            if isinstance(index, slice):
                index = range(*index.indices(len(self)))
            return self.__getitems__(index)
        shard, local = self._resolve(index)
        f = shard.file
        if f.group_size == 1:
            return f.read_record(local)
        k = f.chunk_of(local)
        values, offsets = self._chunk(shard, k)
        if len(offsets) == 2 and isinstance(values, bytes):
            return values
        j = local - int(f.index()[2][k])
        return bytes(values[offsets[j] : offsets[j + 1]])

    def __getitems__(self, indices) -> list[bytes]:
        """Records at ``indices`` (a sequence or 1-D integer array), in the
        order asked, as ``list[bytes]``. Each chunk is decoded once per call;
        large batches are split across the thread pool (the codecs and hashes
        release the GIL). Raises ``IndexError`` for an index outside
        ``[0, len)``."""
        self._check_open()
        snap = self._snap
        idx = np.asarray(indices)
        if idx.size == 0:
            return []
        if idx.dtype.kind not in "iu":
            raise TypeError(f"record indices must be integers, got {idx.dtype}")
        idx = idx.astype(np.int64, copy=False).ravel()
        total = snap.total
        bad = (idx < 0) | (idx >= total)
        if bad.any():
            raise IndexError(f"record index {int(idx[bad][0])} out of range [0, {total})")
        return self._read_batch(snap, idx)

    def _read_batch(self, snap, idx) -> list:
        """Records at ``idx``: the one-record zstd chunks of every shard are
        decompressed together in one call on all workers outside the GIL;
        chunks of several records are decoded once each, on the pool when
        there are several."""
        out: list = [None] * idx.size
        firsts = np.asarray(snap.firsts, dtype=np.int64)
        sk = np.searchsorted(firsts, idx, side="right") - 1 if len(snap.shards) > 1 else np.zeros(idx.size, np.int64)
        frames, frame_slots, singles, grouped = [], [], [], []
        for s in (np.unique(sk).tolist() if len(snap.shards) > 1 else [0]):
            sel = np.flatnonzero(sk == s) if len(snap.shards) > 1 else np.arange(idx.size)
            shard = snap.shards[s]
            f = shard.file
            local = idx[sel] - firsts[s] + shard.start
            if f.group_size == 1 and sel.size < _FRAMES_MIN:
                # A few records of this shard: the scalar fast path costs less
                # than the vectorised set-up.
                singles.extend((f, slot, i) for slot, i in zip(sel.tolist(), local.tolist()))
            elif f.group_size == 1:
                got, group = f.single_record_frames(local)
                frames.append(group)
                frame_slots.append(sel[got])
                missed = np.ones(sel.size, dtype=bool)
                missed[got] = False
                singles.extend((f, slot, i) for slot, i in zip(sel[missed].tolist(), local[missed].tolist()))
            else:
                grouped.append((shard, sel, local))
        if frames:
            recs = decompress_zstd_frames(frames, threads=self._max_workers if idx.size >= _PARALLEL_MIN else 0)
            if recs is None:  # a corrupt frame: read one by one to name it
                singles.extend(
                    (snap.shards[s].file, slot, int(idx[slot] - firsts[s] + snap.shards[s].start))
                    for slots in frame_slots for slot, s in zip(slots.tolist(), sk[slots].tolist())
                )
            else:
                for slot, rec in zip(np.concatenate(frame_slots).tolist(), recs):
                    out[slot] = rec
        for f, slot, i in singles:
            out[slot] = f.read_record(i)
        if grouped:
            self._read_grouped(grouped, out)
        return out

    def _read_grouped(self, grouped, out) -> None:
        """Fill ``out`` from shards with multi-record chunks; each chunk is
        decoded once, chunks spread over the pool when there are several."""
        tasks = []
        for shard, sel, local in grouped:
            cfirst = shard.file.index()[2]
            for k, part in shard.file.group_by_chunk(local):
                tasks.append((shard, k, sel[part], local[part] - cfirst[k]))

        def run(task):
            shard, k, slots, recs = task
            values, offsets = self._chunk(shard, k)
            if len(offsets) == 2 and isinstance(values, bytes):
                return [(slot, values) for slot in slots.tolist()]
            return [(slot, bytes(values[a:b])) for slot, a, b in zip(slots.tolist(), offsets[recs].tolist(),
                                                                       offsets[recs + 1].tolist())]

        results = self._get_pool().map(run, tasks) if len(tasks) > 1 and self._max_workers > 1 else map(run, tasks)
        for pairs in results:
            for slot, rec in pairs:
                out[slot] = rec

    def _chunk_decoder(self, shard):
        return lambda k: self._chunk(shard, k)

    def __iter__(self):
        """All records in global order, reading the next block of records on
        the thread pool while the current one is consumed."""
        snap = self._snap
        blocks = []
        for shard in snap.shards:
            step = max(shard.file.group_size or 1, _ITER_BLOCK) if shard.num_records else 1
            for a in range(shard.start, shard.start + shard.num_records, step):
                blocks.append((shard, np.arange(a, min(a + step, shard.start + shard.num_records), dtype=np.int64)))
        if not blocks:
            return

        def read(block):
            shard, idx = block
            return shard.file.read_records(idx, decode=self._chunk_decoder(shard))

        if self._max_workers <= 1 or len(blocks) == 1:
            for b in blocks:
                yield from read(b)
            return
        pool = self._get_pool()
        ahead = self._max_workers
        pending = [pool.submit(read, b) for b in blocks[:ahead]]
        nxt = ahead
        while pending:
            done = pending.pop(0)
            if nxt < len(blocks):
                pending.append(pool.submit(read, blocks[nxt]))
                nxt += 1
            yield from done.result()

    def record_size(self, index) -> int:
        """Size in bytes of the record at global ``index``, decoding at most
        the sizes of its chunk (nothing for single-record chunks)."""
        shard, local = self._resolve(index)
        f = shard.file
        k = f.chunk_of(local)
        j = local - int(f.index()[2][k])
        hit = self._cache.get((shard.serial, k))
        if hit is not None:
            offsets = hit[1]
            return int(offsets[j + 1] - offsets[j])
        return int(self._chunk_sizes(shard, k)[j])

    def _chunk_sizes(self, shard, k):
        key = ("sizes", shard.serial, k)
        hit = self._cache.get(key)
        if hit is not None:
            return hit[1]
        sizes = shard.file.chunk_record_sizes(k)
        if len(sizes) > 1:
            self._cache.put(key, b"", sizes)
        return sizes

    # -- refresh and lifetime ----------------------------------------------------

    def refresh(self) -> RefreshResult:
        """Re-expand the paths and install a new snapshot.

        Unchanged shards (same device, inode, size and mtime) keep their open
        files; vanished or rewritten shards are dropped from the view and
        their cached chunks evicted (their mappings are released once no
        in-flight read holds the old snapshot); new shards are opened. A new
        file that is not yet a valid ArrayRecord file (a writer is still
        writing it) is left out with a warning and tried again on the next
        refresh. Returns a :class:`RefreshResult`.
        """
        with self._refresh_lock:
            old = self._snap
            by_path = {s.spec: s for s in old.shards}
            new, added, pending = [], [], []
            for spec in expand_paths(self._paths, allow_missing=True):
                prev = by_path.get(spec)
                try:
                    st = os.stat(spec.path)
                except FileNotFoundError:
                    continue
                ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
                if prev is not None and prev.identity == ident:
                    new.append(prev)
                    continue
                try:
                    shard = _open_shard(spec, self._verify)
                except (ArrayRecordError, OSError) as e:
                    pending.append((spec.path, str(e)))
                    warnings.warn(f"arrayfs: leaving out {spec.path} for now: {e}", stacklevel=2)
                    continue
                new.append(shard)
                added.append(spec.path)
            kept = {id(s) for s in new}
            gone = [s for s in old.shards if id(s) not in kept]
            if not added and not gone:
                return RefreshResult((), (), tuple(pending))
            self._snap = _Snapshot.build(new)
            serials = {s.serial for s in gone}
            self._cache.discard(lambda key: (key[1] if key[0] == "sizes" else key[0]) in serials)
            return RefreshResult(tuple(added), tuple(s.spec.path for s in gone), tuple(pending))

    def _get_pool(self):
        pool = self._pool
        if pool is None or self._pool_pid != os.getpid():
            with self._pool_lock:
                if self._pool is None or self._pool_pid != os.getpid():
                    # A forked child (PyTorch's DataLoader workers) inherits
                    # the pool object but not its threads: make its own.
                    self._pool = ThreadPoolExecutor(self._max_workers, thread_name_prefix="arrayfs-read")
                    self._pool_pid = os.getpid()
                pool = self._pool
        return pool

    def _after_fork(self) -> None:
        # Locks held by other threads at fork time would stay held forever
        # in the child; start it with fresh ones.
        self._pool = None
        self._pool_lock = threading.Lock()
        self._refresh_lock = threading.Lock()
        self._cache = ChunkCache(self._cache.max_bytes)
        for shard in self._snap.shards:
            shard._lock = threading.Lock()
            if shard._file is not None:
                shard._file._lock = threading.Lock()

    def close(self) -> None:
        """Unmap every shard and stop the thread pool. Safe to call twice."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None and self._pool_pid == os.getpid():
            pool.shutdown(wait=True)
        self._cache.clear()
        snap, self._snap = self._snap, _Snapshot.build([])
        for s in snap.shards:
            s.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # Pickling: a worker process gets the same shards and counts and opens
    # each file on its first read there.
    def __getstate__(self):
        snap = self._snap
        return {
            "paths": self._paths,
            "verify": self._verify,
            "cache_bytes": self._cache.max_bytes,
            "max_workers": self._max_workers,
            "shards": [(s.spec, s.state()) for s in snap.shards],
        }

    def __setstate__(self, state):
        self._setup(state["paths"], state["verify"], state["cache_bytes"], state["max_workers"])
        self._snap = _Snapshot.build([_Shard(spec, self._verify, state=st) for spec, st in state["shards"]])
