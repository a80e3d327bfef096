"""libfuse through ctypes: the one module that knows libfuse's C layout.

mfusepy binds libfuse's *high-level* API, which keeps a node per name the
kernel looked up, resolves every request to a path under one lock and
copies every read. With the *low-level* API (libfuse 3) the kernel talks
in inode numbers, the daemon keeps nothing per name, and a read is
answered from the decoded record itself.

What this module holds of libfuse 3 (``include/fuse_lowlevel.h``,
``fuse_common.h``, ``lib/fuse_versionscript``; ``struct fuse_lowlevel_ops``
only grows at its end): which libfuse, and mfusepy loaded on it (whose
``fuse_file_info`` and ``fuse_conn_info`` it takes); ``struct fuse_args``,
``fuse_buf``, ``fuse_custom_io``, the operations table, the prototypes
called; the kernel's ``FUSE_DEV_IOC_CLONE``. Replies with attributes,
entries, listings and ``statfs`` are built here in the kernel's own layout
(``fuse_kernel.h``, the kernel's stable ABI: :class:`Replies`) and sent with
``fuse_reply_buf``, as libfuse's own ``fuse_reply_entry`` and
``fuse_add_direntry_plus`` would send them, without a ``struct stat`` per
answer. ``tests/test_fs_lowlevel.py`` checks all of it against the installed
libfuse and kernel, byte for byte, before any mount.

Use: subclass :class:`Handler`, implement the operations you serve (one
left ``None`` is answered by libfuse itself: ``ENOSYS``, or nothing for
``forget``), and pass it to :class:`Session`. An operation answers its
request exactly once, or raises ``OSError`` before answering (answered
with that ``errno``; any other exception is logged and answered ``EIO``).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import logging
import os
import signal
import stat
import struct
import threading

import numpy as np

from .view import st_blocks

__all__ = ["libfuse_path", "load_mfusepy", "libfuse_major", "available", "library", "Handler", "Session", "Replies",
           "reply_err", "reply_buf", "reply_open", "file_info", "CAP_READDIRPLUS", "CAP_READDIRPLUS_AUTO",
           "CAP_NO_OPEN_SUPPORT"]

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
            _mfusepy_path, _mfusepy = path, mfusepy
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
# ioctl(fd, FUSE_DEV_IOC_CLONE, &session_fd) (fuse_kernel.h: _IOR(229, 0, uint32_t)).
_DEV_IOC_CLONE = 0x8004E500

_c_ino = ctypes.c_uint64
_c_off = ctypes.c_int64
_v = ctypes.c_void_p

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
_LISTING = ctypes.CFUNCTYPE(None, _v, _c_ino, ctypes.c_size_t, _c_off, _v)
_PROTOTYPES = {
    "init": ctypes.CFUNCTYPE(None, _v, _v),
    "destroy": ctypes.CFUNCTYPE(None, _v),
    "lookup": ctypes.CFUNCTYPE(None, _v, _c_ino, ctypes.c_char_p),
    "getattr": ctypes.CFUNCTYPE(None, _v, _c_ino, _v),
    "open": ctypes.CFUNCTYPE(None, _v, _c_ino, _v),
    "read": _LISTING, "readdir": _LISTING, "readdirplus": _LISTING,  # (req, ino, size, off, fi)
    "opendir": ctypes.CFUNCTYPE(None, _v, _c_ino, _v),
    "statfs": ctypes.CFUNCTYPE(None, _v, _c_ino),
}


class _Ops(ctypes.Structure):
    _fields_ = [(name, _v) for name in OPERATIONS]


class _Args(ctypes.Structure):
    """struct fuse_args (fuse_opt.h)."""

    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)), ("allocated", ctypes.c_int)]


class _CustomIO(ctypes.Structure):
    """struct fuse_custom_io (fuse_lowlevel.h, 3.14 to 3.16)."""

    _fields_ = [("writev", _v), ("read", _v), ("splice_receive", _v), ("splice_send", _v)]


class _IOVec(ctypes.Structure):
    _fields_ = [("base", _v), ("len", ctypes.c_size_t)]


_WRITEV = ctypes.CFUNCTYPE(ctypes.c_ssize_t, ctypes.c_int, ctypes.POINTER(_IOVec), ctypes.c_int, _v)


class _Buf(ctypes.Structure):
    """struct fuse_buf (fuse_common.h); ``mem_size`` since 3.17, and room
    for fields a later release may add (libfuse writes only those it has)."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", _v), ("fd", ctypes.c_int),
                ("pos", ctypes.c_int64), ("mem_size", ctypes.c_size_t), ("_reserved", ctypes.c_uint64 * 8)]


_lib = _pylib = _structs = None
_lock = threading.Lock()


