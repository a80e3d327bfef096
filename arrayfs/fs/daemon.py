"""The FUSE daemon: a thin mfusepy adapter over :mod:`arrayfs.fs.view`.

libfuse's high-level API, multithreaded, read-only. What it does beyond
passing calls through:

- **Few round trips per file.** Where the kernel allows it (libfuse 3 and
  ``FUSE_CAP_NO_OPEN_SUPPORT``, Linux >= 4.19), the first ``open`` answers
  ``ENOSYS``: the kernel then opens files without asking the daemon (no
  OPEN, no RELEASE request) and keeps their page cache across opens. Reading
  a small file costs one READ the first time and nothing after; this
  matters because each request is a round trip between two processes.
- **One decode per record read.** A record bigger than one read request
  (the kernel splits reads into requests of at most 128 KiB, or 1 MiB with
  libfuse 3 where arrayfs asks for ``max_read=1048576``) is decoded once: READs by path share a small LRU of decoded records (keyed
  by snapshot and record; concurrent READs of one record wait for a single
  decode). In *handle mode* (libfuse 2, old kernels, or
  ``open_handles=True``) ``open()`` returns a handle, the first ``read()``
  decodes into it, later reads slice it and ``release()`` drops it.
- **Streamed listings with file types.** ``readdir`` answers from the
  offset the kernel passes (a 10-million-record root is never listed in
  memory) and gives each entry's type and inode, so ``find -type f`` needs
  no ``stat``. With libfuse 3, a ``READDIRPLUS`` request of a directory of
  at most :data:`READDIRPLUS_MAX` entries is answered with full attributes,
  so the kernel needs no ``LOOKUP`` per entry afterwards (``ls -l``).
- **Errors.** A corrupt record is ``EIO`` and one log line naming shard,
  chunk and byte offset; the daemon goes on. Names that are not records are
  ``ENOENT``; every call that would write is ``EROFS`` (the mount is also
  mounted ``ro``).
- **Snapshots.** Each call takes the view's current snapshot once; an open
  directory (and in handle mode an open file) keeps the snapshot it was
  opened on. A shard deleted while being read stays mapped while a snapshot
  that holds it is in use.
- **Threads.** libfuse's worker threads call into Python through ctypes;
  each is given a permanent Python thread state on its first call
  (:func:`_adopt_thread`), which makes a small request markedly cheaper
  (about 1.5x less daemon CPU per request in our measurements).
  ``-o nothreads`` serves from one thread: cheaper still per request, but a
  slow decode (a record of hundreds of MiB) then holds up every other
  request.
- **Invalidation.** With libfuse 3, :meth:`ArrayFsOperations.invalidate`
  calls ``fuse_invalidate_path`` (and, for root names,
  ``fuse_lowlevel_notify_inval_entry``) for each path a refresh changed, so
  long cache timeouts stay correct while watching. libfuse 2 has no path-based
  invalidation: :func:`fuse_kwargs` then uses 1-second timeouts and keeps
  the page cache only within an open while watching.

mfusepy picks its libfuse at import; :func:`load_mfusepy` prefers libfuse 3
(for invalidation, readdirplus and no-open) unless ``FUSE_LIBRARY_PATH`` or
``FUSE_LIBRARY_NAME`` says otherwise.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import itertools
import logging
import os
import threading
from collections import OrderedDict

from ..errors import ArrayRecordError
from .view import RECORD, ROOT, SHARD_DIR, SUMMARY, Attr, FsView

__all__ = ["ArrayFsOperations", "load_mfusepy", "run", "fuse_kwargs", "libfuse_major", "READDIRPLUS_MAX"]

log = logging.getLogger("arrayfs.fs")

_mfusepy = None
_mfusepy_lock = threading.Lock()

# libfuse 3: fuse_readdir_flags FUSE_READDIR_PLUS and fuse_fill_dir_flags
# FUSE_FILL_DIR_PLUS; fuse_conn_info capabilities (fuse_common.h).
_READDIR_PLUS = 1
_FILL_DIR_PLUS = 2
_CAP_READDIRPLUS_AUTO = 1 << 14
_CAP_NO_OPEN_SUPPORT = 1 << 17

# Cache timeouts (seconds). A snapshot never changes, so entries and
# attributes may be cached for long; while watching without path
# invalidation (libfuse 2) they must expire soon.
LONG_TIMEOUT = 86400.0
SHORT_TIMEOUT = 1.0

# Directories up to this many entries are listed with full attributes when
# the kernel asks READDIRPLUS (``ls -l`` then needs no LOOKUP per entry).
# Every entry so listed costs about 1 KiB of (reclaimable) kernel memory and
# a libfuse node until the kernel forgets it, so larger directories are
# listed with names and types only.
READDIRPLUS_MAX = 1_000_000

# Decoded records kept for READs by path (bytes). Records that fit in one
# read request are never kept; a record bigger than the budget is kept alone.
DECODED_CACHE_BYTES = 256 << 20
_SMALL_RECORD = 64 << 10


def load_mfusepy():
    """Import mfusepy, preferring libfuse 3. Raises ``ImportError`` (no
    mfusepy), ``OSError`` (no libfuse found) or ``AttributeError``
    (unusable libfuse version) as mfusepy does."""
    global _mfusepy
    with _mfusepy_lock:
        if _mfusepy is None:
            saved = os.environ.get("FUSE_LIBRARY_PATH")
            try:
                if saved is None and "FUSE_LIBRARY_NAME" not in os.environ:
                    lib3 = ctypes.util.find_library("fuse3")
                    if lib3:
                        os.environ["FUSE_LIBRARY_PATH"] = lib3
                import mfusepy
            finally:
                if saved is None:
                    os.environ.pop("FUSE_LIBRARY_PATH", None)
            _mfusepy = mfusepy
    return _mfusepy


def libfuse_major() -> int:
    """Major version (2 or 3) of the libfuse that mfusepy loaded."""
    return load_mfusepy().fuse_version_major


def _oserror(code: int) -> OSError:
    return OSError(code, os.strerror(code))


def _erofs(*_args, **_kwargs):
    raise _oserror(errno.EROFS)


def _address(data: bytes) -> int:
    """Address of the buffer of ``data`` (kept alive by the caller)."""
    return ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


class _FileHandle:
    """An open file in handle mode: its snapshot and node, then (from the
    first read) the decoded contents and their address."""

    __slots__ = ("snap", "node", "attr", "data", "address", "lock")

    def __init__(self, snap, node, attr: Attr):
        self.snap = snap
        self.node = node
        self.attr = attr
        self.data = None
        self.address = 0
        self.lock = threading.Lock()


class _Decoded:
    """LRU of decoded records (bytes, bounded) with single-flight decoding:
    concurrent requests for one key wait for one decode."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self._items: OrderedDict = OrderedDict()  # key -> (data, address)
        self._bytes = 0
        self._lock = threading.Lock()
        self._inflight: dict = {}
        self.decodes = 0

    def get(self, key, decode):
        """``(data, address)`` for ``key``, calling ``decode()`` at most once
        while the entry stays cached. Exceptions of ``decode`` propagate to
        every waiter."""
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
                return item
            flight = self._inflight.get(key)
            if flight is None:
                flight = self._inflight[key] = [threading.Event(), None, None]
                leader = True
            else:
                leader = False
        if not leader:
            flight[0].wait()
            if flight[2] is not None:
                raise flight[2]
            return flight[1]
        try:
            data = decode()
            item = (data, _address(data))
            flight[1] = item
            self.decodes += 1
            with self._lock:
                self._items[key] = item
                self._bytes += len(data)
                while self._bytes > self.max_bytes and len(self._items) > 1:
                    _, (old, _) = self._items.popitem(last=False)
                    self._bytes -= len(old)
            return item
        except BaseException as e:
            flight[2] = e
            raise
        finally:
            with self._lock:
                self._inflight.pop(key, None)
            flight[0].set()

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0


