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
    and it reads with ``pread`` through a descriptor on an open file
    description of its own (the lease belongs to the parent's description,
    which the child would otherwise keep alive, watcher-less, once the
    parent exits: a writer would then wait out the break time).

    The break signal (``SIGRTMAX - 6``, whose default action ends the
    process) can only reach the watcher: it is sent to the owner of the
    leased description, the watcher's thread id (``F_OWNER_TID``), never to
    the process; a child holds no leased description; and while the
    signal's action is the default one, importing this module (from the
    main thread) sets a handler that does nothing, so that no thread or
    process which does not block the signal can be killed by it.

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
_MAP_FIXED = 0x10
_LINUX = sys.platform.startswith("linux")


_policies: dict = {}


def map_policy(value: str | None = None) -> frozenset:
    """The modes allowed by ``value`` (default: ``$ARRAYFS_MMAP``, or
    ``auto``). Raises ``ValueError`` for an unknown mode."""
    if value is None:
        value = os.environ.get("ARRAYFS_MMAP", "auto")
    got = _policies.get(value)
    if got is None:
        got = _policies[value] = _parse_policy(value)
    return got


def _parse_policy(value: str) -> frozenset:
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


def slots_left(limit: int) -> bool:
    """Whether fewer than ``limit`` files are mapped now (a hint, checked
    before the system calls that choose a mode; :func:`take_slot` decides)."""
    return _slots < limit


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
        _disarm(self.sig)
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


def _ignore_signal(signum, frame) -> None:
    """The handler in place of the lease signal's default action."""


def _disarm(sig: int) -> None:
    """Replace ``sig``'s default action (terminate) by a handler that does
    nothing, unless the application set one; only possible from the main
    thread (elsewhere this does nothing). A handler, unlike ``SIG_IGN``,
    is not inherited across ``exec``; a blocked signal is still queued for
    ``sigwaitinfo``."""
    try:
        if signal.getsignal(sig) == signal.SIG_DFL:
            signal.signal(sig, _ignore_signal)
    except (ValueError, OSError, TypeError):
        pass


if _LINUX and hasattr(signal, "SIGRTMAX"):
    _disarm(signal.SIGRTMAX - 6)

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
        # Readers take the plain lock (a C call); the condition over it is
        # for release() alone, which waits for views in flight.
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
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
        with self._lock:
            if not self.live:
                return None
            self._inflight += 1
            return self.map

    def leave(self) -> None:
        with self._lock:
            self._inflight -= 1
            if self._inflight == 0 and not self.live:
                self._cv.notify_all()

    def copy(self, offset: int, end: int):
        """Bytes ``[offset, end)`` of the map, copied under the lock (so a
        release waits for the copy), or ``None`` once the lease is gone."""
        with self._lock:
            if self.live:
                return self.map[offset:end]
        return None

    def copies(self, ranges):
        """``[bytes [a, b) for a, b in ranges]`` copied out of the map under
        one hold of the lock, or ``None`` once the lease is gone."""
        with self._lock:
            if self.live:
                m = self.map
                out = []  # a loop, not a comprehension: no call (Python 3.11)
                for a, b in ranges:
                    out.append(m[a:b])
                return out
        return None

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

    def _after_fork(self, fresh: set) -> None:
        """In a forked child: no map reads (there is no watcher here), and
        nothing left on the parent's leased open file description.

        ``fresh``: the inherited descriptors that were on a leased
        description and now, under the same numbers, are on descriptions
        of their own (see :func:`_after_fork_in_child`). The map is
        dropped; if a view of it is still exported (a thread of the parent
        was reading when it forked), the same file is mapped again over it,
        through the new description, so that no mapping keeps the leased
        one alive either."""
        self._lock = threading.Lock()
        self._cv = threading.Condition(self._lock)
        self._inflight = 0
        self.live = False
        fd, self.fd = self.fd, -1
        m, self.map = self.map, None
        # The descriptor stays, for reading with pread (:meth:`take_orphan`):
        # it reaches the file even once it left its path.
        self.orphan_fd = fd if fd in fresh else -1
        if fd >= 0 and fd not in fresh:
            try:
                os.close(fd)
            except OSError:
                pass
        if m is not None:
            try:
                m.close()
            except (BufferError, ValueError):
                if self.orphan_fd >= 0:
                    _remap_over(m, self.orphan_fd)

    def take_orphan(self) -> int:
        """The descriptor a forked child kept for this file (on a fresh
        open file description, never the parent's leased one; ``-1`` if
        none or taken)."""
        with self._cv:
            fd, self.orphan_fd = getattr(self, "orphan_fd", -1), -1
        return fd


