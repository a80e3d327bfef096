"""libfuse through ctypes: the one module that knows libfuse's C layout.

mfusepy binds libfuse's *high-level* API, which keeps a node per name the
kernel looked up, resolves every request to a path under one lock and
copies every read. With the *low-level* API (libfuse 3) the kernel talks
in inode numbers, the daemon keeps nothing per name, and a read is
answered from the decoded record itself.

This module holds all of libfuse's ABI arrayfs uses (libfuse
``include/fuse_lowlevel.h``, ``fuse_common.h``, ``fuse_kernel.h`` and
``lib/fuse_versionscript`` of 3.x; ``struct fuse_lowlevel_ops`` only grows
at its end): which libfuse, and mfusepy loaded on it (whose ``struct stat``,
``statvfs``, ``fuse_file_info`` and ``fuse_conn_info`` it takes); ``struct
fuse_args``, ``fuse_entry_param``, ``fuse_buf``, ``fuse_custom_io``, the
operations table and the prototypes called; the replies; the kernel's
``FUSE_DEV_IOC_CLONE``. ``tests/test_fs_lowlevel.py`` checks them against
the installed libfuse and kernel, so an incompatible one fails there,
before any mount.

Use: subclass :class:`Handler`, implement the operations you serve (an
operation left as ``None`` is answered by libfuse itself: ``ENOSYS``, or
nothing for ``forget``), and pass it to :class:`Session`. Every operation
must answer its request exactly once with one of the ``reply_*`` functions,
or raise ``OSError`` before answering (the request is then answered with
that ``errno``; any other exception is logged and answered ``EIO``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import signal
import threading

__all__ = [
    "libfuse_path",
    "load_mfusepy",
    "libfuse_major",
    "Handler",
    "Session",
    "DirentRuns",
    "EntryParam",
    "StatWriter",
    "available",
    "library",
    "reply_err",
    "reply_entry",
    "reply_attr",
    "reply_buf",
    "reply_open",
    "reply_statfs",
    "add_direntry",
    "add_direntry_plus",
    "CAP_READDIRPLUS",
    "CAP_READDIRPLUS_AUTO",
    "CAP_NO_OPEN_SUPPORT",
]

log = logging.getLogger("arrayfs.fs")

# -- which libfuse -------------------------------------------------------------

_mfusepy = None
_mfusepy_path = None
_mfusepy_lock = threading.Lock()


def libfuse_path() -> str | None:
    """Path of the libfuse to use: ``FUSE_LIBRARY_PATH``, else the library
    ``FUSE_LIBRARY_NAME`` names, else libfuse 3, else libfuse 2 (mfusepy's
    own default is the other way round)."""
    if os.environ.get("FUSE_LIBRARY_PATH"):
        return os.environ["FUSE_LIBRARY_PATH"]
    if _mfusepy_path is not None:
        return _mfusepy_path
    name = os.environ.get("FUSE_LIBRARY_NAME")
    if name:
        return ctypes.util.find_library(name)
    return ctypes.util.find_library("fuse3") or ctypes.util.find_library("fuse")


def load_mfusepy():
    """mfusepy, imported on the library :func:`libfuse_path` picks, so that
    its structures and this module's calls describe one library. Raises
    ``ImportError`` (no mfusepy), ``OSError`` (no libfuse) or
    ``AttributeError`` (unusable libfuse) as mfusepy does."""
    global _mfusepy, _mfusepy_path
    with _mfusepy_lock:
        if _mfusepy is None:
            path = libfuse_path()
            saved = os.environ.get("FUSE_LIBRARY_PATH")
            try:
                if path and saved is None:
                    os.environ["FUSE_LIBRARY_PATH"] = path
                import mfusepy
            finally:
                if saved is None:
                    os.environ.pop("FUSE_LIBRARY_PATH", None)
            _mfusepy_path = path
            _mfusepy = mfusepy
    return _mfusepy


def libfuse_major() -> int:
    """Major version (2 or 3) of the libfuse in use."""
    return load_mfusepy().fuse_version_major


# fuse_common.h capability bits (struct fuse_conn_info .capable / .want).
CAP_READDIRPLUS = 1 << 13
CAP_READDIRPLUS_AUTO = 1 << 14
CAP_NO_OPEN_SUPPORT = 1 << 17
CAP_PARALLEL_DIROPS = 1 << 18
# fuse_kernel.h: FUSE_PARALLEL_DIROPS in struct fuse_init_out .flags (at byte 12).
_INIT_PARALLEL_DIROPS = 1 << 18
_INIT_FLAGS_AT = 12

_c_req = ctypes.c_void_p
_c_ino = ctypes.c_uint64
_c_off = ctypes.c_int64

# The operations of struct fuse_lowlevel_ops, in order (fuse_lowlevel.h,
# unchanged across 3.x; later versions append more).
OPERATIONS = (
    "init", "destroy", "lookup", "forget", "getattr", "setattr", "readlink", "mknod", "mkdir", "unlink",
    "rmdir", "symlink", "rename", "link", "open", "read", "write", "flush", "release", "fsync", "opendir",
    "readdir", "releasedir", "fsyncdir", "statfs", "setxattr", "getxattr", "listxattr", "removexattr",
    "access", "create", "getlk", "setlk", "bmap", "ioctl", "poll", "write_buf", "retrieve_reply",
    "forget_multi", "flock", "fallocate", "readdirplus",
)

# Prototypes of the operations arrayfs serves (the others stay NULL).
# Pointer arguments are plain addresses: cheaper than ctypes pointer objects.
_PROTOTYPES = {
    "init": ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p),
    "destroy": ctypes.CFUNCTYPE(None, ctypes.c_void_p),
    "lookup": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_char_p),
    "getattr": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "open": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "read": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_size_t, _c_off, ctypes.c_void_p),
    "opendir": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "readdir": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_size_t, _c_off, ctypes.c_void_p),
    "statfs": ctypes.CFUNCTYPE(None, _c_req, _c_ino),
    "readdirplus": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_size_t, _c_off, ctypes.c_void_p),
}


class _Ops(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in OPERATIONS]


class _Args(ctypes.Structure):
    """struct fuse_args (fuse_opt.h)."""

    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)), ("allocated", ctypes.c_int)]


class _CustomIO(ctypes.Structure):
    """struct fuse_custom_io (fuse_lowlevel.h, 3.14 to 3.16)."""

    _fields_ = [("writev", ctypes.c_void_p), ("read", ctypes.c_void_p), ("splice_receive", ctypes.c_void_p),
                ("splice_send", ctypes.c_void_p)]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_WRITEV = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_int, ctypes.c_void_p)


class _Buf(ctypes.Structure):
    """struct fuse_buf (fuse_common.h); ``mem_size`` since 3.17, and room
    for fields a later release may add (libfuse writes only those it has)."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p), ("fd", ctypes.c_int),
                ("pos", ctypes.c_int64), ("mem_size", ctypes.c_size_t), ("_reserved", ctypes.c_uint64 * 8)]