def _load():
    """``(lib, mfusepy)``: the libfuse 3 that mfusepy loaded, with the
    prototypes of the functions used here. Raises ``OSError`` when mfusepy
    loaded libfuse 2."""
    global _lib, _pylib, _structs
    with _lock:
        if _lib is None:
            m = load_mfusepy()
            if m.fuse_version_major != 3:
                raise OSError(f"the low-level API needs libfuse 3; mfusepy loaded {m.fuse_version_major}")
            lib = ctypes.CDLL(libfuse_path())
            sz, i = ctypes.c_size_t, ctypes.c_int
            for name, restype, *args in [
                ("fuse_reply_err", i, _v, i), ("fuse_reply_open", i, _v, _v), ("fuse_reply_buf", i, _v, _v, sz),
                ("fuse_lowlevel_notify_inval_entry", i, _v, _c_ino, ctypes.c_char_p, sz),
                ("fuse_lowlevel_notify_inval_inode", i, _v, _c_ino, _c_off, _c_off),
                ("fuse_session_new", _v, ctypes.POINTER(_Args), _v, sz, _v), ("fuse_session_mount", i, _v,
                                                                              ctypes.c_char_p),
                ("fuse_session_unmount", None, _v), ("fuse_session_destroy", None, _v),
                ("fuse_session_receive_buf", i, _v, ctypes.POINTER(_Buf)), ("fuse_session_fd", i, _v),
                ("fuse_session_custom_io", i, _v, ctypes.POINTER(_CustomIO), i), ("fuse_version", i),
            ]:
                fn = getattr(lib, name)
                fn.restype, fn.argtypes = restype, args
            # The same library, called with the GIL held: a request is
            # processed by the thread that received it, without giving the
            # GIL up and taking it back around every callback.
            _pylib = ctypes.PyDLL(libfuse_path())
            _pylib.fuse_session_process_buf.restype = None
            _pylib.fuse_session_process_buf.argtypes = [_v, ctypes.POINTER(_Buf)]
            _structs, _lib = m, lib
    return _lib, _structs


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
    """mfusepy, whose ``fuse_file_info`` and ``fuse_conn_info`` describe
    this platform's structures."""
    return _load()[1]


# -- replies in the kernel's layout ---------------------------------------------

# fuse_kernel.h: struct fuse_attr (ino, size, blocks, atime, mtime, ctime;
# atimensec, mtimensec, ctimensec, mode, nlink, uid, gid, rdev, blksize,
# flags), fuse_entry_out (nodeid, generation, entry_valid, attr_valid,
# entry_valid_nsec, attr_valid_nsec, attr), fuse_attr_out (attr_valid,
# attr_valid_nsec, dummy, attr), fuse_kstatfs (blocks, bfree, bavail, files,
# ffree; bsize, namelen, frsize, padding, spare[6]); a fuse_dirent's name at
# byte 24 (ino, off, namelen, type), a fuse_direntplus's at 152 (after a
# fuse_entry_out); entries padded to 8 bytes.
_ATTR = "6Q10I"
_ENTRY = struct.Struct("<4Q2I" + _ATTR)
_ATTR_OUT = struct.Struct("<QII" + _ATTR)
_STATFS = struct.Struct("<5Q10I")
_DIRENT = struct.Struct("<QQII")
_NAME_AT, _NAME_AT_PLUS = 24, 152
_POWERS = [10 ** np.arange(w - 1, -1, -1, dtype=np.int64) for w in range(21)]


def _timeout(t: float) -> tuple:
    """``(seconds, nanoseconds)`` of a timeout, as libfuse's ``calc_timeout_*``."""
    sec = min(max(int(t), 0), (1 << 64) - 1)
    return sec, min(max(int((t - sec) * 1e9), 0), 999_999_999)


