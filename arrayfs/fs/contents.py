"""File contents for the daemons: one decode per record, errors as ``EIO``.

Both daemons (:mod:`arrayfs.fs.daemon` over libfuse 3's low-level API, and
:mod:`arrayfs.fs.highlevel` over mfusepy) answer a read request with a slice
of the whole decoded file. The kernel splits a big read into requests of at
most ``max_read`` bytes (1 MiB with libfuse 3), so a record of 200 MiB would
be decoded 200 times; :class:`Contents` decodes a record bigger than one
request once and keeps it in a small LRU, keyed by the record's inode (whose
contents never change), with single-flight decoding: concurrent requests for
one record wait for one decode. A record leaves the LRU once its last bytes
were sent (the kernel's page cache has it then).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading

from ..errors import ArrayRecordError
from ..storage.lru import BoundedLRU
from .view import RECORD, Node, ViewSnapshot

__all__ = ["Contents", "DECODED_CACHE_BYTES", "address_of", "oserror"]

log = logging.getLogger("arrayfs.fs")

# Decoded records kept (bytes). Records of at most _SMALL_RECORD are never
# kept; a record bigger than the budget is kept alone. Once a record has
# been read whole the kernel serves it from its page cache, so the LRU only
# has to hold records while they are being read.
DECODED_CACHE_BYTES = 64 << 20
_SMALL_RECORD = 64 << 10


def oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def address_of(data: bytes) -> int:
    """Address of the buffer of ``data`` (kept alive by the caller)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


class _Decoded:
    """Decoded records in a :class:`BoundedLRU` (the newest kept whatever
    its size), decoded once however many requests wait for one."""

    def __init__(self, max_bytes: int):
        self._lru = BoundedLRU(max_bytes, keep_newest=True)
        self._lock = threading.Lock()
        self._inflight: dict = {}
        self.decodes = 0

    def get(self, key, decode):
        """``(data, address)`` for ``key``, calling ``decode()`` at most once
        while the entry stays cached. Exceptions of ``decode`` propagate to
        every waiter."""
        item = self._lru.get(key)
        if item is not None:
            return item
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
                data = decode()
                item = (data, address_of(data))
                self.decodes += 1
                self._lru.put(key, item, len(data))
            flight[1] = item
            return item
        except BaseException as e:
            flight[2] = e
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight[0].set()

    def cached(self, key):
        """``(data, address)`` when ``key`` is cached, else ``None``."""
        return self._lru.get(key)

    def discard(self, key) -> None:
        self._lru.pop(key)

    def clear(self) -> None:
        self._lru.clear()


class Contents:
    """Whole contents of files, decoded once while cached.

    Args:
        max_bytes: bound of the LRU of decoded big records (bytes).
    """

    def __init__(self, max_bytes: int = DECODED_CACHE_BYTES):
        self._decoded = _Decoded(max_bytes)

    @property
    def decodes(self) -> int:
        """Big records decoded so far (for tests)."""
        return self._decoded.decodes

    def get(self, snap: ViewSnapshot, node: Node, what) -> tuple[bytes, int]:
        """``(data, address)`` of file ``node`` of ``snap``: ``address`` is
        the buffer's address for big records and 0 for small ones (their
        ``bytes`` object is passed as is: taking the address costs more than
        it saves). ``what`` names the file in the log line of an error.
        Raises ``OSError(EIO)`` for a corrupt record, or a shard that cannot
        be opened or mapped (logged with shard, chunk and byte offset),
        ``OSError(EISDIR)`` for a directory."""
        try:
            if node.kind == RECORD:
                # A big record is read in many requests: from the cache,
                # without asking its size again.
                key = snap.record_ino(node.shard, node.local)
                item = self._decoded.cached(key)
                if item is not None:
                    return item
                size = snap.source.record_size(node.shard, node.local)
                if size > _SMALL_RECORD:
                    return self._decoded.get(key, lambda: snap.read(node, size))
                return snap.read(node, size), 0
            return snap.read(node), 0
        except IsADirectoryError:
            raise oserror(errno.EISDIR) from None
        except (ArrayRecordError, OSError) as e:
            # OSError: the shard could not be (re)opened or mapped (EMFILE,
            # ENOMEM, a file deleted before it was reopened): the reader
            # gets EIO, the log says which shard.
            log.error("EIO reading %s: %s: %s", what, snap.describe(node), e)
            raise oserror(errno.EIO) from None

    def read_to_end(self, snap: ViewSnapshot, node: Node) -> None:
        """The last bytes of record ``node`` were sent: the kernel keeps the
        record in its page cache, so the decoded copy can go (the LRU would
        otherwise hold records nobody reads any more, up to its bound)."""
        self._decoded.discard(snap.record_ino(node.shard, node.local))

    def clear(self) -> None:
        self._decoded.clear()
