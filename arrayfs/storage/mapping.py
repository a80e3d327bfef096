"""Memory maps of local files that nothing can truncate while mapped.

A read through a memory map of a file that shrinks under it kills the
process with ``SIGBUS``. :mod:`.local` therefore reads with ``pread`` by
default and maps a file only when one of these holds for as long as the
mapping is read:

``readonly-fs``
    the file system is mounted read-only (``fstatvfs`` reports
    ``ST_RDONLY``): no write, no truncate;
``immutable``
    the file has the immutable attribute (Linux ``FS_IMMUTABLE_FL``, set
    by ``chattr +i``; BSD/macOS ``UF_IMMUTABLE``/``SF_IMMUTABLE``): the
    kernel refuses to open it for writing or to truncate it;
``lease``
    this process holds a read lease on the file (Linux ``F_SETLEASE``
    ``F_RDLCK``; the process must own the file or have ``CAP_LEASE``).
    The kernel grants it only while nobody has the file open for writing,
    and it *breaks* it before any later open for writing or truncate goes
    ahead: the opener is blocked (up to ``/proc/sys/fs/lease-break-time``,
    45 s by default) and a signal tells the lease holder. A watcher thread
    here waits for that signal (targeted at it with ``F_SETOWN_EX`` and
    blocked in every other thread's way, so no other thread sees it); it
    stops new map reads of the file, waits for the ones in flight (each is
    a copy out of the map, microseconds), unmaps, and only then releases
    the lease. The truncate therefore runs after the last map read ended,
    and later reads go through ``pread``, whose identity check raises.
    A forked child has no watcher: its inherited leased maps are dropped
    and it reads with ``pread``.

Remounting a read-only file system read-write, or clearing the immutable
attribute, needs root and is outside what a mapping can survive; a read
lease covers every unprivileged change.

``ARRAYFS_MMAP`` chooses the policy: ``auto`` (the default: any of the
three), ``never`` (always ``pread``), or a comma-separated subset of
``readonly-fs,immutable,lease``.
"""

from __future__ import annotations

import errno
import mmap
import os
import signal
import stat
import struct
import sys
import threading
import weakref

__all__ = ["MODES", "map_policy", "choose_mode", "map_file", "Lease", "leases_held", "take_slot", "give_slot", "maps_held"]

MODES = ("readonly-fs", "immutable", "lease")

_F_SETSIG = 10
_F_SETOWN_EX = 15
_F_OWNER_TID = 0
_F_SETLEASE = 1024
_F_GETLEASE = 1025
_FS_IOC_GETFLAGS = 0x80086601
_FS_IMMUTABLE_FL = 0x10
_LINUX = sys.platform.startswith("linux")


def map_policy(value: str | None = None) -> frozenset:
    """The modes allowed by ``value`` (default: ``$ARRAYFS_MMAP``, or
    ``auto``). Raises ``ValueError`` for an unknown mode."""
    if value is None:
        value = os.environ.get("ARRAYFS_MMAP", "auto")
    value = value.strip().lower()
    if value in ("", "auto", "1", "yes"):
        return frozenset(MODES)
    if value in ("never", "0", "no", "pread"):
        return frozenset()
    modes = frozenset(m.strip() for m in value.split(","))
    bad = modes - set(MODES)
    if bad:
        raise ValueError(f"ARRAYFS_MMAP: unknown mode(s) {sorted(bad)}; use auto, never or {', '.join(MODES)}")
    return modes


def _immutable(fd: int, st) -> bool:
    flags = getattr(st, "st_flags", 0)
    if flags and flags & (getattr(stat, "UF_IMMUTABLE", 0) | getattr(stat, "SF_IMMUTABLE", 0)):
        return True
    if not _LINUX:
        return False
    import fcntl

    buf = bytearray(8)
    try:
        fcntl.ioctl(fd, _FS_IOC_GETFLAGS, buf, True)
    except OSError:
        return False
    return bool(struct.unpack_from("<i", buf)[0] & _FS_IMMUTABLE_FL)


def choose_mode(fd: int, st, allowed: frozenset) -> str | None:
    """The first mode of :data:`MODES` in ``allowed`` that holds for the
    open, regular file ``fd`` (``st`` its ``fstat``), without taking a
    lease; ``"lease"`` means one may be tried."""
    if not allowed or not stat.S_ISREG(st.st_mode) or st.st_size == 0:
        return None
    if "readonly-fs" in allowed:
        try:
            if os.fstatvfs(fd).f_flag & os.ST_RDONLY:
                return "readonly-fs"
        except (OSError, AttributeError):
            pass
    if "immutable" in allowed and _immutable(fd, st):
        return "immutable"
    if "lease" in allowed and _LINUX:
        return "lease"
    return None


def map_file(fd: int, size: int) -> mmap.mmap:
    """A read-only map of ``size`` bytes of ``fd``. Before Python 3.13 the
    map keeps a duplicate of ``fd`` open (``trackfd``): callers count maps
    against the descriptor budget with :func:`take_slot`."""
    if sys.version_info >= (3, 13):
        return mmap.mmap(fd, size, access=mmap.ACCESS_READ, trackfd=False)
    return mmap.mmap(fd, size, access=mmap.ACCESS_READ)


_slots_lock = threading.Lock()
_slots = 0


def take_slot(limit: int) -> bool:
    """Count one more mapped file if fewer than ``limit`` are (a map holds
    one or two descriptors that the pool cannot close); ``False`` when the
    budget is spent (read with ``pread``)."""
    global _slots
    with _slots_lock:
        if _slots >= limit:
            return False
        _slots += 1
        return True