class Replies:
    """Bodies of replies in the kernel's layout, for :func:`reply_buf`.

    Args:
        uid, gid: owner of every node.
        entry_timeout, attr_timeout: how long (seconds) the kernel may keep
            a name and attributes.

    ``a`` below is an :class:`arrayfs.fs.view.Attr` (mode, inode, link
    count, size in bytes, mtime in ns, block size in bytes).
    """

    def __init__(self, uid: int, gid: int, entry_timeout: float, attr_timeout: float):
        self.uid, self.gid = uid, gid
        (self._es, self._ens), (self._as, self._ans) = _timeout(entry_timeout), _timeout(attr_timeout)

    def _attr(self, a) -> tuple:
        s, ns = divmod(a.mtime_ns, 1_000_000_000)
        return a.ino, a.size, st_blocks(a.size), s, s, s, ns, ns, ns, a.mode, a.nlink, self.uid, self.gid, 0, \
            a.blksize, 0

    def entry(self, a, nodeid: int | None = None) -> bytes:
        """A ``fuse_entry_out`` answering a LOOKUP of ``a`` (``nodeid``:
        the inode the kernel keeps, default ``a.ino``; 0 keeps none)."""
        return _ENTRY.pack(a.ino if nodeid is None else nodeid, 0, self._es, self._as, self._ens, self._ans,
                           *self._attr(a))

    def negative(self, timeout: float) -> bytes:
        """A ``fuse_entry_out`` saying "no such name" for ``timeout`` seconds."""
        s, ns = _timeout(timeout)
        return _ENTRY.pack(0, 0, s, 0, ns, 0, *(0,) * 16)

    def attr(self, a) -> bytes:
        """A ``fuse_attr_out`` answering a GETATTR."""
        return _ATTR_OUT.pack(self._as, self._ans, 0, *self._attr(a))

    @staticmethod
    def statfs(f: dict) -> bytes:
        """A ``fuse_statfs_out`` of ``statvfs`` fields (``f_blocks``...)."""
        return _STATFS.pack(f["f_blocks"], f["f_bfree"], f["f_bavail"], f["f_files"], f["f_ffree"], f["f_bsize"],
                            f["f_namemax"], f["f_frsize"], 0, *(0,) * 6)

    def dirents(self, buf: np.ndarray, pos: int, batch, plus: bool, attrs: bool) -> tuple:
        """Encode the entries of ``batch`` (an :class:`arrayfs.fs.view.DirBatch`)
        that fit in ``buf`` (``uint8``) from byte ``pos``: ``fuse_direntplus``
        with ``plus`` (the kernel keeps the entry and its attributes only
        with ``attrs`` and when the batch has sizes), else ``fuse_dirent``. A run of records is written at
        once: copies of one entry with name, inode, size and offset changed.
        Returns ``(bytes written, entries written)``."""
        if batch.first_name >= 0:
            name, width, count = None, batch.width, len(batch.inos)
        else:
            name = batch.names[0].encode("utf-8", "surrogateescape")
            width, count = len(name), 1
        at = _NAME_AT_PLUS if plus else _NAME_AT
        size = (at + width + 7) & ~7
        k = min(count, (len(buf) - pos) // size)
        if k <= 0:
            return 0, 0
        a = batch.attr
        head = bytearray(size)
        if plus:  # "." and "..": nothing for the kernel to keep
            head[:128] = self.entry(a, 0)
        _DIRENT.pack_into(head, at - 24, 0, 0, width, stat.S_IFMT(a.mode) >> 12)
        rows = buf[pos : pos + k * size].reshape(k, size)
        rows[:] = np.frombuffer(head, np.uint8)
        words = rows.view("<u8")
        j = np.arange(k, dtype=np.uint64)
        inos = np.uint64(batch.inos[0]) + j
        words[:, at // 8 - 3] = inos
        words[:, at // 8 - 2] = np.uint64(batch.next_offset) + j
        if plus:
            words[:, 5] = inos
            # A batch without sizes (a corrupt chunk's records): entries the
            # kernel must look up, as without attrs.
            if attrs and batch.sizes is not None and (name is None or name not in (b".", b"..")):
                words[:, 0] = inos
                sizes = np.asarray(batch.sizes[:k], dtype=np.uint64)
                words[:, 6] = sizes
                words[:, 7] = st_blocks(sizes)
        if name is None:
            numbers = np.arange(batch.first_name, batch.first_name + k, dtype=np.int64)
            rows[:, at : at + width] = numbers[:, None] // _POWERS[width] % 10 + 48
        else:
            rows[0, at : at + width] = np.frombuffer(name, np.uint8)
        return k * size, k


def reply_err(req: int, err: int) -> int:
    """Answer with ``errno`` ``err`` (0: an empty success). Replies return
    libfuse's 0, or -errno when the kernel no longer waits for the answer."""
    return _lib.fuse_reply_err(req, err)


def reply_buf(req: int, data, size: int) -> int:
    """Answer with ``size`` bytes at ``data`` (a ``bytes`` object or an
    address); libfuse writes them to the kernel without copying."""
    return _lib.fuse_reply_buf(req, data, size)


def reply_open(req: int, fi: int, fh: int, *, keep_cache: bool = True) -> int:
    """Answer an ``open``/``opendir`` (``fi``: the address libfuse passed)
    with handle ``fh``; ``keep_cache``: the file's pages stay cached across
    opens."""
    info = _structs.fuse_file_info.from_address(fi)
    info.fh, info.keep_cache = fh, keep_cache
    return _lib.fuse_reply_open(req, fi)


def file_info(fi: int):
    """``(flags, fh)`` of the ``struct fuse_file_info`` at address ``fi``
    (``(0, 0)`` for a null address)."""
    if not fi:
        return 0, 0
    info = _structs.fuse_file_info.from_address(fi)
    return info.flags, info.fh


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
