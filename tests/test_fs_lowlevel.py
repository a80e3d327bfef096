"""What arrayfs.fs.lowlevel and arrayfs.fs.fuse2 rely on in libfuse 3, the
kernel and mfusepy, checked against the installed libraries.

These tests fail loudly, before any mount, when a libfuse or mfusepy
release changes a structure layout, a symbol or a public name the daemons
use. The layouts are libfuse's (``include/fuse_common.h``,
``include/fuse_lowlevel.h``, ``include/fuse_kernel.h`` of 3.x); where
libfuse has code that reads a structure without a request
(``fuse_add_direntry``, ``fuse_add_direntry_plus``), it is called and its
output is parsed as the kernel would.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import inspect
import os
import stat
import struct

import pytest

from arrayfs.fs import lowlevel


def test_libfuse_3_is_the_one_loaded():
    # CI installs libfuse 3 (and 2): the low-level binding must be the one tested.
    assert lowlevel.libfuse_major() == 3 and lowlevel.available()


def test_mfusepy_public_names_used():
    m = lowlevel.load_mfusepy()
    for name in ("Operations", "FUSE", "fuse_version_major", "fuse_version_minor", "c_stat", "c_statvfs",
                 "fuse_file_info", "fuse_conn_info"):
        assert hasattr(m, name), f"mfusepy no longer has {name}"
    assert "raw_fi" in inspect.signature(m.FUSE.__init__).parameters
    # The Operations methods fuse2.Fuse2 overrides, with the
    # arguments mfusepy passes them.
    expected = {
        "getattr": ["path", "fh"], "open": ["path", "flags"], "read": ["path", "size", "offset", "fh"],
        "release": ["path", "fh"], "opendir": ["path"], "readdir_with_offset": ["path", "offset", "fh"],
        "releasedir": ["path", "fh"], "statfs": ["path"], "init_with_config": None, "destroy": ["path"],
    }
    for name, params in expected.items():
        assert callable(getattr(m.Operations, name, None)), name
        if params is not None:
            got = list(inspect.signature(getattr(m.Operations, name)).parameters)[1:]
            assert got == params, (name, got)


def test_libfuse3_exports_every_function_used():
    lib = lowlevel.library()
    for name in ("fuse_reply_err", "fuse_reply_open", "fuse_reply_buf", "fuse_add_direntry",
                 "fuse_add_direntry_plus", "fuse_lowlevel_notify_inval_entry", "fuse_lowlevel_notify_inval_inode", "fuse_session_new",
                 "fuse_session_mount", "fuse_session_unmount", "fuse_session_destroy", "fuse_session_fd",
                 "fuse_session_receive_buf", "fuse_session_process_buf"):
        assert hasattr(lib, name), name


def test_the_kernel_knows_the_clone_ioctl():
    """FUSE_DEV_IOC_CLONE is _IOR(229, 0, uint32_t): a device that knows it
    refuses to clone a descriptor that is no FUSE session (EINVAL; EPERM on
    newer kernels); a number it does not know would be ENOTTY. The clone
    itself is used by every mount test (the worker processes)."""
    assert lowlevel._DEV_IOC_CLONE == (2 << 30) | (4 << 16) | (229 << 8) | 0
    fd = os.open("/dev/fuse", os.O_RDWR)
    try:
        with pytest.raises(OSError) as e:
            fcntl.ioctl(fd, lowlevel._DEV_IOC_CLONE, ctypes.c_uint32(fd))
        assert e.value.errno in (errno.EINVAL, errno.EPERM)
    finally:
        os.close(fd)


def test_operations_table_order():
    # struct fuse_lowlevel_ops (fuse_lowlevel.h), 3.0 onwards.
    ops = lowlevel.OPERATIONS
    for i, name in [(0, "init"), (2, "lookup"), (3, "forget"), (4, "getattr"), (14, "open"), (15, "read"),
                    (18, "release"), (20, "opendir"), (21, "readdir"), (22, "releasedir"), (24, "statfs"),
                    (38, "forget_multi"), (41, "readdirplus")]:
        assert ops[i] == name
    assert ctypes.sizeof(lowlevel._Ops) == 42 * ctypes.sizeof(ctypes.c_void_p)
    assert ctypes.sizeof(lowlevel._Args) == (24 if ctypes.sizeof(ctypes.c_void_p) == 8 else 12)


def test_file_info_and_conn_info_layouts():
    m = lowlevel.structs()
    fi = m.fuse_file_info
    assert fi.flags.offset == 0 and fi.fh.offset == 16 and fi.lock_owner.offset == 24
    info = fi()
    info.keep_cache = 1
    assert struct.unpack_from("<I", bytes(info), 4)[0] == 1 << 2  # third bit after flags
    info = fi()
    info.direct_io = 1
    assert struct.unpack_from("<I", bytes(info), 4)[0] == 1 << 1
    ci = m.fuse_conn_info
    for name, offset in [("proto_major", 0), ("proto_minor", 4), ("max_write", 8), ("max_read", 12),
                         ("max_readahead", 16), ("capable", 20), ("want", 24)]:
        assert getattr(ci, name).offset == offset, name


def test_stat_and_statvfs_match_libc(tmp_path):
    m = lowlevel.structs()
    libc = ctypes.CDLL(None, use_errno=True)
    p = tmp_path / "f"
    p.write_bytes(b"x" * 12345)
    st = m.c_stat()
    assert libc.stat(os.fsencode(p), ctypes.byref(st)) == 0
    ref = os.stat(p)
    assert (st.st_ino, st.st_size, st.st_mode, st.st_nlink, st.st_uid, st.st_blocks) == (
        ref.st_ino, ref.st_size, ref.st_mode, ref.st_nlink, ref.st_uid, ref.st_blocks)
    assert st.st_mtimespec.tv_sec * 10**9 + st.st_mtimespec.tv_nsec == ref.st_mtime_ns
    vfs = m.c_statvfs()
    assert libc.statvfs(os.fsencode(tmp_path), ctypes.byref(vfs)) == 0
    ref = os.statvfs(tmp_path)
    assert (vfs.f_bsize, vfs.f_blocks, vfs.f_namemax) == (ref.f_bsize, ref.f_blocks, ref.f_namemax)


def _fuse_attr(buf: bytes, at: int) -> dict:
    # struct fuse_attr (fuse_kernel.h)
    f = struct.unpack_from("<6Q10I", buf, at)
    keys = ("ino", "size", "blocks", "atime", "mtime", "ctime", "atimensec", "mtimensec", "ctimensec", "mode",
            "nlink", "uid", "gid", "rdev", "blksize", "flags")
    return dict(zip(keys, f))


def _libfuse_entry_param(attr, uid, gid, entry_timeout, attr_timeout, nodeid=None):
    """libfuse's own ``struct fuse_entry_param`` for ``attr``, the reference
    the replies built in the kernel's layout are compared with."""
    m = lowlevel.structs()

    class EntryParam(ctypes.Structure):
        _fields_ = [("ino", ctypes.c_uint64), ("generation", ctypes.c_uint64), ("attr", m.c_stat),
                    ("attr_timeout", ctypes.c_double), ("entry_timeout", ctypes.c_double)]

    e = EntryParam()
    st = e.attr
    st.st_mode, st.st_ino, st.st_nlink, st.st_size = attr.mode, attr.ino, attr.nlink, attr.size
    st.st_uid, st.st_gid, st.st_blksize, st.st_blocks = uid, gid, attr.blksize, (attr.size + 511) // 512
    for ts in (st.st_mtimespec, st.st_ctimespec, st.st_atimespec):
        ts.tv_sec, ts.tv_nsec = divmod(attr.mtime_ns, 10**9)
    e.ino = attr.ino if nodeid is None else nodeid
    e.attr_timeout, e.entry_timeout = attr_timeout, entry_timeout
    return e


