"""libfuse 3's low-level API through ctypes: the part mfusepy does not bind.

mfusepy binds libfuse's *high-level* API, where libfuse keeps a node (about
200 bytes) for every name the kernel has looked up or been given by
``READDIRPLUS``, resolves every request to a path under one global lock, and
copies every read into a buffer of its own. A mount whose records are
immutable files named by computed inode numbers needs none of that: with the
low-level API the kernel talks in inode numbers, the daemon keeps no state
per name (``ls -l`` of 10 million records costs the daemon nothing that
lasts), and a read is answered straight from the decoded record.

This module is the only one in arrayfs that knows libfuse's C ABI beyond
what mfusepy exposes (sources: libfuse ``include/fuse_lowlevel.h``,
``include/fuse_common.h`` and ``lib/fuse_versionscript`` of 3.x; the layout
of ``struct fuse_lowlevel_ops`` only grows at its end, so a prefix of it is
valid for every 3.x). It takes ``struct stat``, ``struct statvfs``,
``struct fuse_file_info`` and ``struct fuse_conn_info`` from mfusepy (public
names there, per platform and libfuse version) and defines the rest:
``struct fuse_args``, ``struct fuse_entry_param``, the operations table,
and the prototypes of the functions it calls. ``tests/test_fs_lowlevel.py``
checks those layouts and every symbol against the installed libfuse, so an
incompatible libfuse or mfusepy fails there, loudly, before any mount.

Use: subclass :class:`Handler`, implement the operations you serve (an
operation left as ``None`` is answered by libfuse itself: ``ENOSYS``, or
nothing for ``forget``), and pass it to :class:`Session`. Every operation
must answer its request exactly once with one of the ``reply_*`` functions,
or raise ``OSError`` before answering (the request is then answered with
that ``errno``; any other exception is logged and answered ``EIO``).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import signal
import threading

from .libfuse import libfuse_path, load_mfusepy

__all__ = [
    "Handler",
    "Session",
    "DirentRuns",
    "EntryParam",
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
    "CAP_ASYNC_READ",
]

log = logging.getLogger("arrayfs.fs")

# fuse_common.h capability bits (struct fuse_conn_info .capable / .want).
CAP_ASYNC_READ = 1 << 0
CAP_READDIRPLUS = 1 << 13
CAP_READDIRPLUS_AUTO = 1 << 14
CAP_NO_OPEN_SUPPORT = 1 << 17

FUSE_ROOT_ID = 1

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
    "release": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "opendir": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "readdir": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_size_t, _c_off, ctypes.c_void_p),
    "releasedir": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_void_p),
    "statfs": ctypes.CFUNCTYPE(None, _c_req, _c_ino),
    "readdirplus": ctypes.CFUNCTYPE(None, _c_req, _c_ino, ctypes.c_size_t, _c_off, ctypes.c_void_p),
}


class _Ops(ctypes.Structure):
    _fields_ = [(name, ctypes.c_void_p) for name in OPERATIONS]


class _Args(ctypes.Structure):
    """struct fuse_args (fuse_opt.h)."""

    _fields_ = [("argc", ctypes.c_int), ("argv", ctypes.POINTER(ctypes.c_char_p)), ("allocated", ctypes.c_int)]


class _Buf(ctypes.Structure):
    """struct fuse_buf (fuse_common.h); ``mem_size`` since 3.17, and room
    for fields a later release may add (libfuse writes only those it has)."""

    _fields_ = [("size", ctypes.c_size_t), ("flags", ctypes.c_int), ("mem", ctypes.c_void_p), ("fd", ctypes.c_int),
                ("pos", ctypes.c_int64), ("mem_size", ctypes.c_size_t), ("_reserved", ctypes.c_uint64 * 8)]


_lib = None
_pylib = None
_structs = None
_lock = threading.Lock()


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
    _proto(lib.fuse_reply_none, None, v)
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
    _proto(lib.fuse_session_exit, None, v)
    _proto(lib.fuse_session_exited, i, v)
    _proto(lib.fuse_session_receive_buf, i, v, ctypes.POINTER(_Buf))
    _proto(lib.fuse_set_signal_handlers, i, v)
    _proto(lib.fuse_remove_signal_handlers, None, v)
    _proto(lib.fuse_opt_free_args, None, ctypes.POINTER(_Args))


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


def reply_open(req: int, fi_address: int) -> int:
    return _lib.fuse_reply_open(req, fi_address)


def reply_buf(req: int, data, size: int) -> int:
    """Answer with ``size`` bytes at ``data`` (a ``bytes`` object or an
    address); libfuse writes them to the kernel without copying."""
    return _lib.fuse_reply_buf(req, data, size)


def reply_statfs(req: int, statvfs) -> int:
    return _lib.fuse_reply_statfs(req, ctypes.addressof(statvfs))


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
# Entries are padded to 8 bytes.
_NAME_OFFSET = 24
_NAME_OFFSET_PLUS = 152
# 64-bit words patched per entry: struct fuse_dirent ino, off (plain); and
# fuse_entry_out nodeid, attr.ino, attr.size, attr.blocks, dirent ino, off.
_PLAIN_WORDS = (0, 1)
_PLUS_WORDS = (0, 5, 6, 7, 16, 17)


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
        open(req, ino, fi)                       # answer with reply_open(req, fi)
        read(req, ino, size, off, fi)
        release(req, ino, fi)
        opendir(req, ino, fi)
        readdir(req, ino, size, off, fi)
        readdirplus(req, ino, size, off, fi)
        releasedir(req, ino, fi)
        statfs(req, ino)
    """

    init = destroy = lookup = getattr = open = read = release = None
    opendir = readdir = readdirplus = releasedir = statfs = None


