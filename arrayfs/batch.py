"""Batched reads of one ArrayRecord file: many records, few calls.

For a batch the work per record is index arithmetic in numpy, one library
call per chunk (a hash, a decompression) and one ``bytes`` object; the
chunks' bytes are read in as few system calls as the source allows (none
from a memory map, one ``pread`` per run of nearby chunks otherwise, one
concurrent round of requests for an object store), and the file's identity
is checked once per batch.
"""

from __future__ import annotations

import collections
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from .errors import FileChangedError, TruncatedFileError
from .riegeli.blocks import BLOCK_HEADER_SIZE, BLOCK_SIZE, JoinBuffer, block_boundaries, block_headers_intact
from .riegeli.chunk import split_records
from .riegeli.header import chunk_headers_intact
from .riegeli.simple import check_frame_hashes, decode_zstd_frames, locate_zstd_frames
from .storage import SourceChangedError, SourceTruncatedError

__all__ = ["BatchReads", "helper_pool", "share_out"]

# One-record chunks decoded per step of a long batched read.
_SCAN_BLOCK = 8192
# Records per step of an in-order iteration: one-record chunks; larger
# chunks go by at least this many records, and by two chunks per thread.
_ITER_SINGLES = 4096
_ITER_MIN = 256
# Records per pool task when an object store's larger chunks decode ahead
# of the consumer (at least one chunk).
_AHEAD_BLOCK = 1024

_helper = None
_helper_lock = threading.Lock()


def helper_pool(workers: int) -> ThreadPoolExecutor | None:
    """The process-wide helper threads (one per CPU but the caller's) that
    decompress a share of a batch in one C call while the calling thread
    checks hashes (:func:`arrayfs.riegeli.simple.decode_zstd_frames`), or
    ``None`` when ``workers <= 1``. Helper tasks never wait on other tasks,
    so pool threads of the reader or the dataset may use them."""
    global _helper
    if workers <= 1:
        return None
    pool = _helper
    if pool is None or pool[1] != os.getpid():
        with _helper_lock:
            if _helper is None or _helper[1] != os.getpid():
                # A forked child inherits the object, not its threads.
                n = max(1, (os.cpu_count() or 2) - 1)
                _helper = (ThreadPoolExecutor(n, thread_name_prefix="arrayfs-helper"), os.getpid())
            pool = _helper
    return pool[0]


def place(n: int, slots: np.ndarray, recs: list, ok: np.ndarray) -> np.ndarray:
    """An object array of ``n`` slots holding ``recs[j]`` at ``slots[j]``
    where ``ok[j]`` (``None`` elsewhere): the records of a batch put in
    order by numpy, not by a loop per record."""
    out = np.empty(n, dtype=object)
    if len(recs):
        r = np.empty(len(recs), dtype=object)
        r[:] = recs
        out[slots[ok]] = r[ok]
    return out


def _storage_error(e: Exception, path: str, offset, records=None, opened_size=None) -> Exception:
    """The ArrayRecord error for a storage failure during a read."""
    if isinstance(e, SourceTruncatedError):
        since = (f" (it had {opened_size} bytes when opened: truncated since)"
                 if opened_size is not None and e.size < opened_size else "")
        return TruncatedFileError(
            f"the file ends at byte {e.size}, the read needs bytes up to {e.offset + e.length}{since}",
            path=path, offset=offset, records=records,
        )
    if isinstance(e, SourceChangedError):
        cls = TruncatedFileError if e.truncated else FileChangedError
        return cls(e.reason, path=path, offset=offset, records=records)
    return e


