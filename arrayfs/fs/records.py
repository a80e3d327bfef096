"""File contents for the core: each big record decoded once, errors as ``EIO``.

The kernel reads a big file in requests of at most 1 MiB, several at once
(read-ahead), and they land in different worker processes; a 200 MiB
record must still be read, hashed and decompressed once. A record of more
than 64 KiB is kept decoded in a per-process LRU keyed by its inode (whose
contents never change), decoded once however many threads ask; one of more
than :data:`SHARED_MIN` is decoded by one worker for all, into a file in a
private tmpfs directory (one decoder per key stripe, ``flock``; published
by rename), which the others map. Pages go to the kernel from the decoded
buffer or the mapping itself. A record leaves both caches once its last
bytes were sent (the kernel's page cache has it then).
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import logging
import mmap
import os
import shutil
import tempfile
import threading

import numpy as np

from ..errors import ArrayRecordError
from ..storage.lru import BoundedLRU
from .view import RECORD, Node, ViewSnapshot

__all__ = ["Records", "oserror", "address_of", "DECODED_CACHE_BYTES", "SHARED_MIN", "shared_directory"]

log = logging.getLogger("arrayfs.fs")

# Decoded records kept per process (bytes). Records of at most _SMALL are
# never kept; one bigger than the budget is kept alone.
DECODED_CACHE_BYTES = 64 << 20
_SMALL = 64 << 10
# Records bigger than this are decoded by one worker process for all.
SHARED_MIN = 4 << 20
_STRIPES = 64


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def address_of(data) -> int:
    """Address of the buffer of ``data`` (``bytes`` or a numpy array), which
    the caller keeps alive while the address is used."""
    if isinstance(data, np.ndarray):
        return data.ctypes.data
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


def shared_directory() -> str:
    """A new private directory on tmpfs (``/dev/shm`` where there is one)
    for records shared between worker processes; the caller removes it."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return tempfile.mkdtemp(prefix="arrayfs-", dir=base)