_lib = None
_pylib = None
_structs = None
_lock = threading.Lock()
# ioctl(fd, FUSE_DEV_IOC_CLONE, &session_fd) (fuse_kernel.h: _IOR(229, 0, uint32_t)).
_DEV_IOC_CLONE = 0x8004E500


def _load():
    """``(lib, mfusepy)``: the libfuse 3 that mfusepy loaded, with the
    prototypes of the functions used here. Raises ``OSError`` when mfusepy
    loaded libfuse 2."""
    global _lib, _structs
    with _lock:
        if _lib is None:
            m = load_mfusepy()
            if m.fuse_version_major != 3:
                raise OSError(f"the low-level API needs libfuse 3; mfusepy loaded {m.fuse_version_major}")
            path = libfuse_path()
            lib = ctypes.CDLL(path)
            _prototypes(lib)
            # The same library, called with the GIL held: a request is
            # processed by the thread that received it, without giving the
            # GIL up and taking it back around every callback.
            global _pylib
            _pylib = ctypes.PyDLL(path)
            _proto(_pylib.fuse_session_process_buf, None, ctypes.c_void_p, ctypes.POINTER(_Buf))
            _structs = m
            _lib = lib
    return _lib, _structs


def _proto(fn, restype, *argtypes):
    fn.restype = restype
    fn.argtypes = list(argtypes)