def _operations_base():
    return load_mfusepy().Operations


class ArrayFsOperations(_operations_base()):
    """mfusepy ``Operations`` over an :class:`FsView`.

    Args:
        view: the view to serve (its current snapshot is read per call).
        on_ready: called with no arguments from libfuse's ``init``, once the
            mount is live (background mode uses it to let the parent exit).
        watcher: an object with ``start()`` and ``stop()`` (the live
            refresh), started on ``init`` and stopped on ``destroy``.
        open_handles: always use handle mode (see the module docstring),
            even where the kernel supports no-open.
        readdirplus_max: directories with more entries are listed without
            attributes (see :data:`READDIRPLUS_MAX`); 0 turns readdirplus off.
        decoded_cache_bytes: bound of the decoded-record LRU (bytes).

    Raises in callbacks (turned into ``-errno`` by mfusepy): ``ENOENT``,
    ``ENOTDIR``, ``EISDIR``, ``EROFS``, ``EIO`` (corrupt record), ``EBADF``,
    ``ENOSYS`` (``open`` in no-open mode: the kernel's cue to stop asking).
    """

    use_ns = True

    def __init__(self, view: FsView, *, on_ready=None, watcher=None, open_handles: bool = False,
                 readdirplus_max: int = READDIRPLUS_MAX, decoded_cache_bytes: int = DECODED_CACHE_BYTES):
        self.view = view
        self.uid = view.snapshot.uid
        self.gid = view.snapshot.gid
        self._files: dict[int, _FileHandle] = {}
        self._dirs: dict[int, tuple] = {}
        self._ids = itertools.count(1)
        self._on_ready = on_ready
        self._watcher = watcher
        self._fuse_ptr = None
        self._invalidate_path = None
        self.open_handles = open_handles
        self.no_open = False  # decided in init from the kernel's capabilities
        self.readdirplus_max = readdirplus_max
        self.max_read = 0  # bytes; set by run() from ``-o max_read``
        self.decoded = _Decoded(decoded_cache_bytes)
        self.mfusepy = load_mfusepy()

    # -- life cycle -------------------------------------------------------------

    def init_with_config(self, conn, config):
        m = self.mfusepy
        self._fuse_ptr = ctypes.c_void_p(m._libfuse.fuse_get_context().contents.fuse)
        if m.fuse_version_major == 3:
            fn = getattr(m._libfuse, "fuse_invalidate_path", None)
            if fn is not None:
                fn.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
                fn.restype = ctypes.c_int
                self._invalidate_path = fn
            if conn is not None:
                if self.max_read:
                    # libfuse 3 refuses to start unless init agrees with -o max_read.
                    conn.max_read = self.max_read
                if self.readdirplus_max > 0:
                    # Without the "auto" heuristic the kernel asks READDIRPLUS
                    # for every chunk of a listing, so ``ls -l`` needs no
                    # LOOKUP per entry (it asks only the first chunk otherwise).
                    conn.want &= ~_CAP_READDIRPLUS_AUTO
                self.no_open = bool(conn.capable & _CAP_NO_OPEN_SUPPORT) and not self.open_handles
        log.debug("libfuse %d.%d, no-open %s", m.fuse_version_major, m.fuse_version_minor, self.no_open)
        if self._watcher is not None:
            self._watcher.start()
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path):
        if self._watcher is not None:
            self._watcher.stop()
        self._files.clear()
        self._dirs.clear()
        self.decoded.clear()

    @property
    def can_invalidate(self) -> bool:
        """Whether :meth:`invalidate` reaches the kernel (libfuse 3, mounted)."""
        return self._invalidate_path is not None and self._fuse_ptr is not None

    def invalidate(self, paths) -> int:
        """Drop the kernel's caches of each path in ``paths`` (an iterable
        of ``str``) that libfuse knows: attributes and page cache
        (``fuse_invalidate_path``) and, for names in the root, the directory
        entry (``fuse_lowlevel_notify_inval_entry``), so that the next
        access looks the name up again. Unknown paths cost a hash lookup.
        Call from a thread that is not serving a FUSE request. Returns how
        many paths were invalidated; 0 without libfuse 3."""
        fn, ptr = self._invalidate_path, self._fuse_ptr
        if fn is None or ptr is None:
            return 0
        lib = self.mfusepy._libfuse
        inval_entry = getattr(lib, "fuse_lowlevel_notify_inval_entry", None)
        session = None
        if inval_entry is not None and hasattr(lib, "fuse_get_session"):
            lib.fuse_get_session.argtypes = [ctypes.c_void_p]
            lib.fuse_get_session.restype = ctypes.c_void_p
            inval_entry.argtypes = [ctypes.c_void_p, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_size_t]
            inval_entry.restype = ctypes.c_int
            session = lib.fuse_get_session(ptr)
        n = 0
        for p in paths:
            b = p.encode("utf-8", "surrogateescape")
            if fn(ptr, b) != 0:
                continue  # libfuse has no node for it: the kernel has nothing cached
            n += 1
            if session and b.count(b"/") == 1 and len(b) > 1:
                inval_entry(session, 1, b[1:], len(b) - 1)  # 1: FUSE_ROOT_ID
        return n

    # -- attributes ---------------------------------------------------------------

    def attr(self, path, fh=None) -> Attr:
        """:class:`Attr` of open file ``fh`` (handle mode) or of ``path``."""
        if fh:
            h = self._files.get(fh)
            if h is not None:
                return h.attr
        if path is None:
            d = self._dirs.get(fh)
            if d is None:
                raise _oserror(errno.EBADF)
            return d[0].attr(d[1])
        snap = self.view.snapshot
        node = snap.resolve(path)
        try:
            return snap.attr(node)
        except ArrayRecordError as e:
            log.error("EIO on stat of %s: %s: %s", path, snap.describe(node), e)
            raise _oserror(errno.EIO) from None

    def getattr(self, path, fh=None):
        return self.attr(path, fh).as_dict(self.uid, self.gid)

    def statfs(self, path):
        return self.view.snapshot.statfs()

    # -- files ----------------------------------------------------------------------

    def _contents(self, snap, node, path):
        """``(bytes, address)`` of file ``node``: decoded once while cached
        (records of more than one read request) or now (small records)."""
        try:
            if node.kind == RECORD:
                size = snap.source.record_size(node.shard, node.local)
                if size > _SMALL_RECORD:
                    return self.decoded.get((snap.generation, node.index), lambda: snap.read(node, size))
                data = snap.read(node, size)
            else:
                data = snap.read(node)
            # Small contents are copied from the bytes object itself (see
            # _FUSE.read): taking their address costs more than it saves.
            return data, 0
        except ArrayRecordError as e:
            log.error("EIO reading %s: %s: %s", path, snap.describe(node), e)
            raise _oserror(errno.EIO) from None

    def open(self, path, flags):
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND):
            raise _oserror(errno.EROFS)
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind != RECORD and node.kind != SUMMARY:
            raise _oserror(errno.EISDIR)
        if self.no_open:
            raise _oserror(errno.ENOSYS)  # the kernel opens files by itself from now on
        try:
            attr = snap.attr(node)
        except ArrayRecordError as e:
            log.error("EIO on open of %s: %s: %s", path, snap.describe(node), e)
            raise _oserror(errno.EIO) from None
        fh = next(self._ids)
        self._files[fh] = _FileHandle(snap, node, attr)
        return fh

    def read_view(self, path, fh):
        """``(bytes, address)`` of the whole file being read (``address`` 0:
        use the bytes object itself): the handle's
        contents (decoded on its first read) or, without a handle, the
        contents of ``path`` in the current snapshot."""
        h = self._files.get(fh) if fh else None
        if h is None:
            if path is None:
                raise _oserror(errno.EBADF)
            snap = self.view.snapshot
            return self._contents(snap, snap.resolve(path), path)
        if h.data is None:
            with h.lock:
                if h.data is None:
                    data, address = self._contents(h.snap, h.node, path)
                    h.address = address
                    h.data = data
        return h.data, h.address

    def read(self, path, size, offset, fh):
        data, _ = self.read_view(path, fh)
        return data[offset : offset + size]

    def release(self, path, fh):
        self._files.pop(fh, None)
        return 0

    # -- directories -------------------------------------------------------------------

    def opendir(self, path):
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind == RECORD or node.kind == SUMMARY:
            raise _oserror(errno.ENOTDIR)
        fh = next(self._ids)
        self._dirs[fh] = (snap, node)
        return fh

    def _dir(self, fh):
        d = self._dirs.get(fh)
        if d is None:
            raise _oserror(errno.EBADF)
        return d

    def batches(self, fh, offset, plus=False):
        """:class:`arrayfs.fs.view.DirBatch` es of open directory ``fh`` from
        ``offset``; exact record sizes when ``plus``."""
        snap, node = self._dir(fh)
        try:
            yield from snap.readdir_batches(node, offset, sizes=plus)
        except ArrayRecordError as e:
            log.error("EIO listing a directory: %s", e)
            raise _oserror(errno.EIO) from None

    def use_plus(self, fh) -> bool:
        """Whether a READDIRPLUS of open directory ``fh`` gets full
        attributes: only when the directory has at most
        ``readdirplus_max`` entries."""
        snap, node = self._dir(fh)
        if node.kind == ROOT:
            n = snap.num_records
        elif node.kind == SHARD_DIR:
            n = snap.shards[node.shard].num_records
        else:
            n = len(snap.shards)
        return n <= self.readdirplus_max

    def readdir_with_offset(self, path, offset, fh):
        snap, node = self._dir(fh)
        for name, a, off in snap.readdir(node, offset):
            yield name, {"st_mode": a.mode, "st_ino": a.ino}, off

    def releasedir(self, path, fh):
        self._dirs.pop(fh, None)
        return 0

    # -- everything that would write ------------------------------------------------------

    chmod = chown = mkdir = mknod = rmdir = unlink = symlink = link = rename = _erofs
    truncate = write = create = utimens = setxattr = removexattr = fallocate = _erofs


