"""Local files: a memory map where nothing can truncate the file, else ``pread``.

A shard truncated or rewritten in place while a reader has it open is an
ordinary accident (``rsync --inplace``, ``cp`` over a file, a foreign
writer). Reads through a memory map of such a file kill the process with
``SIGBUS``; ``pread`` returns short instead, and an ``fstat`` after each
read catches a rewrite that kept the size. A read therefore returns the
file's bytes as they were at open, or raises.

A file is mapped only when it cannot change while mapped (see
:mod:`.mapping`: a read-only file system, an immutable file, or a read
lease whose break this process handles); :attr:`LocalFile.map_mode` says
which. Mapped reads are copies out of the map (no system call, no
identity check: nothing can have changed), and :meth:`LocalFile.map_view`
lends the map itself to the batch and scan paths.

Descriptors come from the process-wide :data:`.handles.POOL`, so any number
of files can be open while only a bounded number of descriptors are.
"""

from __future__ import annotations

import errno
import os
import stat

import numpy as np

from .base import ByteSource, SourceChangedError, SourceTruncatedError
from .handles import POOL
from .mapping import Lease, choose_mode, give_slot, lease_refused, map_file, map_policy, slots_left, take_slot

__all__ = ["LocalFile"]

# O_NONBLOCK: opening a FIFO (a shard glob can match one) must not wait for
# a writer; reads of a regular file ignore it.
_O_FLAGS = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0)
# Ranges closer than this are read with one pread: a syscall costs more
# than copying a few KiB.
_COALESCE_GAP = 8 << 10


def _identity(st) -> tuple:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _regular(st, path: str) -> None:
    """Raise unless ``st`` is a regular file's: a FIFO, socket or device
    has no size to read an ArrayRecord file from (and a FIFO's reads would
    wait for a writer forever).

    Raises:
        IsADirectoryError: a directory.
        OSError: ``EINVAL`` for any other kind of file, naming ``path``.
    """
    if stat.S_ISREG(st.st_mode):
        return
    if stat.S_ISDIR(st.st_mode):
        raise IsADirectoryError(errno.EISDIR, "is a directory, not an ArrayRecord file", path)
    kind = {stat.S_IFIFO: "a FIFO", stat.S_IFSOCK: "a socket", stat.S_IFCHR: "a character device",
            stat.S_IFBLK: "a block device"}.get(stat.S_IFMT(st.st_mode), "not a regular file")
    raise OSError(errno.EINVAL, f"{kind}, not a regular file: not an ArrayRecord file", path)