def _prototypes(lib) -> None:
    v, sz, i, d = ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_double
    _proto(lib.fuse_reply_err, i, v, i)
    _proto(lib.fuse_reply_entry, i, v, v)
    _proto(lib.fuse_reply_attr, i, v, v, d)
    _proto(lib.fuse_reply_open, i, v, v)
    _proto(lib.fuse_reply_buf, i, v, v, sz)
    _proto(lib.fuse_reply_statfs, i, v, v)
    _proto(lib.fuse_add_direntry, sz, v, v, sz, ctypes.c_char_p, v, _c_off)
    _proto(lib.fuse_add_direntry_plus, sz, v, v, sz, ctypes.c_char_p, v, _c_off)
    _proto(lib.fuse_lowlevel_notify_inval_entry, i, v, _c_ino, ctypes.c_char_p, sz)
    _proto(lib.fuse_lowlevel_notify_inval_inode, i, v, _c_ino, _c_off, _c_off)
    _proto(lib.fuse_session_new, v, ctypes.POINTER(_Args), v, sz, v)
    _proto(lib.fuse_session_mount, i, v, ctypes.c_char_p)
    _proto(lib.fuse_session_unmount, None, v)
    _proto(lib.fuse_session_destroy, None, v)
    _proto(lib.fuse_session_receive_buf, i, v, ctypes.POINTER(_Buf))
    _proto(lib.fuse_session_fd, i, v)
    _proto(lib.fuse_session_custom_io, i, v, ctypes.POINTER(_CustomIO), i)
    _proto(lib.fuse_version, i)


def available() -> bool:
    """Whether the low-level API can be used here (mfusepy loaded libfuse 3)."""
    try:
        _load()
        return True
    except (ImportError, OSError, AttributeError):
        return False


def library():
    """The ``ctypes.CDLL`` of libfuse 3 (see :func:`_load`)."""
    return _load()[0]


def structs():
    """mfusepy, whose ``c_stat``, ``c_statvfs``, ``fuse_file_info`` and
    ``fuse_conn_info`` describe this platform's structures."""
    return _load()[1]


_entry_param_class = None


def EntryParam():
    """A new, zeroed ``struct fuse_entry_param`` (fuse_lowlevel.h): ``ino``,
    ``generation``, ``attr`` (``struct stat``), ``attr_timeout`` and
    ``entry_timeout`` (seconds)."""
    global _entry_param_class
    if _entry_param_class is None:
        m = structs()

        class fuse_entry_param(ctypes.Structure):
            _fields_ = [
                ("ino", ctypes.c_uint64),
                ("generation", ctypes.c_uint64),
                ("attr", m.c_stat),
                ("attr_timeout", ctypes.c_double),
                ("entry_timeout", ctypes.c_double),
            ]

        _entry_param_class = fuse_entry_param
    return _entry_param_class()