def _libfuse_dirent(e, name: bytes, off: int, plus: bool) -> bytes:
    lib = lowlevel.library()
    fn = lib.fuse_add_direntry_plus if plus else lib.fuse_add_direntry
    fn.restype, fn.argtypes = ctypes.c_size_t, [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p,
                                                ctypes.c_void_p, ctypes.c_int64]
    buf = ctypes.create_string_buffer(4096)
    n = fn(None, buf, 4096, name, ctypes.addressof(e) if plus else ctypes.addressof(e.attr), off)
    return buf.raw[:n]


def test_replies_are_libfuses_and_read_as_the_kernel_reads_them():
    """Entries and attributes built in the kernel's layout are, byte for
    byte, what libfuse's fuse_reply_entry / fuse_add_direntry_plus would
    send (they share libfuse's fill_entry), and every field arrives where
    fuse_kernel.h puts it."""
    from arrayfs.fs.view import Attr

    attr = Attr(stat.S_IFREG | 0o444, (7 << 40) | 99, 2, 1_000_003, 1_700_000_000_123_456_789, 1 << 20)
    replies = lowlevel.Replies(1234, 5678, 1.5, 86400.0)
    raw = replies.entry(attr)
    theirs = _libfuse_dirent(_libfuse_entry_param(attr, 1234, 5678, 1.5, 86400.0), b"0000123", 77, True)
    assert len(raw) == 128 and theirs[:128] == raw
    nodeid, gen, entry_valid, attr_valid, entry_nsec, attr_nsec = struct.unpack_from("<4Q2I", raw, 0)
    assert (nodeid, gen, entry_valid, attr_valid, entry_nsec, attr_nsec) == (attr.ino, 0, 1, 86400, 500_000_000, 0)
    a = _fuse_attr(raw, 40)
    assert a["ino"] == attr.ino and a["size"] == attr.size and a["blocks"] == (attr.size + 511) // 512
    assert a["mode"] == attr.mode and a["nlink"] == 2 and (a["uid"], a["gid"]) == (1234, 5678)
    assert a["blksize"] == 1 << 20
    assert (a["mtime"], a["mtimensec"]) == divmod(attr.mtime_ns, 10**9) == (a["ctime"], a["ctimensec"])
    # fuse_attr_out: attr_valid, attr_valid_nsec, dummy, then the same fuse_attr.
    out = replies.attr(attr)
    assert len(out) == 104 and struct.unpack_from("<QI", out) == (86400, 0) and out[16:] == raw[40:]
    # A negative entry: node 0, kept for the timeout.
    neg = replies.negative(2.25)
    assert struct.unpack_from("<3Q", neg) == (0, 0, 2) and struct.unpack_from("<I", neg, 32)[0] == 250_000_000
    # fuse_kstatfs
    f = {"f_bsize": 4096, "f_frsize": 4096, "f_blocks": 10, "f_bfree": 0, "f_bavail": 0, "f_files": 7,
         "f_ffree": 0, "f_favail": 0, "f_namemax": 255, "f_flag": os.ST_RDONLY}
    assert struct.unpack("<5Q10I", replies.statfs(f))[:8] == (10, 0, 0, 7, 0, 4096, 255, 4096)