class BatchReads:
    """The batched reads of :class:`arrayfs.file.ArrayRecordFile` (a mixin:
    uses its index, ``read_record``, ``decode_chunk_in_place`` and source)."""

    def read_chunk_windows(self, chunks: np.ndarray, *, view=None) -> tuple:
        """The byte windows of ``chunks`` (``int64``: chunk ``k``'s bytes
        from its offset to the next chunk's) read as one batch:
        ``(buf, positions, begins, lengths)`` with window ``j`` at
        ``buf[positions[j]:positions[j] + lengths[j]]`` (``int64`` arrays).
        Runs of consecutive chunks are read as one range (a sequential scan
        is one read per run, however many chunks). With ``view`` (the
        source's :meth:`map_view`) nothing is read: the windows are in it."""
        offsets = self._get_index().offsets
        n = len(offsets)
        begins = offsets[chunks]
        nxt = chunks + 1
        ends = np.where(nxt < n, offsets[np.minimum(nxt, n - 1)], self.footer_offset)
        lengths = ends - begins
        if view is not None:
            return view, begins, begins, lengths
        steps = np.diff(chunks)
        uniq = chunks if (steps > 0).all() else np.unique(chunks)
        cut = np.flatnonzero(np.diff(uniq) != 1) + 1
        run_first = uniq[np.concatenate(([0], cut))]
        run_last = uniq[np.concatenate((cut - 1, [len(uniq) - 1]))]
        run_begin = offsets[run_first]
        run_end = np.where(run_last + 1 < n, offsets[np.minimum(run_last + 1, n - 1)], self.footer_offset)
        src = self._source
        if src is None:
            raise ValueError(f"{self.path}: I/O on a closed ArrayRecord file")
        try:
            buf, run_base = src.read_joined(run_begin, run_end)
        except (SourceTruncatedError, SourceChangedError) as e:
            at = getattr(e, "offset", None)
            raise _storage_error(e, self.path, int(run_begin[0]) if at is None else at, None, self.size) from None
        run = np.searchsorted(run_first, chunks, side="right") - 1
        positions = run_base[run] + (begins - run_begin[run])
        return buf, positions, begins, lengths

    def single_record_frames(self, indices, *, view=None):
        """For batched reads of ``group_size:1`` zstd files.

        ``indices`` (``int64`` array of valid local indices). Returns
        ``(sel, group, frames, buf)``: the positions in ``indices`` whose
        record is a zstd frame agreeing with the footer,
        ``group = (buffer, segments, sizes)`` for
        :func:`arrayfs.riegeli.simple.decode_zstd_frames`, and for
        :func:`arrayfs.riegeli.simple.check_frame_hashes` the located
        ``frames`` and ``buf``: the hashes are *not* checked yet. The other
        positions must be read with :meth:`read_record`. Requires
        ``group_size == 1``.
        """
        buf, positions, begins, lengths = self.read_chunk_windows(indices, view=view)
        frames = locate_zstd_frames(buf, positions, begins, lengths)
        agree = frames.sizes == self._get_index().decoded[indices[frames.sel]]
        if not agree.all():  # the general path names the disagreement
            frames = type(frames)(*(a[agree] for a in frames))
        return frames.sel, (buf, frames.segments, frames.sizes), frames, buf

    def group_by_chunk(self, indices) -> list:
        """``[(chunk, positions), ...]``: the positions in ``indices`` (an
        ``int64`` array of valid local indices, not empty) of the records of
        each chunk they touch, chunks in increasing order."""
        idx = self._get_index()
        g = idx.group_size
        chunks = indices // g if g is not None else np.searchsorted(idx.first, indices, side="right") - 1
        order = np.argsort(chunks, kind="stable")
        cuts = np.flatnonzero(np.diff(chunks[order])) + 1
        return [(int(chunks[grp[0]]), grp) for grp in np.split(order, cuts)]

    def read_records(self, indices, *, decode=None, threads: int = 0) -> list[bytes]:
        """Records at ``indices`` (``int64`` array of valid local indices), in
        that order, as ``list[bytes]``; each chunk involved is read and
        decoded once, and the chunks' bytes are fetched as one batch.

        ``decode(k)`` replaces :meth:`decode_chunk` for multi-record chunks
        (the dataset passes its cached one). With ``threads > 1``, a share
        of a batch of one-record zstd chunks is decompressed on a helper
        thread in one C call while this thread checks the hashes and
        decompresses the rest (:func:`helper_pool`); other chunks are
        decoded on the calling thread and callers split large batches of
        them across threads.
        """
        if len(indices) == 0:
            return []
        idx = self._get_index()
        if idx.group_size == 1:
            read = self.read_record
            if len(indices) < 16:
                return [read(i) for i in indices.tolist()]
            if len(indices) > _SCAN_BLOCK:
                # A long scan (read_all) goes a block at a time: the bytes
                # held at once stay bounded whatever the file size.
                out = []
                for a in range(0, len(indices), _SCAN_BLOCK):
                    out.extend(self.read_records(indices[a : a + _SCAN_BLOCK], threads=threads))
                return out
            src = self._source
            view = src.map_view() if src is not None else None
            try:
                sel, group, frames, buf = self.single_record_frames(indices, view=view)
                verify = self.verify
                recs, ok = decode_zstd_frames([group], helper=helper_pool(threads),
                                              check=lambda: check_frame_hashes(buf, frames, verify=verify))
                del group, frames, buf
            finally:
                if view is not None:
                    src.end_view()
            out = place(len(indices), sel, recs, ok)
            for j in np.flatnonzero(out == None).tolist():  # noqa: E711 (elementwise, in numpy)
                out[j] = read(int(indices[j]))  # other codecs, or the precise error
            return out.tolist()
        return self.read_grouped(indices, decode=decode)

    def read_grouped(self, indices, *, decode=None, pool=None, workers: int = 2) -> list[bytes]:
        """Records at ``indices`` (``int64`` array of valid local indices) of
        a file of multi-record chunks, in that order: each chunk involved is
        decoded once, in place from the map, and with no ``decode`` only as
        far as the last record wanted from it. With ``pool`` (an executor:
        the hash and the codec release the GIL), a local file's chunks are
        shared out as a scan's are (:func:`share_out`, ``workers`` threads
        with this one, each decoding a chunk and cutting its records), an
        object store's are decoded on ``pool``; a run of consecutive
        records goes to :meth:`_read_run`. ``decode(k)`` replaces the
        decoding (the dataset's cached one)."""
        n = len(indices)
        if decode is None and n > 1 and int(indices[-1]) - int(indices[0]) == n - 1 \
                and bool((np.diff(indices) == 1).all()):
            return self._read_run(int(indices[0]), int(indices[-1]) + 1, pool, workers)
        groups = self.group_by_chunk(indices)
        first = self._get_index().chunk_first() if self.group_size is None else None
        g = self.group_size
        starts = [int(first[k]) if first is not None else k * g for k, _ in groups]
        locals_ = [indices[grp] - a for (_, grp), a in zip(groups, starts)]

        def cut(j: int, values, offsets):
            if len(offsets) == 2 and isinstance(values, bytes):
                return [values] * len(locals_[j])
            local = locals_[j]
            get = values.__getitem__ if isinstance(values, bytes) else memoryview(values).__getitem__
            recs = list(map(get, map(slice, offsets[local].tolist(), offsets[local + 1].tolist())))
            return recs if isinstance(values, bytes) else list(map(bytes, recs))

        if decode is not None:
            decoded = (cut(j, *decode(k)) for j, (k, _) in enumerate(groups))
        else:
            uptos = [int(loc.max()) + 1 for loc in locals_]
            dec = self.decode_chunk_in_place
            if pool is not None and len(groups) > 1 and not self.remote:
                # As a scan (_scan_chunks): each thread decodes a chunk and
                # cuts its records, the headers checked beforehand.
                maps = self._checked_views([k for k, _ in groups])
                decoded = share_out(len(groups), lambda j, out: cut(j, *dec(groups[j][0], uptos[j],
                                                                            checked_map=maps[j], out=out)), workers)
            elif pool is not None and len(groups) > 1:
                decoded = pool.map(lambda j: cut(j, *dec(groups[j][0], uptos[j])), range(len(groups)))
            else:
                decoded = (cut(j, *dec(k, uptos[j])) for j, (k, _) in enumerate(groups))
        out = np.empty(len(indices), dtype=object)
        for (_, grp), recs in zip(groups, decoded):
            r = np.empty(len(recs), dtype=object)
            r[:] = recs
            out[grp] = r
        return out.tolist()

    def iter_range(self, start: int, stop: int, workers: int = 1):
        """Records ``start .. stop - 1`` in order, read a block at a time on
        the calling thread with the threads a scan uses (``workers``, this
        one included): one-record chunks ``_ITER_SINGLES`` at a time, a
        share of each block decompressed on the helper thread in one C call
        (:meth:`read_records`); larger chunks two per thread at a time,
        shared out as in a scan (:meth:`_read_run`). Holds one block's
        records at a time. On an object store, the caller fetches the bytes
        ahead (:meth:`prefetch_records`), or a block of one-record chunks
        waits for its requests; an object store's larger chunks decode on a
        pool instead, a few blocks ahead (:meth:`iter_ahead`, where
        :meth:`decodes_ahead` says).

        Measured (docs/benchmarks.md): pool threads each reading a block of
        one-record chunks side by side hand the GIL over at every 1 KB
        call, and iterate 2-2.5x slower than this thread alone."""
        g = self.group_size
        if g == 1:
            for a in range(start, stop, _ITER_SINGLES):
                yield from self.read_records(np.arange(a, min(a + _ITER_SINGLES, stop), dtype=np.int64),
                                             threads=workers)
            return
        step = max(g or 1, _ITER_MIN)
        if workers <= 1 or self.transposed:
            # The transposed decoder holds the GIL in its scans: threads
            # would only wait on each other.
            for a in range(start, stop, step):
                yield from self.read_records(np.arange(a, min(a + step, stop), dtype=np.int64))
            return
        step *= 2 * workers
        pool = helper_pool(workers)
        for a in range(start, stop, step):
            yield from self._read_run(a, min(a + step, stop), pool, workers)

    def decodes_ahead(self, workers: int) -> bool:
        """Whether an in-order read of this file goes through
        :meth:`iter_ahead` rather than :meth:`iter_range`: an object
        store's multi-record chunks, with more than one worker (the
        transposed decoder holds the GIL, and one-record chunks are read on
        the calling thread)."""
        return self.remote and self.group_size != 1 and workers > 1 and not self.transposed

    def iter_ahead(self, start: int, stop: int, pool, depth: int):
        """Records ``start .. stop - 1`` in order, read by :meth:`read_records`
        on ``pool`` in blocks of at least ``_AHEAD_BLOCK`` records (whole
        chunks), at most ``depth`` blocks ahead of the one the caller
        consumes: an object store's larger chunks, whose bytes the caller
        fetches ahead (:meth:`prefetch_records`), decode on both cores while
        the bytes after them arrive. Pending reads are cancelled when the
        caller stops early."""
        step = max(self.group_size or 1, _AHEAD_BLOCK)
        ranges = [(a, min(a + step, stop)) for a in range(start, stop, step)]

        def read(r):
            return self.read_records(np.arange(r[0], r[1], dtype=np.int64))

        pending = collections.deque(pool.submit(read, r) for r in ranges[:depth])
        nxt = depth
        try:
            while pending:
                done = pending.popleft()
                if nxt < len(ranges):
                    pending.append(pool.submit(read, ranges[nxt]))
                    nxt += 1
                yield from done.result()
        finally:
            for p in pending:
                p.cancel()

    def _read_run(self, start: int, stop: int, pool=None, workers: int = 1) -> list[bytes]:
        """:meth:`read_grouped` of the records ``start .. stop - 1`` (a
        scan: ``read_all``, an iteration block): the chunks come in order
        and each one's records are one run, so they are cut straight into
        lists (no sort by chunk, no object arrays).

        With ``pool``, a local file's chunks are shared out by
        :meth:`_scan_chunks`; an object store's decode on the pool, at most
        ``workers`` chunks ahead of the one this thread takes (only pool
        threads read: the store's read-ahead sees ``workers`` streams)."""
        tasks = []
        for k in range(self.chunk_of(start), self.chunk_of(stop - 1) + 1):
            first, end = self.chunk_records(k)
            tasks.append((k, min(end, stop) - first, max(start - first, 0)))
        decode = self.decode_chunk_in_place

        def piece(task, checked_map=None, out=None) -> list:
            k, upto, a = task
            values, offsets = decode(k, upto, checked_map=checked_map, out=out)
            if len(offsets) == 2 and isinstance(values, bytes):
                return [values]
            return split_records(values, offsets, a, upto)

        out = []
        if pool is None or len(tasks) == 1:
            for task in tasks:
                out.extend(piece(task))
            return out
        if not self.remote:
            for recs in self._scan_chunks(tasks, piece, workers):
                out.extend(recs)
            return out
        # An object store: the whole run is read ahead within the process's
        # budget, not only as far as the pool's tasks (two streams of 1 MB
        # reads: 207 MB/s, against 314 MB/s read ahead, on a 100 MB shard).
        fetch = self.prefetch_records([(start, stop)])
        try:
            ahead = max(1, workers)
            pending = collections.deque(pool.submit(piece, t) for t in tasks[:ahead])
            nxt = ahead
            while pending:
                recs = pending.popleft().result()
                if nxt < len(tasks):
                    pending.append(pool.submit(piece, tasks[nxt]))
                    nxt += 1
                out.extend(recs)
        finally:
            fetch.close()
        return out

    def headers_checked(self, view, chunks) -> np.ndarray:
        """For a read of ``chunks`` (``int64`` array or ``list[int]``)
        through ``view`` (the file's map): a ``bool`` array, per chunk,
        telling whether its chunk header and every block header within its
        span hash-check (one C call each, made here: see
        :func:`arrayfs.riegeli.header.chunk_headers_intact`). A mismatch
        leaves the chunk to the checked path, which raises the precise
        error."""
        offsets = self._get_index().offsets
        ks = np.asarray(chunks, dtype=np.int64)
        begins = offsets[ks]
        nxt = ks + 1
        ends = np.where(nxt < len(offsets), offsets[np.minimum(nxt, len(offsets) - 1)], self.footer_offset)
        at = begins + np.where(begins % BLOCK_SIZE == 0, BLOCK_HEADER_SIZE, 0)
        ok = chunk_headers_intact(view, at, BLOCK_SIZE)
        positions, owner = block_boundaries(begins, ends)
        bad = owner[~block_headers_intact(view, positions)]
        ok[bad] = False
        return ok

    def _checked_views(self, chunks) -> list:
        """Per chunk of ``chunks``: the file's map when its headers were
        checked through it (:meth:`headers_checked`), else ``None`` (a file
        read with ``pread``, or a header that failed)."""
        src = self._source
        view = src.map_view() if src is not None else None
        if view is None:
            return [None] * len(chunks)
        try:
            ok = self.headers_checked(view, chunks)
        finally:
            src.end_view()
        return [view if c else None for c in ok.tolist()]

    def _scan_chunks(self, tasks: list, piece, workers: int) -> list:
        """``[piece(task, checked_map, out) for task in tasks]`` for a scan
        of a local file, shared out by :func:`share_out`.

        Measured on a scan of 1 MiB chunks (docs/benchmarks.md): a pool
        task per chunk, the calling thread collecting them, ran 1.6-2x the
        two-thread floor's time. What closes the gap: the calling thread
        works (no hand-off per chunk); a mapped file's small hashes (block
        and chunk headers) are checked here before the threads start, as
        each C call lets go of the GIL and the other thread, cutting
        records, may then keep it for a millisecond; and each thread joins
        chunks into memory of its own, reused (new memory per chunk paid
        page faults)."""
        maps = self._checked_views([t[0] for t in tasks])
        return share_out(len(tasks), lambda j, out: piece(tasks[j], maps[j], out), workers)