class StatWriter:
    """Writes attributes into a ``struct stat``: a copy of a template for
    what the records of one shard share (mode, link count, mtime, block
    size, owner), then inode, size and blocks. ``attr`` is anything with
    ``mode, ino, nlink, size, mtime_ns, blksize`` (an
    :class:`arrayfs.fs.view.Attr`)."""

    def __init__(self, uid: int, gid: int):
        self.uid, self.gid = uid, gid
        self._c_stat = structs().c_stat
        self._templates: dict = {}

    def fill(self, st, a) -> None:
        t = self._templates.get((a.mode, a.nlink, a.mtime_ns, a.blksize))
        if t is None:
            t = self._template(a)
        ctypes.memmove(ctypes.addressof(st), t, len(t))
        st.st_ino = a.ino
        st.st_size = a.size
        st.st_blocks = (a.size + 511) >> 9

    def _template(self, a) -> bytes:
        st = self._c_stat()
        st.st_mode, st.st_nlink, st.st_blksize, st.st_uid, st.st_gid = a.mode, a.nlink, a.blksize, self.uid, self.gid
        sec, ns = divmod(a.mtime_ns, 1_000_000_000)
        for ts in (st.st_mtimespec, st.st_ctimespec, st.st_atimespec):
            ts.tv_sec, ts.tv_nsec = sec, ns
        t = bytes(st)
        if len(self._templates) > 4096:  # one per shard (mtime) and kind: bounded all the same
            self._templates.clear()
        self._templates[(a.mode, a.nlink, a.mtime_ns, a.blksize)] = t
        return t

    def new(self):
        """A zeroed ``struct stat``."""
        return self._c_stat()


# -- replies (each answers a request once; the return value is libfuse's:
# 0, or -errno when the kernel no longer waits for the answer) -----------------


def reply_err(req: int, err: int) -> int:
    return _lib.fuse_reply_err(req, err)


def reply_entry(req: int, entry) -> int:
    """Answer a ``lookup`` with a :func:`EntryParam` (``ino`` 0 and a
    positive ``entry_timeout``: a cached negative answer)."""
    return _lib.fuse_reply_entry(req, ctypes.addressof(entry))


def reply_attr(req: int, stat, timeout: float) -> int:
    return _lib.fuse_reply_attr(req, ctypes.addressof(stat), timeout)


def reply_open(req: int, fi: int, fh: int, *, keep_cache: bool = True, direct_io: bool = False) -> int:
    """Answer an ``open``/``opendir`` (``fi``: the address libfuse passed)
    with handle ``fh``; ``keep_cache``: the file's pages stay cached across
    opens."""
    info = _structs.fuse_file_info.from_address(fi)
    info.fh = fh
    info.keep_cache = keep_cache
    info.direct_io = direct_io
    return _lib.fuse_reply_open(req, fi)


def file_info(fi: int):
    """``(flags, fh)`` of the ``struct fuse_file_info`` at address ``fi``
    (``(0, 0)`` for a null address)."""
    if not fi:
        return 0, 0
    info = _structs.fuse_file_info.from_address(fi)
    return info.flags, info.fh


def reply_buf(req: int, data, size: int) -> int:
    """Answer with ``size`` bytes at ``data`` (a ``bytes`` object or an
    address); libfuse writes them to the kernel without copying."""
    return _lib.fuse_reply_buf(req, data, size)


def reply_statfs(req: int, fields: dict) -> int:
    """Answer a ``statfs`` with ``struct statvfs`` fields (``f_bsize``...)."""
    st = _structs.c_statvfs()
    for key, value in fields.items():
        if hasattr(st, key):
            setattr(st, key, value)
    return _lib.fuse_reply_statfs(req, ctypes.addressof(st))


def add_direntry(req: int, buf: int, size: int, name: bytes, stat_address: int, off: int) -> int:
    """Append a directory entry at address ``buf`` (``size`` bytes left);
    returns the entry's size, which is larger than ``size`` when it did not
    fit (nothing was written then)."""
    return _lib.fuse_add_direntry(req, buf, size, name, stat_address, off)


def add_direntry_plus(req: int, buf: int, size: int, name: bytes, entry_address: int, off: int) -> int:
    """:func:`add_direntry` with a ``struct fuse_entry_param`` (READDIRPLUS):
    the kernel then knows the entry's inode and attributes."""
    return _lib.fuse_add_direntry_plus(req, buf, size, name, entry_address, off)


# -- runs of directory entries ------------------------------------------------

