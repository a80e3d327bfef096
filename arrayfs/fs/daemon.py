"""The FUSE daemon: a thin mfusepy adapter over :mod:`arrayfs.fs.view`.

libfuse's high-level API, multithreaded, read-only. What it does beyond
passing calls through:

- **One decode per open.** ``open()`` decodes the record once and keeps
  the bytes in the file handle; ``read()`` slices them (the kernel splits
  a big read into 128 KiB requests, none of which decodes again);
  ``release()`` drops them. With ``kernel_cache`` a re-opened record is
  served from the page cache without any request.
- **Streamed listings with file types.** ``readdir`` answers from the
  offset the kernel passes (a 10-million-record root is never listed in
  memory) and gives each entry's type and inode, so ``find -type f`` needs
  no ``stat``. With libfuse 3 and a ``READDIRPLUS`` request, the entries
  carry their full attributes, so the kernel needs no ``LOOKUP`` per entry
  afterwards (``ls -l``).
- **Errors.** A corrupt record is ``EIO`` and one log line naming shard,
  chunk and byte offset; the daemon goes on. Names that are not records are
  ``ENOENT``; every call that would write is ``EROFS`` (the mount is also
  mounted ``ro``).
- **Snapshots.** Each call takes the view's current snapshot once; an open
  file or directory keeps the snapshot it was opened on, so a refresh never
  changes a file under an open handle, and a shard deleted while a handle
  reads it stays mapped until the handle is released.
- **Invalidation.** With libfuse 3, :meth:`ArrayFsOperations.invalidate`
  calls ``fuse_invalidate_path`` for each path a refresh changed, so long
  cache timeouts stay correct while watching. libfuse 2 has no path-based
  invalidation: :func:`fuse_kwargs` then uses 1-second timeouts and
  ``auto_cache`` instead while watching.

mfusepy picks its libfuse at import; :func:`load_mfusepy` prefers libfuse 3
(for invalidation and readdirplus) unless ``FUSE_LIBRARY_PATH`` or
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

from ..errors import ArrayRecordError
from .view import RECORD, ROOT, SHARD_DIR, SUMMARY, Attr, FsView

__all__ = ["ArrayFsOperations", "load_mfusepy", "run", "fuse_kwargs", "libfuse_major"]

log = logging.getLogger("arrayfs.fs")

_mfusepy = None
_mfusepy_lock = threading.Lock()

# libfuse 3: fuse_readdir_flags FUSE_READDIR_PLUS and fuse_fill_dir_flags
# FUSE_FILL_DIR_PLUS; fuse_conn_info capability FUSE_CAP_READDIRPLUS_AUTO.
_READDIR_PLUS = 1
_FILL_DIR_PLUS = 2
_CAP_READDIRPLUS_AUTO = 1 << 14

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


def load_mfusepy():
    """Import mfusepy, preferring libfuse 3. Raises ``OSError`` (no libfuse
    found) or ``AttributeError`` (unusable version) as mfusepy does."""
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


def _erofs(*_args, **_kwargs):
    raise OSError(errno.EROFS, os.strerror(errno.EROFS))


class _FileHandle:
    """An open file: the whole decoded contents, their address (for
    copying slices straight into libfuse's buffer) and the attributes."""

    __slots__ = ("data", "attr", "address")

    def __init__(self, data: bytes, attr: Attr):
        self.data = data
        self.attr = attr
        self.address = ctypes.cast(ctypes.c_char_p(data), ctypes.c_void_p).value or 0


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

    Raises in callbacks (turned into ``-errno`` by mfusepy): ``ENOENT``,
    ``ENOTDIR``, ``EISDIR``, ``EROFS``, ``EIO`` (corrupt record), ``EBADF``.
    """

    use_ns = True
    # read/release/readdir work from the handle alone; libfuse may then
    # skip building the path for them.
    flag_nopath = True
    flag_nullpath_ok = True

    def __init__(self, view: FsView, *, on_ready=None, watcher=None):
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
        self.readdirplus = False
        self.readdirplus_max = READDIRPLUS_MAX
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
            if conn is not None and self.readdirplus:
                # Without the "auto" heuristic the kernel asks READDIRPLUS for
                # every chunk of a listing, so ``ls -l`` needs no LOOKUP per
                # entry (the kernel asks only the first chunk otherwise).
                conn.want &= ~_CAP_READDIRPLUS_AUTO
        if self._watcher is not None:
            self._watcher.start()
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path):
        if self._watcher is not None:
            self._watcher.stop()
        self._files.clear()
        self._dirs.clear()

    @property
    def can_invalidate(self) -> bool:
        """Whether :meth:`invalidate` reaches the kernel (libfuse 3, mounted)."""
        return self._invalidate_path is not None and self._fuse_ptr is not None

    def invalidate(self, paths) -> int:
        """Drop the kernel's cached attributes and data of each path in
        ``paths`` (an iterable of ``str``) that libfuse knows; unknown paths
        cost a hash lookup. Call from a thread that is not serving a FUSE
        request. Returns how many were invalidated; 0 without libfuse 3."""
        fn, ptr = self._invalidate_path, self._fuse_ptr
        if fn is None or ptr is None:
            return 0
        n = 0
        for p in paths:
            if fn(ptr, p.encode("utf-8", "surrogateescape")) == 0:
                n += 1
        return n

    # -- attributes ---------------------------------------------------------------

    def attr(self, path, fh=None) -> Attr:
        """:class:`Attr` of ``path`` or, when libfuse passes no path, of open
        file handle ``fh``."""
        if path is None:
            h = self._files.get(fh)
            if h is not None:
                return h.attr
            d = self._dirs.get(fh)
            if d is None:
                raise OSError(errno.EBADF, os.strerror(errno.EBADF))
            return d[0].attr(d[1])
        snap = self.view.snapshot
        node = snap.resolve(path)
        try:
            return snap.attr(node)
        except ArrayRecordError as e:
            log.error("EIO on stat of %s: %s: %s", path, snap.describe(node), e)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    def getattr(self, path, fh=None):
        return self.attr(path, fh).as_dict(self.uid, self.gid)

    def statfs(self, path):
        return self.view.snapshot.statfs()

    # -- files ----------------------------------------------------------------------

    def open(self, path, flags):
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS))
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind != RECORD and node.kind != SUMMARY:
            raise OSError(errno.EISDIR, os.strerror(errno.EISDIR))
        try:
            data = snap.read(node)
            attr = snap.attr(node)
        except ArrayRecordError as e:
            log.error("EIO on open of %s: %s: %s", path, snap.describe(node), e)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None
        fh = next(self._ids)
        self._files[fh] = _FileHandle(data, attr)
        return fh

    def read(self, path, size, offset, fh):
        h = self._files.get(fh)
        if h is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return h.data[offset : offset + size]

    def release(self, path, fh):
        self._files.pop(fh, None)
        return 0

    # -- directories -------------------------------------------------------------------

    def opendir(self, path):
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind == RECORD or node.kind == SUMMARY:
            raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        fh = next(self._ids)
        self._dirs[fh] = (snap, node)
        return fh

    def _dir(self, fh):
        d = self._dirs.get(fh)
        if d is None:
            raise OSError(errno.EBADF, os.strerror(errno.EBADF))
        return d

    def batches(self, fh, offset, plus=False):
        """:class:`arrayfs.fs.view.DirBatch` es of open directory ``fh`` from
        ``offset``; exact record sizes when ``plus``."""
        snap, node = self._dir(fh)
        try:
            yield from snap.readdir_batches(node, offset, sizes=plus)
        except ArrayRecordError as e:
            log.error("EIO listing a directory: %s", e)
            raise OSError(errno.EIO, os.strerror(errno.EIO)) from None

    def use_plus(self, fh) -> bool:
        """Whether a READDIRPLUS of open directory ``fh`` gets full
        attributes: only when enabled and the directory has at most
        ``readdirplus_max`` entries (each entry given with attributes
        becomes a kernel inode and a libfuse node)."""
        if not self.readdirplus:
            return False
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
        """mfusepy's FUSE with two hot paths done directly: ``getattr``
        (fills ``struct stat`` from an :class:`Attr`) and ``readdir``
        (streams :class:`Attr` entries; full attributes for readdirplus)."""

        _fill = staticmethod(_stat_filler(m))

        def fgetattr(self, path, buf, fip):
            ops = self.operations
            fh = fip.contents.fh if fip else None
            a = ops.attr(None if path is None else path.decode(self.encoding, self.errors), fh)
            ctypes.memset(buf, 0, ctypes.sizeof(m.c_stat))
            self._fill(buf.contents, a, ops.uid, ops.gid)
            return 0

        # open/read/release: called for every file read, so skip mfusepy's
        # generic conversions; read copies the slice straight from the
        # handle's bytes into libfuse's buffer.

        def open(self, path, fip):
            fi = fip.contents
            fi.fh = self.operations.open(path.decode(self.encoding, self.errors), fi.flags)
            return 0

        def read(self, path, buf, size, offset, fip):
            h = self.operations._files.get(fip.contents.fh)
            if h is None:
                return -errno.EBADF
            n = min(size, len(h.data) - offset)
            if n <= 0:
                return 0
            ctypes.memmove(buf, h.address + offset, n)
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


def fuse_kwargs(*, watch: bool, allow_other: bool = False, auto_unmount: bool = True, extra=None,
                readdirplus: bool = True) -> dict:
    """The libfuse options (as mfusepy keyword arguments) of an arrayfs
    mount: read-only, multithreaded, ``use_ino``, ``default_permissions``
    (the 0444/0555 modes are enforced by the kernel), kernel page cache kept
    across opens, 1-day entry/attribute timeouts (1 s with ``auto_cache``
    when watching on libfuse 2), no negative caching while watching.
    ``extra`` (``dict`` of user ``-o`` options, ``True`` for flags)
    overrides; ``rw`` is refused by the mount (see :mod:`arrayfs.fs.mount`).
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
    if short:
        kw["auto_cache"] = True
    else:
        kw["kernel_cache"] = True
    if allow_other:
        kw["allow_other"] = True
    if auto_unmount:
        kw["auto_unmount"] = True
    if extra:
        kw.update(extra)
    return kw


def run(view: FsView, mountpoint: str, *, fuse_options: dict, on_ready=None, watcher=None,
        readdirplus: bool = True) -> ArrayFsOperations:
    """Mount ``view`` at ``mountpoint`` and serve until unmounted (blocks).

    Args:
        fuse_options: mfusepy keyword arguments (see :func:`fuse_kwargs`).
        on_ready: called once the kernel has initialised the mount.
        watcher: started on init, stopped on unmount (see
            :mod:`arrayfs.fs.watch`); it is given the operations object as
            ``watcher.operations`` before the mount, to invalidate through.
        readdirplus: give full attributes in listings when the kernel asks
            (libfuse 3); see the module docstring.

    Returns the operations object once unmounted. Raises ``RuntimeError``
    when libfuse fails to mount (its message went to stderr).
    """
    ops = ArrayFsOperations(view, on_ready=on_ready, watcher=watcher)
    ops.readdirplus = readdirplus
    if watcher is not None:
        watcher.operations = ops
    _fuse_class()(ops, mountpoint, **fuse_options)
    return ops