_adopted: set = set()
_PyGILState_Ensure = ctypes.pythonapi.PyGILState_Ensure
_get_ident = threading.get_ident


def _adopt_thread() -> None:
    """Give the calling libfuse worker thread a permanent Python thread state.

    A ctypes callback on a thread Python did not create gets a fresh thread
    state per call (created, then destroyed on return), which costs more
    than a small request itself. One extra ``PyGILState_Ensure`` that is
    never released keeps the state for the thread's life, so later
    callbacks only take the GIL. libfuse keeps idle workers alive
    (``max_idle_threads``), so few threads are ever adopted.
    """
    tid = _get_ident()
    if tid not in _adopted:
        _PyGILState_Ensure()
        _adopted.add(tid)


def _request_callback(name, method):
    """Wrap ``method(req, *args)`` as a libfuse callback that always answers."""
    fuse_reply_err = _lib.fuse_reply_err

    def callback(req, *args):
        _adopt_thread()
        try:
            method(req, *args)
        except OSError as e:
            code = e.errno if isinstance(e.errno, int) and e.errno > 0 else errno.EIO
            fuse_reply_err(req, code)
        except BaseException:  # noqa: BLE001 - a request must be answered, the daemon must live
            log.exception("FUSE %s failed", name)
            fuse_reply_err(req, errno.EIO)

    return _PROTOTYPES[name](callback)