class Records:
    """Whole contents of files, decoded once while cached.

    Args:
        max_bytes: bound of each process's LRU of decoded records (bytes),
            and of the records kept in ``directory``.
        directory: the tmpfs directory shared by the worker processes
            (see :func:`shared_directory`), or ``None``: no sharing.
    """

    def __init__(self, max_bytes: int = DECODED_CACHE_BYTES, directory: str | None = None):
        self.max_bytes = max_bytes
        self.directory = directory
        self.decodes = 0
        self.after_fork()

    def after_fork(self) -> None:
        """Start this process's caches empty (a forked worker)."""
        self._lru = BoundedLRU(self.max_bytes, keep_newest=True)
        self._lock = threading.Lock()
        self._inflight: dict = {}
        self._stripes: dict = {}

    def get(self, snap: ViewSnapshot, node: Node, what) -> tuple:
        """``(data, address)`` of file ``node`` of ``snap``: ``address`` is
        the buffer's for big records and 0 for small ones (passed as
        ``bytes``). ``what`` names the file in the log line of an error.
        Raises ``OSError(EIO)`` for a corrupt record or a shard that cannot
        be read (logged with shard, chunk and byte offset), ``EISDIR`` for a
        directory."""
        try:
            if node.kind == RECORD and snap.largest_record(node.shard) > _SMALL:
                key = snap.record_ino(node.shard, node.local)
                item = self._lru.get(key)
                if item is not None:
                    return item
                size = snap.record_size(node.shard, node.local)
                if size > _SMALL:
                    return self._single_flight(key, size, snap, node)
            return snap.read(node), 0
        except IsADirectoryError:
            raise oserror(errno.EISDIR) from None
        except (ArrayRecordError, OSError, ValueError) as e:
            # OSError: the shard could not be (re)opened (EMFILE, a file
            # deleted before it was reopened); ValueError: its snapshot was
            # retired meanwhile. The reader gets EIO, the log says which shard.
            log.error("EIO reading %s: %s: %s", what, snap.describe(node), e)
            raise oserror(errno.EIO) from None

    def _single_flight(self, key, size, snap, node):
        with self._lock:
            flight = self._inflight.get(key)
            leader = flight is None
            if leader:
                flight = self._inflight[key] = [threading.Event(), None, None]
        if not leader:
            flight[0].wait()
            if flight[2] is not None:
                raise flight[2]
            return flight[1]
        try:
            item = self._lru.get(key)  # decoded while this thread looked
            if item is None:
                stream = size > SHARED_MIN and snap.alone_in_chunk(node)
                if self.directory and size > SHARED_MIN:
                    item = self._shared(key, size, snap, node, stream)
                else:
                    item = _with_address(self._decode(size, snap, node, stream))
                self._lru.put(key, item, size)
            flight[1] = item
            return item
        except BaseException as e:
            flight[2] = e
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight[0].set()

    def _decode(self, size, snap, node, stream, out=None):
        self.decodes += 1
        if not stream:
            return snap.read(node)
        out = mmap.mmap(-1, size) if out is None else out  # not a bytearray: no zeroing pass first
        snap.read_into(node, out)
        return out

    def _path(self, key) -> str:
        return os.path.join(self.directory, f"{key:x}")

    def _shared(self, key, size, snap, node, stream):
        """The record from the shared directory, decoded by this process
        (straight into the file, when alone in its chunk) when no other
        has published it: one decoder per key stripe."""
        path = self._path(key)
        item = _map(path, size)
        if item is not None:
            return item
        stripe = key % _STRIPES
        fd = self._stripes.get(stripe)
        if fd is None:
            fd = self._stripes[stripe] = os.open(os.path.join(self.directory, f"lock-{stripe}"),
                                                 os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            item = _map(path, size)
            if item is not None:
                return item
            tmp = f"{path}.{os.getpid()}"
            try:
                out = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
                os.ftruncate(out, size)
                m = mmap.mmap(out, size)
            except OSError as e:  # tmpfs full: decode for this process alone
                log.warning("cannot share a decoded record (%s): %s", path, e)
                _unlink(tmp)
                return _with_address(self._decode(size, snap, node, stream))
            # Making tmpfs pages is slow page by page: a thread allocates
            # them ahead of the decoder, while it waits for bytes to read.
            ahead = threading.Thread(target=_allocate, args=(out, size), daemon=True)
            ahead.start()
            try:
                data = self._decode(size, snap, node, stream, out=m)
                if data is not m:
                    m[:] = data
                os.rename(tmp, path)
            except BaseException:
                _unlink(tmp)
                raise
            finally:
                ahead.join()
                os.close(out)
            self._trim(path)
            return _with_address(m)
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)

    def _trim(self, newest: str) -> None:
        """Unlink the oldest shared records past the bound (not ``newest``)."""
        entries = [e for e in os.scandir(self.directory) if not e.name.startswith("lock-") and "." not in e.name]
        stats = sorted(((e.stat().st_mtime_ns, e.stat().st_size, e.path) for e in entries), reverse=True)
        total = 0
        for _, nbytes, p in stats:
            total += nbytes
            if total > self.max_bytes and p != newest:
                _unlink(p)

    def read_to_end(self, snap: ViewSnapshot, node: Node) -> None:
        """The last bytes of record ``node`` were sent: the kernel has it
        in its page cache, so the decoded copies can go."""
        key = snap.record_ino(node.shard, node.local)
        self._lru.pop(key)
        if self.directory:
            _unlink(self._path(key))

    def close(self) -> None:
        self._lru.clear()
        for fd in self._stripes.values():
            os.close(fd)
        self._stripes.clear()

    def remove_directory(self) -> None:
        """Remove the shared directory (the coordinator, at unmount)."""
        if self.directory:
            shutil.rmtree(self.directory, ignore_errors=True)


def _with_address(data) -> tuple:
    """``(data, address)``: bytes as they are, other buffers (a
    ``bytearray``, a mapping) as a numpy array viewing them."""
    if not isinstance(data, bytes):
        data = np.frombuffer(data, dtype=np.uint8)
    return data, address_of(data)


def _map(path: str, size: int):
    """``(array, address)`` of the published record at ``path``, mapped
    read-only, or ``None`` when there is none (of ``size`` bytes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        if os.fstat(fd).st_size != size:
            return None
        m = mmap.mmap(fd, size, prot=mmap.PROT_READ)
    finally:
        os.close(fd)
    # The array keeps the mapping alive as long as anyone holds it.
    data = np.frombuffer(m, dtype=np.uint8)
    return data, data.ctypes.data


def _allocate(fd: int, size: int, step: int = 16 << 20) -> None:
    try:
        for off in range(0, size, step):
            os.posix_fallocate(fd, off, min(step, size - off))
    except OSError:  # the decoder's own page faults make them then
        pass


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
