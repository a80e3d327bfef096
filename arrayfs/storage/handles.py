"""A process-wide, bounded set of open file descriptors.

A dataset of 10,000 shards must run under the soft descriptor limit most
Linux users have (``ulimit -n`` = 1024). Local files therefore do not own a
descriptor: they borrow one from :data:`POOL` for the length of a read.
The pool keeps at most :attr:`DescriptorPool.max_open` descriptors open,
closes the least recently used idle ones past that bound, and reopens a
file on demand (its :meth:`reopen` checks that it is still the same file).

A descriptor in use by a read is never closed under it: with ``pread`` a
closed-and-reused descriptor number would read another file's bytes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict

__all__ = ["DescriptorPool", "POOL", "default_max_open", "set_max_open_files"]


def default_max_open() -> int:
    """A quarter of the soft ``RLIMIT_NOFILE``, between 16 and 512: room is
    left for sockets, pipes, the mount's own descriptors and the user's."""
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (ImportError, OSError, ValueError):
        return 256
    if soft == resource.RLIM_INFINITY:
        return 512
    return max(16, min(512, soft // 4))


class DescriptorPool:
    """LRU of open descriptors, each owned by one file object.

    Files plug in with these members: ``_fd`` (``-1`` when closed),
    ``_refs`` (reads in flight), ``_pinned`` (never evicted), ``_closing``
    and ``_reopen()`` (returns a new descriptor, raising if the file
    changed). They are guarded by the pool's lock.
    """

    def __init__(self, max_open: int | None = None):
        self.max_open = max_open or default_max_open()
        self._lock = threading.Lock()
        self._open: OrderedDict = OrderedDict()  # id(file) -> file, least recent first
        self.opens = 0  # descriptors opened, for tests and benchmarks

    def acquire(self, f) -> int:
        """A descriptor of ``f`` for one read; pair with :meth:`release`."""
        with self._lock:
            fd = f._fd
            if fd >= 0:
                f._refs += 1
                self._open.move_to_end(id(f))
                return fd
        # Opened outside the lock (a slow file system must not stall every
        # other read); a second opener of the same file closes its extra fd.
        fd = f._reopen()
        with self._lock:
            self.opens += 1
            if f._fd >= 0:
                os.close(fd)
                fd = f._fd
            else:
                f._fd = fd
                self._open[id(f)] = f
            f._refs += 1
            self._open.move_to_end(id(f))
            self._evict()
            return fd

    def open(self, path: str, flags: int) -> int:
        """``os.open(path, flags)``; when the process is out of descriptors
        (the limit was lowered, or the application holds many), the idle
        ones are given back, a smaller set is kept from now on, and the
        open is tried once more. The error names ``path``."""
        try:
            return os.open(path, flags)
        except OSError as e:
            if e.errno not in (errno.EMFILE, errno.ENFILE):
                raise
        with self._lock:
            self.max_open = max(8, min(self.max_open, len(self._open)) // 2)
            self._evict(force=True)
        return os.open(path, flags)

    def release(self, f) -> None:
        with self._lock:
            f._refs -= 1
            if f._refs == 0 and f._closing:
                self._close(f)

    def pin(self, f) -> bool:
        """Keep ``f``'s descriptor open until ``f`` is closed (for a file
        that may vanish from its path while readers still use it). Returns
        ``False`` when ``f`` has no descriptor open now."""
        with self._lock:
            if f._fd < 0:
                return False
            f._pinned = True
            return True

    def discard(self, f) -> None:
        """``f`` is closed by its owner: close its descriptor now, or when
        the last read in flight releases it."""
        with self._lock:
            f._closing = True
            if f._refs == 0:
                self._close(f)

    def _close(self, f) -> None:
        fd, f._fd = f._fd, -1
        self._open.pop(id(f), None)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def _evict(self, force: bool = False) -> None:
        """Close least recently used idle descriptors past the bound (all
        idle ones with ``force``). Scans from the old end and stops at the
        bound: O(1) per call when the oldest are idle, as they usually are."""
        if force:
            for f in [f for f in self._open.values() if f._refs == 0 and not f._pinned]:
                self._close(f)
            return
        while len(self._open) > self.max_open:
            for f in self._open.values():
                if f._refs == 0 and not f._pinned:
                    break
            else:
                return  # every one is busy: over the bound until they finish
            self._close(f)

    def resize(self, max_open: int) -> None:
        with self._lock:
            self.max_open = max(1, int(max_open))
            self._evict()

    def __len__(self) -> int:
        return len(self._open)

    def _after_fork(self) -> None:
        # A lock held by another thread at fork time would stay held in the
        # child; descriptors stay valid there, and reads in flight did not
        # cross the fork.
        self._lock = threading.Lock()
        for f in self._open.values():
            f._refs = 0


POOL = DescriptorPool()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL._after_fork)


def set_max_open_files(n: int) -> None:
    """Bound the descriptors arrayfs keeps open in this process (default:
    :func:`default_max_open`)."""
    POOL.resize(n)
