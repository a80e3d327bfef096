"""A process-wide, bounded set of open file descriptors.

A dataset of 10,000 shards must run under the soft descriptor limit most
Linux users have (``ulimit -n`` = 1024). Local files therefore do not own a
descriptor: they borrow one from :data:`POOL` for the length of a read.
The pool keeps at most :attr:`DescriptorPool.max_open` descriptors open,
closes the idle ones opened longest ago past that bound, and reopens a
file on demand (its :meth:`reopen` checks that it is still the same file).

A descriptor in use by a read is never closed under it: with ``pread`` a
closed-and-reused descriptor number would read another file's bytes.
"""

from __future__ import annotations

import errno
import os
import threading
from collections import OrderedDict

__all__ = ["Descriptor", "DescriptorPool", "POOL", "default_max_open", "set_max_open_files"]


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


class Descriptor:
    """One file's descriptor as :class:`DescriptorPool` keeps it.

    ``fd``: the descriptor (``-1`` while closed); ``refs``: reads in flight
    on it; ``pinned``: never evicted; ``closing``: its owner closed the file
    (the descriptor closes when the last read releases it). The fields are
    the pool's: guarded by its lock and changed only by its methods; a
    file reads them, never writes them.
    """

    __slots__ = ("fd", "refs", "pinned", "closing")

    def __init__(self):
        self.fd = -1
        self.refs = 0
        self.pinned = False
        self.closing = False


class DescriptorPool:
    """Open descriptors in the order they were opened, each leased to one file.

    The protocol: a file holds a :class:`Descriptor` from :meth:`register`;
    each read takes the descriptor with :meth:`acquire` (which reopens the
    file through the callable the file passes when the pool had closed it)
    and gives it back with :meth:`release`; :meth:`adopt` hands over a
    descriptor the file opened itself, :meth:`pin` keeps it open for good
    and :meth:`discard` ends the lease when the file closes.
    """

    def __init__(self, max_open: int | None = None):
        self.max_open = max_open or default_max_open()
        self._lock = threading.Lock()
        self._open: OrderedDict = OrderedDict()  # id(descriptor) -> descriptor, least recent first
        self.opens = 0  # descriptors opened, for tests and benchmarks

    @staticmethod
    def register() -> Descriptor:
        """A new, closed :class:`Descriptor` for one file."""
        return Descriptor()

    def acquire(self, d: Descriptor, reopen) -> int:
        """The descriptor of ``d`` for one read; pair with :meth:`release`.
        When the pool had closed it, ``reopen()`` opens the file again (and
        raises if the file changed or ``d`` was discarded)."""
        with self._lock:
            fd = d.fd
            if fd >= 0:
                # A hit does not reorder the descriptors: this is the path of every
                # single-record pread, and moving the entry would cost it
                # as much again. Eviction skips descriptors in use anyway.
                d.refs += 1
                return fd
        # Opened outside the lock (a slow file system must not stall every
        # other read); a second opener of the same file closes its extra fd.
        fd = reopen()
        with self._lock:
            self.opens += 1
            d.refs += 1
            self._keep(d, fd)
            return d.fd

    def adopt(self, d: Descriptor, fd: int) -> None:
        """Hand ``fd``, opened by the file itself, to the pool as ``d``'s
        descriptor (closed at once when ``d`` already has one)."""
        with self._lock:
            self._keep(d, fd)

    def _keep(self, d: Descriptor, fd: int) -> None:
        if d.fd >= 0:
            os.close(fd)
        else:
            d.fd = fd
            self._open[id(d)] = d
        self._open.move_to_end(id(d))
        self._evict()

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

    def release(self, d: Descriptor) -> None:
        """End one read's use of ``d``'s descriptor (from :meth:`acquire`)."""
        with self._lock:
            d.refs -= 1
            if d.refs == 0 and d.closing:
                self._close(d)

    def pin(self, d: Descriptor) -> bool:
        """Keep ``d``'s descriptor open until it is discarded (for a file
        that may vanish from its path while readers still use it). Returns
        ``False`` when ``d`` has no descriptor open now."""
        with self._lock:
            if d.fd < 0:
                return False
            d.pinned = True
            return True

    def discard(self, d: Descriptor) -> None:
        """The file is closed by its owner: close ``d``'s descriptor now, or
        when the last read in flight releases it."""
        with self._lock:
            d.closing = True
            if d.refs == 0:
                self._close(d)

    def _close(self, d: Descriptor) -> None:
        fd, d.fd = d.fd, -1
        self._open.pop(id(d), None)
        if fd >= 0:
            try:
                os.close(fd)
            except OSError:
                pass

    def _evict(self, force: bool = False) -> None:
        """Close the idle descriptors opened longest ago past the bound (all
        idle ones with ``force``). Scans from the old end and stops at the
        bound: O(1) per call when the oldest are idle, as they usually are."""
        if force:
            for d in [d for d in self._open.values() if d.refs == 0 and not d.pinned]:
                self._close(d)
            return
        while len(self._open) > self.max_open:
            for d in self._open.values():
                if d.refs == 0 and not d.pinned:
                    break
            else:
                return  # every one is busy: over the bound until they finish
            self._close(d)

    def resize(self, max_open: int) -> None:
        with self._lock:
            self.max_open = max(1, int(max_open))
            self._evict()

    def __len__(self) -> int:
        return len(self._open)

    def after_fork(self) -> None:
        """Reset the pool in a forked child: a lock held by another thread
        at fork time would stay held there; descriptors stay valid, and
        reads in flight did not cross the fork."""
        self._lock = threading.Lock()
        for d in self._open.values():
            d.refs = 0


POOL = DescriptorPool()

if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=POOL.after_fork)


def set_max_open_files(n: int) -> None:
    """Bound the descriptors arrayfs keeps open in this process (default:
    :func:`default_max_open`)."""
    POOL.resize(n)