@pytest.mark.parametrize("plus,attrs", [(True, True), (True, False), (False, False)])
@pytest.mark.parametrize("width", [1, 6, 7, 13])
def test_listing_entries_are_byte_for_byte_libfuses(plus, attrs, width):
    """A run of records (copies of one entry with name, inode, size and
    offset patched) and a named entry equal what fuse_add_direntry(_plus)
    writes for each, and only whole entries are written."""
    import numpy as np

    from arrayfs.fs.view import Attr, DirBatch

    attr = Attr(stat.S_IFREG | 0o444, 0, 2, 0, 1_700_000_000_000_000_001, 1 << 20)
    replies = lowlevel.Replies(1000, 1000, 86400.0, 86400.0)
    first_name = 10 ** (width - 1) - 3 if width > 1 else 0
    count = 9 if width > 1 else 7
    first_ino = (5 << 40) | 1234
    sizes = np.array([0, 1, 511, 512, 513, 10**9, 7, 8, 9][:count], dtype=np.int64)
    batch = DirBatch(None, attr, range(first_ino, first_ino + count), sizes, 41, first_name, width)
    ref = b""
    for j in range(count):
        a = attr._replace(ino=first_ino + j, size=int(sizes[j]) if attrs else 0)
        e = _libfuse_entry_param(a, 1000, 1000, 86400.0, 86400.0, nodeid=None if attrs else 0)
        ref += _libfuse_dirent(e, str(first_name + j).zfill(width).encode(), 41 + j, plus)
    buf = np.zeros(4096, np.uint8)
    n, k = replies.dirents(buf, 8 * 3, batch, plus, attrs)
    assert k == count and n == len(ref) and buf[24 : 24 + n].tobytes() == ref
    one = len(ref) // count
    small = np.zeros(3 * one + one // 2, np.uint8)
    assert replies.dirents(small, 0, batch, plus, attrs) == (3 * one, 3) and small[: 3 * one].tobytes() == ref[:3 * one]
    # A named entry (a directory), alone in its batch.
    d = Attr(stat.S_IFDIR | 0o555, 16, 2, 0, 5, 4096)
    e = _libfuse_entry_param(d, 1000, 1000, 86400.0, 86400.0, nodeid=16 if attrs else 0)
    n, k = replies.dirents(buf, 0, DirBatch([".shards"], d, (16,), (0,), 3), plus, attrs)
    assert (n, k) == (len(_libfuse_dirent(e, b".shards", 3, plus)), 1)
    assert buf[:n].tobytes() == _libfuse_dirent(e, b".shards", 3, plus)


def test_lookups_in_one_directory_run_in_parallel(tmp_path):
    """The kernel takes LOOKUPs of one directory at once only when INIT's
    reply says FUSE_PARALLEL_DIROPS, which libfuse before 3.17 never does
    by itself (lowlevel patches that reply): two lookups must be in the
    handler together."""
    import threading

    met = threading.Barrier(2, timeout=5)
    outcome = []

    class Both(lowlevel.Handler):
        ready = False

        def init(self, conn):
            conn.max_read = 0
            self.ready = True

        def lookup(self, req, parent, name):
            try:
                met.wait()
                outcome.append("together")
            except threading.BrokenBarrierError:
                outcome.append("one at a time")
            raise OSError(errno.ENOENT, "no")

    mnt = tmp_path / "m"
    mnt.mkdir()
    handler = Both()
    session = lowlevel.Session(handler, str(mnt), ["ro"])
    session.mount()
    server = threading.Thread(target=session.serve, kwargs={"threads": 2, "stop": lambda: False}, daemon=True)
    try:
        session.serve(stop=lambda: handler.ready)  # INIT
        server.start()
        lookers = [threading.Thread(target=os.path.exists, args=(mnt / name,)) for name in ("a", "b")]
        for t in lookers:
            t.start()
        for t in lookers:
            t.join(20)
        assert outcome == ["together", "together"], outcome
    finally:
        session.unmount()
        server.join(10)
        session.close()