_adopted: set = set()
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_get_ident = threading.get_ident


def _adopt_thread() -> None:
    if os.environ.get("ARRAYFS_NO_ADOPT"):
        return
    """Give the calling libfuse worker thread a permanent Python thread state.

    A ctypes callback on a thread Python did not create gets a fresh thread
    state per call (created, then destroyed on return), which costs more
    than a small request itself. One extra ``PyGILState_Ensure`` that is
    never released keeps the state for the thread's life, so later
    callbacks only take the GIL. libfuse keeps its workers (``max_idle_threads``).
    """
    tid = _get_ident()
    if tid not in _adopted:
        _PyGILState_Ensure()
        _adopted.add(tid)


def _stat_filler(m):
    """A fast ``Attr`` -> ``struct stat`` writer for this platform's c_stat
    (mfusepy's generic one walks a dict per call)."""
    if not hasattr(m.c_stat, "st_mtimespec"):
        def fill(st, a: Attr, uid, gid):
            m.set_st_attrs(st, a.as_dict(uid, gid), use_ns=True)
        return fill

    def fill(st, a: Attr, uid, gid):
        st.st_mode = a.mode
        st.st_ino = a.ino
        st.st_nlink = a.nlink
        st.st_size = a.size
        st.st_blocks = (a.size + 511) >> 9
        st.st_blksize = a.blksize
        st.st_uid = uid
        st.st_gid = gid
        sec, ns = divmod(a.mtime_ns, 1_000_000_000)
        for ts in (st.st_mtimespec, st.st_ctimespec, st.st_atimespec):
            ts.tv_sec = sec
            ts.tv_nsec = ns

    return fill