def share_out(n: int, run, workers: int) -> list:
    """``[run(j, out) for j in range(n)]`` on the calling thread and up to
    ``workers - 1`` threads of :func:`helper_pool`, each taking the next
    ``j`` nobody has taken, with ``out`` a :class:`JoinBuffer` of its own.
    Raises the error of the first ``j`` that fails (the threads stop taking
    new ones; all before it are done, as they were taken first).

    The threads are the process's helpers, not a pool per reader: a thread
    that lives on keeps its allocator arena warm (a new thread per reader
    took 3x the page faults). A helper that has not started when the
    calling thread runs out of work is cancelled, not waited for, so no
    call waits on a queue behind other callers."""
    results = [None] * n
    claim = itertools.count().__next__
    stop = []

    def work():
        out = JoinBuffer()
        while not stop:
            j = claim()
            if j >= n:
                return
            try:
                results[j] = run(j, out)
            except BaseException as e:  # raised below, in order
                results[j] = e
                stop.append(j)
                return

    pool = helper_pool(workers) if n > 1 else None
    helpers = [pool.submit(work) for _ in range(min(workers - 1, n - 1))] if pool is not None else []
    try:
        work()
    finally:
        stop.append(None)
        for h in helpers:
            if not h.cancel():
                h.result()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    return results