class LocalFile(ByteSource):
    """One local file (see :class:`.base.ByteSource`).

    Args:
        path: the file (``str``).
        check: ``fstat`` after every read to catch a file rewritten in place
            with the same size (a read costs one more system call).
        pool: the descriptor pool (default: the process-wide one).
        mmap: which mapping modes may be used (see
            :func:`.mapping.map_policy`; default ``$ARRAYFS_MMAP`` or
            ``auto``; ``"never"``: always ``pread``).

    Attributes:
        map_mode: ``"readonly-fs"``, ``"immutable"`` or ``"lease"`` while
            the file is read through a map, else ``"pread"`` (a broken
            lease turns it to ``"pread"``).

    Raises:
        OSError: the file cannot be opened (``FileNotFoundError``, ...),
            with the path as ``filename``.
    """

    def __init__(self, path: str, *, check: bool = True, pool=POOL, mmap: str | None = None):
        self.name = path
        self.check_reads = check
        self._pool = pool
        self._desc = pool.register()  # this file's descriptor, leased from the pool
        self._map = None  # a map no one can truncate (read-only fs, immutable file)
        self._lease = None
        self.map_mode = "pread"
        fd = pool.open(path, _O_FLAGS)
        try:
            st = os.fstat(fd)
            _regular(st, path)
            self.size = st.st_size
            self.mtime_ns = st.st_mtime_ns
            self.identity = _identity(st)
            if self._try_map(fd, st, mmap):
                return
        except BaseException:
            os.close(fd)
            raise
        pool.adopt(self._desc, fd)

    def _try_map(self, fd: int, st, policy) -> bool:
        """Map the file when :mod:`.mapping` allows and the budget of
        mapped files (half the pool's bound: a map holds descriptors the
        pool cannot close) has room; ``True`` when ``fd`` was taken over by
        a lease."""
        limit = max(1, self._pool.max_open // 2)
        if not slots_left(limit):
            return False  # the budget is spent: no system call to choose a mode
        mode = choose_mode(fd, st, map_policy(policy))
        if mode is None or not take_slot(limit):
            return False
        self._slot = True
        try:
            if mode != "lease":
                self._map = map_file(fd, st.st_size)
                self.map_mode = mode
                return False
            lease = Lease(fd, st.st_size)
        except OSError as e:
            self._give_slot()
            # Out of descriptors (before Python 3.13 a map duplicates its
            # file's) or address space: no map, and the pool's pread path,
            # which gives back idle descriptors on EMFILE, reads the file.
            if mode != "lease" or lease_refused(e) or e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOMEM):
                return False
            raise
        except ValueError:
            self._give_slot()
            return False
        if _identity(os.fstat(fd)) != self.identity:
            # Changed between the fstat and the lease: the pread path's
            # identity check reports it on the first read.
            lease.release(close_fd=False)
            self._give_slot()
            return False
        self._lease = lease
        self.map_mode = "lease"
        return True

    def _give_slot(self) -> None:
        if getattr(self, "_slot", False):
            self._slot = False
            give_slot()

    def _mapped(self, offset: int, length: int):
        """Bytes ``[offset, offset + length)`` copied out of the map, or
        ``None`` when the file is not (or no longer) mapped."""
        m = self._map
        if m is not None:
            return m[offset : offset + length]
        lease = self._lease
        if lease is None:
            return None
        data = lease.copy(offset, offset + length)
        if data is None:
            self._lease_gone()
        return data

    def map_view(self):
        """The whole file's map for zero-copy reads, held until
        :meth:`end_view`, or ``None`` when the file is read with ``pread``.
        Slices of it must not outlive :meth:`end_view`."""
        if self._map is not None:
            return self._map
        lease = self._lease
        if lease is None:
            return None
        m = lease.enter()
        if m is None:
            self._lease_gone()
        return m

    def _lease_gone(self) -> None:
        """Read with pread from now on; in a forked child, through the
        descriptor the lease was on (the file may have left its path)."""
        self.map_mode = "pread"
        lease = self._lease
        fd = lease.take_orphan() if lease is not None else -1
        if fd >= 0:
            self._pool.adopt(self._desc, fd)

    def end_view(self) -> None:
        if self._map is None and self._lease is not None:
            self._lease.leave()

    def _reopen(self) -> int:
        if self._desc.closing:
            raise ValueError(f"{self.name}: read from a closed file")
        try:
            fd = self._pool.open(self.name, _O_FLAGS)
        except FileNotFoundError:
            raise SourceChangedError("the file was removed since it was opened", path=self.name) from None
        try:
            st = os.fstat(fd)
            if _identity(st) != self.identity:
                raise self._changed(st)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _changed(self, st) -> SourceChangedError:
        if st.st_ino != self.identity[1] or st.st_dev != self.identity[0]:
            what = "replaced by another file"
        elif st.st_size < self.size:
            what = f"truncated from {self.size} to {st.st_size} bytes"
        elif st.st_size != self.size:
            what = f"resized from {self.size} to {st.st_size} bytes"
        else:
            what = "modified (its mtime changed)"
        return SourceChangedError(
            f"the file was {what} since it was opened",
            path=self.name, truncated=st.st_size < self.size, size=st.st_size,
        )

    def _short(self, offset, length, got, fd) -> Exception:
        try:
            now = os.fstat(fd).st_size
        except OSError:
            now = offset + got
        return SourceTruncatedError(
            f"the file ends at byte {now}, a read of {length} bytes at byte {offset} needs "
            f"{offset + length} (it was {self.size} bytes when opened: truncated since)",
            path=self.name, offset=offset, length=length, size=now,
        )

    def read(self, offset: int, length: int) -> bytes:
        if offset < 0 or length < 0 or offset + length > self.size:
            self._check_range(offset, length)
        lease = self._lease
        if lease is not None:
            # Lease.copy inlined: this is the hot path of single-record
            # reads. acquire/release under try costs about 0.1 us less than `with`.
            lock = lease._lock
            lock.acquire()
            try:
                if lease.live:
                    return lease.map[offset : offset + length]
            finally:
                lock.release()
        if self.map_mode != "pread":
            data = self._mapped(offset, length)
            if data is not None:
                return data
        pool, desc = self._pool, self._desc
        fd = pool.acquire(desc, self._reopen)
        try:
            data = os.pread(fd, length, offset)
            if len(data) != length:
                raise self._short(offset, length, len(data), fd)
            if self.check_reads:
                st = os.fstat(fd)
                if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
                    raise self._changed(st)
        finally:
            pool.release(desc)
        return data

    def read_ranges(self, ranges) -> list:
        """One ``pread`` per range, or per group of ranges less than 8 KiB
        apart (see the base class); one ``fstat`` for the whole batch."""
        if not ranges:
            return []
        if self.map_mode != "pread":
            size = self.size
            for a, b in ranges:
                if a < 0 or b < a or b > size:
                    self._check_range(a, b - a)
            m = self._map
            if m is not None:
                return [m[a:b] for a, b in ranges]
            lease = self._lease
            got = lease.copies(ranges) if lease is not None else None
            if got is not None:
                return got
            self._lease_gone()
        size = self.size
        gap = _COALESCE_GAP
        starts, ends, member = [], [], []  # groups, and each range's group
        last_a = -1
        end = -gap - 1
        for a, b in ranges:
            if a < 0 or b < a or b > size:
                self._check_range(a, b - a)
            if a < last_a:
                return self._read_unsorted(ranges)
            last_a = a
            if a <= end + gap:
                if b > end:
                    end = ends[-1] = b
            else:
                starts.append(a)
                ends.append(b)
                end = b
            member.append(len(starts) - 1)
        pool, desc = self._pool, self._desc
        fd = pool.acquire(desc, self._reopen)
        try:
            pread = os.pread
            datas = [pread(fd, e - a, a) for a, e in zip(starts, ends)]
            if sum(map(len, datas)) != sum(ends) - sum(starts):  # a pread never returns more
                for a, e, d in zip(starts, ends, datas):
                    if len(d) != e - a:
                        raise self._short(a, e - a, len(d), fd)
            if self.check_reads:
                st = os.fstat(fd)
                if st.st_size != self.size or st.st_mtime_ns != self.mtime_ns:
                    raise self._changed(st)
        finally:
            pool.release(desc)
        if len(datas) == len(ranges):
            return datas
        out = []
        views = [memoryview(d) for d in datas]
        for (a, b), g in zip(ranges, member):
            base = starts[g]
            out.append(views[g][a - base : b - base])
        return out

    def read_joined(self, starts, ends) -> tuple:
        """See :meth:`.base.ByteSource.read_joined`: ranges less than 8 KiB
        apart are read with one ``pread`` and share the buffer."""
        n = len(starts)
        if n == 0:
            return b"", np.zeros(0, dtype=np.int64)
        if self._map is not None and (starts >= 0).all() and (ends <= self.size).all() and (ends >= starts).all():
            return self._map, np.asarray(starts, dtype=np.int64).copy()
        if (starts < 0).any() or (ends < starts).any() or (ends > self.size).any():
            j = int(np.flatnonzero((starts < 0) | (ends < starts) | (ends > self.size))[0])
            self._check_range(int(starts[j]), int(ends[j] - starts[j]))
        reach = np.maximum.accumulate(ends)
        new = np.ones(n, dtype=bool)
        new[1:] = starts[1:] > reach[:-1] + _COALESCE_GAP
        heads = np.flatnonzero(new)
        g_start = starts[heads]
        g_end = reach[np.append(heads[1:] - 1, n - 1)]
        datas = self.read_ranges(list(zip(g_start.tolist(), g_end.tolist())))
        g_base = np.zeros(len(heads), dtype=np.int64)
        if len(heads) > 1:
            np.cumsum((g_end - g_start)[:-1], out=g_base[1:])
        group = np.cumsum(new) - 1
        positions = g_base[group] + (starts - g_start[group])
        buf = datas[0] if len(datas) == 1 else b"".join(datas)
        return buf, positions

    def _read_unsorted(self, ranges) -> list:
        order = sorted(range(len(ranges)), key=lambda j: ranges[j][0])
        datas = self.read_ranges([ranges[j] for j in order])
        out = [None] * len(ranges)
        for j, d in zip(order, datas):
            out[j] = d
        return out

    def check(self) -> None:
        if self._map is not None or (self._lease is not None and self._lease.live):
            return  # nothing can change it while it is mapped
        fd = self._pool.acquire(self._desc, self._reopen)
        try:
            st = os.fstat(fd)
        finally:
            self._pool.release(self._desc)
        if _identity(st) != self.identity:
            raise self._changed(st)

    def pin(self) -> bool:
        """Keep the descriptor open (never evicted) until :meth:`close`, so
        that reads go on after the file is removed or replaced at its path.
        Returns ``False`` when the descriptor was already closed. A mapped
        file needs no descriptor: the map keeps it."""
        if self._map is not None or (self._lease is not None and self._lease.live):
            return True
        if self._lease is not None:
            self._lease_gone()
        return self._pool.pin(self._desc)

    def close(self) -> None:
        if not self._desc.closing:
            m, self._map = self._map, None
            lease, self._lease = self._lease, None
            if m is not None:
                try:
                    m.close()
                except (BufferError, ValueError):  # a view is still exported: unmapped when it goes
                    pass
            if lease is not None:
                lease.release()
            self._give_slot()
            self._pool.discard(self._desc)

    @property
    def closed(self) -> bool:
        return self._desc.closing

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