def _fuse_class():
    m = load_mfusepy()

    class _FUSE(m.FUSE):
        """mfusepy's FUSE with the hot paths done directly: ``getattr``
        (fills ``struct stat`` from an :class:`Attr`), ``read`` (copies
        straight from the decoded bytes into libfuse's buffer), ``open``,
        ``release``, and ``readdir`` (streams batches; full attributes for
        readdirplus)."""

        _fill = staticmethod(_stat_filler(m))

        def _wrapper(self, func, *args, **kwargs):
            _adopt_thread()
            return super()._wrapper(func, *args, **kwargs)

        def fgetattr(self, path, buf, fip):
            ops = self.operations
            fh = fip.contents.fh if fip else None
            a = ops.attr(None if path is None else path.decode(self.encoding, self.errors), fh)
            ctypes.memset(buf, 0, ctypes.sizeof(m.c_stat))
            self._fill(buf.contents, a, ops.uid, ops.gid)
            return 0

        def open(self, path, fip):
            fi = fip.contents
            ops = self.operations
            fi.fh = fh = ops.open(path.decode(self.encoding, self.errors), fi.flags)
            h = ops._files.get(fh)
            if h is not None and h.node.kind == SUMMARY:
                # The summary changes on refresh; read it past a size the
                # kernel may still have cached (libfuse 2 cannot invalidate).
                fi.direct_io = 1
            return 0

        def read(self, path, buf, size, offset, fip):
            data, address = self.operations.read_view(
                None if path is None else path.decode(self.encoding, self.errors), fip.contents.fh
            )
            n = min(size, len(data) - offset)
            if n <= 0:
                return 0
            if address:
                ctypes.memmove(buf, address + offset, n)
            else:
                ctypes.memmove(buf, data if offset == 0 else data[offset : offset + n], n)
            return n

        def release(self, path, fip):
            self.operations._files.pop(fip.contents.fh, None)
            return 0

        def _entries(self, buf, filler, offset, fip, plus):
            # The hot loop of listings: per entry only the name, inode (and
            # size) change; everything else is set once per batch.
            ops = self.operations
            st = m.c_stat()
            stp = ctypes.pointer(st)
            fill, uid, gid = self._fill, ops.uid, ops.gid
            enc, errs = self.encoding, self.errors
            v3 = m.fuse_version_major == 3
            flags = _FILL_DIR_PLUS if plus else 0
            for b in ops.batches(fip.contents.fh, offset, plus):
                fill(st, b.attr, uid, gid)
                off = b.next_offset
                if plus:
                    for name, ino, size in zip(b.names, b.inos, b.sizes):
                        st.st_ino = ino
                        st.st_size = size
                        st.st_blocks = (size + 511) >> 9
                        if filler(buf, name.encode(enc, errs), stp, off, flags):
                            return 0
                        off += 1
                elif v3:
                    for name, ino in zip(b.names, b.inos):
                        st.st_ino = ino
                        if filler(buf, name.encode(enc, errs), stp, off, 0):
                            return 0
                        off += 1
                else:
                    for name, ino in zip(b.names, b.inos):
                        st.st_ino = ino
                        if filler(buf, name.encode(enc, errs), stp, off):
                            return 0
                        off += 1
            return 0

        def readdir_fuse_2(self, path, buf, filler, offset, fip):
            return self._entries(buf, filler, offset, fip, False)

        def readdir_fuse_3(self, path, buf, filler, offset, fip, flags):
            plus = bool(flags & _READDIR_PLUS) and self.operations.use_plus(fip.contents.fh)
            return self._entries(buf, filler, offset, fip, plus)

    return _FUSE