def _leased_descriptors(files: set) -> list:
    """This process's descriptors of the files ``files`` (``(st_dev,
    st_ino)`` pairs) whose open file description holds a read lease
    (``/proc/self/fdinfo`` lists a description's locks and leases): in a
    child right after a fork, the ones inherited from the parent,
    including the duplicates Python's ``mmap`` keeps before 3.13."""
    out = []
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return out
    for name in names:
        try:
            with open(f"/proc/self/fdinfo/{name}", "rb") as f:
                info = f.read()
        except OSError:
            continue  # the listing's own descriptor, gone by now
        if b" LEASE " in info and b" READ " in info:
            try:
                st = os.fstat(int(name))
            except OSError:
                continue
            if (st.st_dev, st.st_ino) in files:
                out.append(int(name))
    return out


def _fresh_description(fd: int) -> bool:
    """Put a new open file description of the same file in place of
    ``fd`` (``/proc/self/fd/N`` opens the inode again, even once unlinked;
    ``dup2`` swaps it in atomically, so the number stays valid for whoever
    holds it). The inherited description, which holds the parent's lease,
    is no longer referenced here; its lease is left alone (releasing it
    would end the parent's). On failure ``fd`` is pointed at ``/dev/null``
    (reads through it then fail their identity check) and ``False`` is
    returned."""
    flags = os.O_RDONLY | getattr(os, "O_CLOEXEC", 0)
    new = -1
    try:
        new = os.open(f"/proc/self/fd/{fd}", flags)
        a, b = os.fstat(fd), os.fstat(new)
        if (a.st_dev, a.st_ino) != (b.st_dev, b.st_ino):
            raise OSError(f"/proc/self/fd/{fd} reopened another file")
        ok = True
    except OSError:
        if new >= 0:
            os.close(new)
        new = os.open(os.devnull, flags)
        ok = False
    try:
        os.dup2(new, fd, inheritable=False)
    finally:
        os.close(new)
    return ok


def _remap_over(m: mmap.mmap, fd: int) -> None:
    """Map ``fd`` (the same file on a fresh description) over ``m``'s pages
    with ``MAP_FIXED``: the views still exported keep reading the same
    bytes, and the old mapping's hold on the leased description is gone.
    ``m`` unmaps the new mapping when it is finally closed."""
    import ctypes

    import numpy as np

    size = len(m)
    addr = np.frombuffer(m, dtype=np.uint8).ctypes.data
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mmap.restype = ctypes.c_void_p
    libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
    # On failure the old mapping stays: the child holds the parent's lease
    # description until those views go, as before.
    libc.mmap(addr, size, mmap.PROT_READ, mmap.MAP_SHARED | _MAP_FIXED, fd, 0)


def _after_fork_in_child() -> None:
    global _watcher, _slots_lock
    _watcher = None
    _slots_lock = threading.Lock()
    leases = list(_LEASES)
    _LEASES.clear()
    if not leases:
        return
    # A read lease belongs to the open file description, which the child
    # shares: if the child kept it after the parent exited, the lease would
    # have no watcher, and a writer opening the file would wait out the
    # kernel's lease-break-time (45 s). Every descriptor on a leased
    # description gets a fresh one in its place.
    files = set()
    for lease in leases:
        try:
            st = os.fstat(lease.fd)
            files.add((st.st_dev, st.st_ino))
        except OSError:
            pass
    fresh = {fd for fd in _leased_descriptors(files) if _fresh_description(fd)}
    for lease in leases:
        lease._after_fork(fresh)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def lease_refused(e: OSError) -> bool:
    """``True`` for the errors that mean "no lease here" (read with pread)."""
    return e.errno in (errno.EAGAIN, errno.EACCES, errno.EINVAL, errno.EPERM, errno.ENOLCK, errno.EBUSY,
                       errno.ENOSYS, errno.EOPNOTSUPP)