class Session:
    """A mounted low-level FUSE session serving a :class:`Handler`.

    Args:
        handler: the file system.
        mountpoint: an existing directory.
        options: libfuse mount and session options (``-o`` items such as
            ``"ro"``, ``"fsname=x"``, ``"max_read=1048576"``,
            ``"allow_other"``, ``"auto_unmount"``, ``"default_permissions"``).
            libfuse rejects unknown ones (its message goes to stderr).
        debug: libfuse's ``-d`` (log every request to stderr).
        threads: threads receiving and processing requests (>= 1).

    The request loop is this module's, not libfuse's: each thread receives
    a request (``fuse_session_receive_buf``, without the GIL) and processes
    it (``fuse_session_process_buf``, which calls the handler) holding the
    GIL throughout, so a request costs one GIL hand-over, and the threads
    are Python's own. The calling thread is one of them and the only one
    that takes SIGINT, SIGTERM and SIGHUP (libfuse's handlers end the loop).

    :meth:`run` mounts, serves until unmounted or signalled, and unmounts.
    :meth:`invalidate_entry` and :meth:`invalidate_inode` may be called from
    another thread meanwhile (never from inside an operation: the kernel
    may wait for that operation to finish).
    """

    def __init__(self, handler: Handler, mountpoint: str, options=(), *, debug: bool = False, threads: int = 2):
        lib, self._m = _load()
        self._lib = lib
        self.handler = handler
        self.mountpoint = os.fspath(mountpoint)
        self.threads = max(1, int(threads))
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
        argv = [b"arrayfs"]
        if debug:
            argv.append(b"-d")
        opts = ",".join(options)
        if opts:
            argv += [b"-o", opts.encode()]
        self._argv = (ctypes.c_char_p * len(argv))(*argv)
        self._args = _Args(len(argv), self._argv, 0)

    def _init_callback(self, method):
        conn_type = self._m.fuse_conn_info

        def init(_userdata, conn):
            _adopt_thread()
            try:
                method(conn_type.from_address(conn) if conn else None)
            except BaseException:  # noqa: BLE001 - init must not unwind into libfuse
                log.exception("FUSE init failed")

        return _PROTOTYPES["init"](init)

    def run(self) -> int:
        """Mount and serve until unmounted; returns 0, or the number of the
        signal that ended the loop. Raises ``RuntimeError`` when libfuse
        refuses the options or the mount (its reason went to stderr)."""
        lib = self._lib
        se = lib.fuse_session_new(ctypes.byref(self._args), ctypes.addressof(self._ops), ctypes.sizeof(self._ops),
                                  None)
        if not se:
            raise RuntimeError("libfuse refused the mount options")
        self._se = se
        handlers = False
        try:
            # libfuse installs its handlers only over SIG_DFL; Python's own
            # SIGINT handler could never run while this thread is in C.
            try:
                signal.signal(signal.SIGINT, signal.SIG_DFL)
            except ValueError:  # not the main thread
                pass
            if lib.fuse_set_signal_handlers(se) != 0:
                raise RuntimeError("libfuse could not install its signal handlers")
            handlers = True
            if lib.fuse_session_mount(se, os.fsencode(self.mountpoint)) != 0:
                raise RuntimeError(f"libfuse could not mount {self.mountpoint}")
            try:
                return self._loop()
            finally:
                lib.fuse_session_exit(se)
                lib.fuse_session_unmount(se)  # other workers' reads end with ENODEV
                for t in self._workers:
                    t.join(timeout=5)
        finally:
            if handlers:
                lib.fuse_remove_signal_handlers(se)
            self._se = None
            lib.fuse_session_destroy(se)

    _workers: list = []

    def _loop(self) -> int:
        self._workers = []
        for k in range(1, self.threads):
            t = threading.Thread(target=self._serve, args=(True,), name=f"arrayfs-fuse-{k}", daemon=True)
            t.start()
            self._workers.append(t)
        self._serve(False)
        return 0

    def _serve(self, block_signals: bool) -> None:
        """Receive and process requests until the session ends."""
        if block_signals:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        lib, se = self._lib, self._se
        receive, process, exited = lib.fuse_session_receive_buf, _pylib.fuse_session_process_buf, lib.fuse_session_exited
        buf = _Buf()
        bufp = ctypes.pointer(buf)
        try:
            while not exited(se):
                res = receive(se, bufp)
                if res == -errno.EINTR or res == -errno.EAGAIN:
                    continue
                if res <= 0:  # -ENODEV: unmounted; other errors end the session too
                    if res < 0 and res != -errno.ENODEV:
                        log.error("FUSE: reading a request failed: %s", os.strerror(-res))
                    lib.fuse_session_exit(se)
                    break
                process(se, bufp)
        finally:
            if buf.mem:
                _libc_free(buf.mem)

    def exit(self) -> None:
        """Ask the loop to end (it ends on the next request or signal)."""
        se = self._se
        if se:
            self._lib.fuse_session_exit(se)

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