def fuse_kwargs(*, watch: bool, allow_other: bool = False, auto_unmount: bool = True, extra=None) -> dict:
    """The libfuse options (as mfusepy keyword arguments) of an arrayfs
    mount: read-only, multithreaded, ``use_ino``, ``default_permissions``
    (the 0444/0555 modes are enforced by the kernel), kernel page cache kept
    across opens (libfuse 2 while watching: only within an open),
    1-day entry/attribute timeouts (1 s when watching on libfuse 2), no
    negative caching while watching.
    ``extra`` (``dict`` of user ``-o`` options, ``True`` for flags)
    overrides.
    """
    v3 = libfuse_major() == 3
    short = watch and not v3
    timeout = SHORT_TIMEOUT if short else LONG_TIMEOUT
    kw = {
        "foreground": True,
        "ro": True,
        "fsname": "arrayfs",
        "subtype": "arrayfs",
        "use_ino": True,
        "default_permissions": True,
        "entry_timeout": timeout,
        "attr_timeout": timeout,
        "negative_timeout": 0.0 if watch else timeout,
    }
    if v3:
        # Keep libfuse's worker threads alive (see _adopt_thread).
        kw["max_idle_threads"] = 16
        # Read requests of up to 1 MiB (libfuse 3 negotiates that many
        # pages): a big record comes in a quarter of the requests, and the
        # page cache it fills reads back faster.
        kw["max_read"] = 1 << 20
    if not short:
        kw["kernel_cache"] = True
    # (libfuse 2 while watching: no kernel_cache and no auto_cache, so the
    # page cache is dropped on each open; auto_cache would keep pages of a
    # name that now means another record of the same size and mtime.)
    if allow_other:
        kw["allow_other"] = True
    if auto_unmount:
        kw["auto_unmount"] = True
    if extra:
        kw.update(extra)
    return kw


def run(view: FsView, mountpoint: str, *, fuse_options: dict, on_ready=None, watcher=None,
        open_handles: bool = False, readdirplus_max: int = READDIRPLUS_MAX) -> ArrayFsOperations:
    """Mount ``view`` at ``mountpoint`` and serve until unmounted (blocks).

    Args:
        fuse_options: mfusepy keyword arguments (see :func:`fuse_kwargs`).
        on_ready: called once the kernel has initialised the mount.
        watcher: started on init, stopped on unmount (see
            :mod:`arrayfs.fs.watch`); it is given the operations object as
            ``watcher.operations`` before the mount, to invalidate through.
        open_handles, readdirplus_max: see :class:`ArrayFsOperations`.

    Returns the operations object once unmounted. Raises ``RuntimeError``
    when libfuse fails to mount (its message went to stderr).
    """
    ops = ArrayFsOperations(view, on_ready=on_ready, watcher=watcher, open_handles=open_handles,
                            readdirplus_max=readdirplus_max)
    if fuse_options.get("max_read"):
        ops.max_read = int(fuse_options["max_read"])
    if watcher is not None:
        watcher.operations = ops
    _fuse_class()(ops, mountpoint, **fuse_options)
    return ops