# fuse_kernel.h: offsetof(struct fuse_dirent, name), and the same in
# struct fuse_direntplus (after a struct fuse_entry_out of 128 bytes).
# Entries are padded to 8 bytes. The 64-bit words patched per entry:
# fuse_dirent ino, off (0, 1); plus: fuse_entry_out nodeid, attr.ino,
# attr.size, attr.blocks, dirent ino, off (0, 5, 6, 7, 16, 17).
_NAME_OFFSET = 24
_NAME_OFFSET_PLUS = 152


class DirentRuns:
    """Encodes a run of directory entries named by consecutive zero-padded
    numbers, with consecutive inodes and one attribute template (records of
    one shard), all at once with numpy.

    libfuse writes the first entry of the run (``fuse_add_direntry`` or
    ``fuse_add_direntry_plus``); the others are copies of it with the name,
    inode, size and offset changed in place. The first use checks the
    second entry against libfuse's own encoding of it; if they differ (a
    libfuse or kernel protocol this layout does not describe), every entry is
    encoded by libfuse from then on (:attr:`vectorized` is ``False``).
    """

    def __init__(self):
        self.vectorized = None  # unknown until checked

    def encode(self, req, buf, pos: int, room: int, first_name: int, width: int, first_ino: int, count: int,
               sizes, next_offset: int, target, plus: bool, attrs: bool) -> tuple[int, int]:
        """Write up to ``count`` entries at byte ``pos`` of ``buf`` (a
        ctypes buffer), in at most ``room`` bytes: names ``first_name + j``
        padded to ``width`` digits, inodes ``first_ino + j``, sizes
        ``sizes[j]`` (``int64`` array, with ``attrs``), offsets
        ``next_offset + j``. ``target``: the ``struct stat`` (plain) or the
        ``fuse_entry_param`` (plus) holding the shared attributes. Returns
        ``(bytes written, entries written)``."""
        base = ctypes.addressof(buf)
        size = ((_NAME_OFFSET_PLUS if plus else _NAME_OFFSET) + width + 7) & ~7
        k = min(count, room // size)
        if k <= 0:
            return 0, 0
        first = self._one(req, base + pos, room, first_name, width, first_ino, sizes, 0, next_offset, target,
                          plus, attrs)
        if first != size or k == 1:
            return (first, 1) if first <= room else (0, 0)
        if self.vectorized is None:
            self.vectorized = self._check(req, first_name, width, first_ino, sizes, next_offset, target, plus,
                                          attrs, size)
        if not self.vectorized:
            pos0, j = pos + size, 1
            while j < k:
                n = self._one(req, base + pos0, room - (pos0 - pos), first_name, width, first_ino, sizes, j,
                              next_offset, target, plus, attrs)
                if n > room - (pos0 - pos):
                    break
                pos0 += n
                j += 1
            return pos0 - pos, j
        self._fill(buf, pos, size, k, first_name, width, first_ino, sizes, next_offset, plus, attrs)
        return k * size, k

    @staticmethod
    def _one(req, address, room, first_name, width, first_ino, sizes, j, next_offset, target, plus, attrs) -> int:
        name = str(first_name + j).zfill(width).encode()
        if plus:
            target.attr.st_ino = first_ino + j
            if attrs:
                target.ino = first_ino + j
                sz = int(sizes[j])
                target.attr.st_size = sz
                target.attr.st_blocks = (sz + 511) >> 9
            return _lib.fuse_add_direntry_plus(req, address, room, name, ctypes.addressof(target), next_offset + j)
        target.st_ino = first_ino + j
        return _lib.fuse_add_direntry(req, address, room, name, ctypes.addressof(target), next_offset + j)

    @staticmethod
    def _fill(buf, pos, size, k, first_name, width, first_ino, sizes, next_offset, plus, attrs) -> None:
        import numpy as np

        rows = np.frombuffer(buf, dtype=np.uint8, count=k * size, offset=pos).reshape(k, size)
        rows[1:] = rows[0]
        words = rows.view("<u8")
        j = np.arange(k, dtype=np.uint64)
        inos = np.uint64(first_ino) + j
        if plus:
            words[:, 5] = inos
            words[:, 16] = inos
            if attrs:
                words[:, 0] = inos
                sz = np.asarray(sizes[:k], dtype=np.uint64)
                words[:, 6] = sz
                words[:, 7] = (sz + np.uint64(511)) >> np.uint64(9)
            words[:, 17] = np.uint64(next_offset) + j
            at = _NAME_OFFSET_PLUS
        else:
            words[:, 0] = inos
            words[:, 1] = np.uint64(next_offset) + j
            at = _NAME_OFFSET
        numbers = np.arange(first_name, first_name + k, dtype=np.int64)
        powers = 10 ** np.arange(width - 1, -1, -1, dtype=np.int64)
        rows[:, at : at + width] = (numbers[:, None] // powers % 10 + 48).astype(np.uint8)

    def _check(self, req, first_name, width, first_ino, sizes, next_offset, target, plus, attrs, size) -> bool:
        """Whether copying and patching gives libfuse's bytes for entry 1."""
        ours = ctypes.create_string_buffer(2 * size)
        theirs = ctypes.create_string_buffer(size)
        saved = bytes(target)
        try:
            self._one(req, ctypes.addressof(ours), size, first_name, width, first_ino, sizes, 0, next_offset, target,
                      plus, attrs)
            self._fill(ours, 0, size, 2, first_name, width, first_ino, sizes, next_offset, plus, attrs)
            self._one(req, ctypes.addressof(theirs), size, first_name, width, first_ino, sizes, 1, next_offset,
                      target, plus, attrs)
        finally:
            ctypes.memmove(ctypes.addressof(target), saved, len(saved))
        ok = ours.raw[size:] == theirs.raw
        if not ok:
            log.warning("directory entries: libfuse's encoding differs from the one arrayfs patches; "
                        "encoding every entry with libfuse")
        return ok


# -- the handler and the session ----------------------------------------------


class Handler:
    """Base class of a low-level file system. Each operation is ``None``
    here; a subclass defines those it serves, with these signatures
    (``req``, addresses and inode numbers are ``int``; ``name`` is ``bytes``)::

        init(conn)                               # mfusepy.fuse_conn_info, writable
        destroy()
        lookup(req, parent, name)
        getattr(req, ino, fi)                    # fi: address of fuse_file_info or 0
        open(req, ino, fi)                       # answer with reply_open(req, fi, fh)
        read(req, ino, size, off, fi)
        opendir(req, ino, fi)
        readdir(req, ino, size, off, fi)
        readdirplus(req, ino, size, off, fi)
        statfs(req, ino)

    ``release`` and ``releasedir`` are answered by libfuse itself.
    """

    init = destroy = lookup = getattr = open = read = None
    opendir = readdir = readdirplus = statfs = None


def _request_callback(name, method):
    """Wrap ``method(req, *args)`` as a libfuse callback that always answers."""

    def callback(req, *args):
        try:
            method(req, *args)
        except OSError as e:
            reply_err(req, e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO)
        except BaseException:  # noqa: BLE001 - a request must be answered, the daemon must live
            log.exception("FUSE %s failed", name)
            reply_err(req, errno.EIO)

    return _PROTOTYPES[name](callback)


class Session:
    """A low-level FUSE session serving a :class:`Handler`.

    Args:
        handler: the file system.
        mountpoint: an existing directory.
        options: libfuse mount and session options (``-o`` items such as
            ``"ro"``, ``"fsname=x"``, ``"max_read=1048576"``). libfuse
            rejects unknown ones (its message goes to stderr).
        debug: libfuse's ``-d`` (log every request to stderr).

    :meth:`mount` mounts; :meth:`serve` receives and processes requests in
    the calling thread (and more threads), until the session ends or a
    stop is asked; :meth:`unmount` and :meth:`close` end it. The loop is
    this module's, not libfuse's: each thread receives a request
    (``fuse_session_receive_buf``, without the GIL) and processes it
    (``fuse_session_process_buf``, which calls the handler) holding the GIL
    throughout, so a request costs one GIL hand-over. Signals interrupt a
    waiting thread (``EINTR``): the loop then asks ``stop()``.

    A forked process calls :meth:`clone` first: it then reads requests
    from a queue of its own (``FUSE_DEV_IOC_CLONE``) and answers them there,
    so processes serve one mount in parallel. :meth:`invalidate_entry` and
    :meth:`invalidate_inode` may be called from any thread that is not
    serving a request (the kernel may wait for requests to finish).
    """

    def __init__(self, handler: Handler, mountpoint: str, options=(), *, debug: bool = False):
        lib, self._m = _load()
        self._lib = lib
        self.handler = handler
        self.mountpoint = os.fspath(mountpoint)
        self._se = None
        self._callbacks = {}
        ops = _Ops()
        for name in OPERATIONS:
            method = getattr(handler, name, None)
            if method is None or name not in _PROTOTYPES:
                continue
            if name == "init":
                fn = self._init_callback(method)
            elif name == "destroy":
                fn = _PROTOTYPES["destroy"](lambda _userdata, _m=method: _m())
            else:
                fn = _request_callback(name, method)
            self._callbacks[name] = fn
            setattr(ops, name, ctypes.cast(fn, ctypes.c_void_p).value)
        self._ops = ops
        argv = [b"arrayfs"] + ([b"-d"] if debug else [])
        if options:
            argv += [b"-o", ",".join(options).encode()]
        self._argv = (ctypes.c_char_p * len(argv))(*argv)
        self._args = _Args(len(argv), self._argv, 0)

    def _init_callback(self, method):
        conn_type = self._m.fuse_conn_info

        def init(_userdata, conn):
            try:
                c = conn_type.from_address(conn) if conn else None
                method(c)
                self._parallel_dirops = c is not None and bool(c.capable & c.want & CAP_PARALLEL_DIROPS)
            except BaseException:  # noqa: BLE001 - init must not unwind into libfuse
                log.exception("FUSE init failed")

        return _PROTOTYPES["init"](init)

    def mount(self) -> None:
        """Create the session and mount it. Raises ``RuntimeError`` when
        libfuse refuses the options or the mount (its reason went to
        stderr)."""
        lib = self._lib
        se = lib.fuse_session_new(ctypes.byref(self._args), ctypes.addressof(self._ops), ctypes.sizeof(self._ops),
                                  None)
        if not se:
            raise RuntimeError("libfuse refused the mount options")
        if lib.fuse_session_mount(se, os.fsencode(self.mountpoint)) != 0:
            lib.fuse_session_destroy(se)
            raise RuntimeError(f"libfuse could not mount {self.mountpoint}")
        self._se = se
        if lib.fuse_version() < 317:
            self._patch_init_reply()

    def _patch_init_reply(self) -> None:
        """libfuse before 3.17 never passes ``FUSE_PARALLEL_DIROPS`` to the
        kernel, whatever ``want`` says (upstream's fix: "Pass
        FUSE_PARALLEL_DIROPS to kernel"), and the kernel then takes every
        LOOKUP of a directory one at a time: readers opening files of one
        directory would wait for each other, however many workers serve.
        The reply to INIT, the first this session sends, goes through
        libfuse's custom I/O hook here and gets the flag when the kernel
        offered it and ``want`` kept it; then the hook becomes libc's own
        ``read`` and ``writev`` again (no Python per request)."""
        libc = ctypes.CDLL(None, use_errno=True)
        writev = libc.writev
        writev.argtypes, writev.restype = [ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_int], ctypes.c_ssize_t
        plain = _CustomIO(ctypes.cast(libc.writev, ctypes.c_void_p), ctypes.cast(libc.read, ctypes.c_void_p))

        def first_reply(fd, iov, count, _userdata):
            if count > 1 and iov[1].len >= _INIT_FLAGS_AT + 4 and getattr(self, "_parallel_dirops", False):
                flags = ctypes.c_uint32.from_address(iov[1].base + _INIT_FLAGS_AT)
                flags.value |= _INIT_PARALLEL_DIROPS
            self._lib.fuse_session_custom_io(self._se, ctypes.byref(plain), fd)
            return writev(fd, iov, count)

        self._first_reply = _WRITEV(first_reply)  # kept alive while libfuse may call it
        self._plain_io = plain
        io = _CustomIO(ctypes.cast(self._first_reply, ctypes.c_void_p), ctypes.cast(libc.read, ctypes.c_void_p))
        if self._lib.fuse_session_custom_io(self._se, ctypes.byref(io), self.fd) != 0:
            log.warning("libfuse's custom I/O refused: lookups in one directory will be serialized")

    @property
    def fd(self) -> int:
        """The session's ``/dev/fuse`` descriptor."""
        return self._lib.fuse_session_fd(self._se)

    def clone(self) -> None:
        """In a forked process: read this session's requests from a clone of
        the device of its own, put in place of the session's descriptor."""
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, _DEV_IOC_CLONE, ctypes.c_uint32(self.fd))
            os.dup2(fd, self.fd)
        finally:
            os.close(fd)

    def serve(self, threads: int = 1, stop=lambda: False) -> bool:
        """Receive and process requests in this thread and ``threads - 1``
        more until the session ends (unmounted: returns ``True``) or
        ``stop()`` is true when asked (after each request, and when a signal
        interrupts the wait: returns ``False``)."""
        done = threading.Event()
        wake = threads > 1 and threading.current_thread() is threading.main_thread()
        if wake and signal.getsignal(signal.SIGUSR1) in (signal.SIG_DFL, None):
            signal.signal(signal.SIGUSR1, lambda *_: None)  # only to interrupt a waiting thread
        extra = [threading.Thread(target=self._serve, args=(stop, done), daemon=True) for _ in range(threads - 1)]
        for t in extra:
            t.start()
        try:
            return self._serve(stop, done)
        finally:
            done.set()
            for t in extra:
                while t.is_alive():  # wake it from its wait until it sees the stop (else: the session's end)
                    if wake:
                        signal.pthread_kill(t.ident, signal.SIGUSR1)
                    t.join(0.01)

    def _serve(self, stop, done) -> bool:
        lib, se = self._lib, self._se
        receive, process = lib.fuse_session_receive_buf, _pylib.fuse_session_process_buf
        buf = _Buf()
        bufp = ctypes.pointer(buf)
        try:
            while not done.is_set() and not stop():
                res = receive(se, bufp)
                if res > 0:
                    process(se, bufp)
                elif res != -errno.EINTR and res != -errno.EAGAIN:
                    if res < 0:  # 0: unmounted (ENODEV); other errors end the session too
                        log.error("FUSE: reading a request failed: %s", os.strerror(-res))
                    done.set()
                    return True
            return False
        finally:
            if buf.mem:
                _libc_free(buf.mem)

    def unmount(self) -> None:
        """Unmount (a no-op once the kernel has let go). Serving processes
        then see the session end."""
        if self._se:
            self._lib.fuse_session_unmount(self._se)

    def close(self) -> None:
        """Destroy the session (after :meth:`unmount`)."""
        se, self._se = self._se, None
        if se:
            self._lib.fuse_session_destroy(se)

    def invalidate_entry(self, parent: int, name: bytes) -> bool:
        """Make the kernel forget directory entry ``name`` of inode
        ``parent`` (and, for a directory, what it cached below it). Returns
        whether the kernel had it."""
        se = self._se
        return bool(se) and self._lib.fuse_lowlevel_notify_inval_entry(se, parent, name, len(name)) == 0

    def invalidate_inode(self, ino: int) -> bool:
        """Make the kernel drop inode ``ino``'s cached attributes and pages.
        Returns whether the kernel had it."""
        se = self._se
        return bool(se) and self._lib.fuse_lowlevel_notify_inval_inode(se, ino, 0, 0) == 0


_libc_free = ctypes.CDLL(None).free
_libc_free.argtypes = [ctypes.c_void_p]
_libc_free.restype = None