def give_slot() -> None:
    global _slots
    with _slots_lock:
        _slots = max(0, _slots - 1)


def maps_held() -> int:
    """Files mapped now (for tests)."""
    return _slots


class _Watcher:
    """The thread that receives lease-break signals."""

    def __init__(self):
        self.sig = signal.SIGRTMAX - 6
        self.ready = threading.Event()
        self.tid = None
        self.thread = threading.Thread(target=self._run, name="arrayfs-lease-watcher", daemon=True)
        self.thread.start()
        self.ready.wait()

    def _run(self):
        signal.pthread_sigmask(signal.SIG_BLOCK, {self.sig})
        self.tid = threading.get_native_id()
        self.ready.set()
        while True:
            try:
                signal.sigwaitinfo({self.sig})
            except InterruptedError:  # pragma: no cover - retried by Python already
                continue
            for lease in list(_LEASES):
                lease.poll()


_LEASES: "weakref.WeakSet[Lease]" = weakref.WeakSet()
_watcher: _Watcher | None = None
_watcher_lock = threading.Lock()


def _get_watcher() -> _Watcher:
    global _watcher
    w = _watcher
    if w is None:
        with _watcher_lock:
            if _watcher is None:
                _watcher = _Watcher()
            w = _watcher
    return w


def leases_held() -> int:
    """Read leases this process holds now (for tests and the descriptor bound)."""
    return sum(1 for lease in list(_LEASES) if lease.live)


class Lease:
    """A read lease on ``fd`` (a descriptor this object owns from now on)
    and a map of the file's ``size`` bytes, read with :meth:`enter` /
    :meth:`leave` around every access so that a lease break waits for them.

    Raises ``OSError`` when the kernel refuses the lease (someone has the
    file open for writing, another owner, leases disabled, a file system
    without leases); the caller then reads with ``pread``.
    """

    def __init__(self, fd: int, size: int):
        import fcntl

        w = _get_watcher()
        self.fd = fd
        self.live = False
        self._cv = threading.Condition(threading.Lock())
        self._inflight = 0
        self.broken = threading.Event()
        fcntl.fcntl(fd, _F_SETSIG, w.sig)
        fcntl.fcntl(fd, _F_SETOWN_EX, struct.pack("ii", _F_OWNER_TID, w.tid))
        fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_RDLCK)
        try:
            self.map = map_file(fd, size)
        except BaseException:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
            raise
        self.live = True
        _LEASES.add(self)

    def enter(self):
        """The map, counted as in use until :meth:`leave`; ``None`` once the
        lease is broken or released (read with ``pread`` then)."""
        with self._cv:
            if not self.live:
                return None
            self._inflight += 1
            return self.map

    def leave(self) -> None:
        with self._cv:
            self._inflight -= 1
            if self._inflight == 0 and not self.live:
                self._cv.notify_all()

    def poll(self) -> None:
        """Called by the watcher on every lease signal: release the lease
        if the kernel is breaking it."""
        import fcntl

        if not self.live:
            return
        try:
            kind = fcntl.fcntl(self.fd, _F_GETLEASE)
        except OSError:
            kind = fcntl.F_UNLCK
        if kind != fcntl.F_RDLCK:
            self.release()
            self.broken.set()

    def release(self, *, close_fd: bool = True) -> None:
        """Stop map reads, wait for those in flight, unmap, release the
        lease and close the descriptor (unless ``close_fd`` is false: the
        caller takes it back). Safe to call twice."""
        import fcntl

        with self._cv:
            if self.fd < 0:
                return
            self.live = False
            while self._inflight:
                self._cv.wait()
            fd, self.fd = self.fd, -1
            m, self.map = self.map, None
        try:
            m.close()
        except (BufferError, ValueError):  # a view still exported: unmapped when it goes
            pass
        try:
            fcntl.fcntl(fd, _F_SETLEASE, fcntl.F_UNLCK)
        except OSError:
            pass
        if close_fd:
            os.close(fd)
        _LEASES.discard(self)

    def _after_fork(self) -> None:
        # No watcher in the child: drop the map (the parent's lease cannot
        # protect the child's reads) and the inherited descriptor.
        self._cv = threading.Condition(threading.Lock())
        self._inflight = 0
        self.live = False
        # The descriptor is kept for the file to read with pread
        # (:meth:`take_orphan`): it still reaches the file if it was removed.
        self.orphan_fd, self.fd = self.fd, -1
        m, self.map = self.map, None
        if m is not None:
            try:
                m.close()
            except (BufferError, ValueError):
                pass

    def take_orphan(self) -> int:
        """The descriptor a forked child inherited (``-1`` if none or taken)."""
        with self._cv:
            fd, self.orphan_fd = getattr(self, "orphan_fd", -1), -1
        return fd


def _after_fork_in_child() -> None:
    global _watcher, _slots_lock
    _watcher = None
    _slots_lock = threading.Lock()
    for lease in list(_LEASES):
        lease._after_fork()
    _LEASES.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def lease_refused(e: OSError) -> bool:
    """``True`` for the errors that mean "no lease here" (read with pread)."""
    return e.errno in (errno.EAGAIN, errno.EACCES, errno.EINVAL, errno.EPERM, errno.ENOLCK, errno.EBUSY,
                       errno.ENOSYS, errno.EOPNOTSUPP)
