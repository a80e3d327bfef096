"""The FUSE daemon: serves an :class:`arrayfs.fs.view.FsView` through libfuse.

With libfuse 3 (every current Linux) the daemon speaks libfuse's low-level
API (:mod:`arrayfs.fs.lowlevel`): the kernel addresses files by inode number
and the view computes what an inode is (:meth:`ViewSnapshot.node_of_ino`),
so the daemon keeps nothing per name, however many the kernel has seen.
With libfuse 2 it falls back to mfusepy's high-level API
(:mod:`arrayfs.fs.highlevel`), addressed by path.

What the low-level daemon does beyond passing calls through:

- **Nothing per record.** An inode number encodes the shard (the order it
  was first seen) and the record's index in its file; the contents of an
  inode never change (a rewritten shard is a new shard, the summary has a
  new inode per snapshot). ``FORGET`` is answered by libfuse without
  calling Python. ``ls -l`` of 10 million records leaves the daemon's
  memory where it was.
- **Few round trips per file.** Where the kernel allows it
  (``FUSE_CAP_NO_OPEN_SUPPORT``, Linux >= 4.19) the first ``open`` answers
  ``ENOSYS``: the kernel then opens files without asking (no OPEN, no
  RELEASE request) and keeps their page cache across opens. A small record
  costs a LOOKUP and a READ the first time and nothing after.
- **Listings with attributes, at any size.** ``READDIRPLUS`` is answered
  with every entry's inode and attributes (the kernel is asked to use it for
  every chunk of a listing, not only the first), so ``ls -l`` needs no
  LOOKUP per entry. Listings are streamed from the offset the kernel passes.
  A directory opened before a refresh lists its old snapshot, but then
  without attributes, so that no entry of the old snapshot lands in the
  kernel's cache after the refresh invalidated it.
- **Reads without copies.** A read is answered from the decoded record
  itself (``fuse_reply_buf`` writes it to the kernel). A record bigger than
  one read request (``max_read``, 1 MiB) is decoded once
  (:class:`arrayfs.fs.contents.Contents`).
- **Errors.** A corrupt record is ``EIO`` and one log line naming shard,
  chunk and byte offset; the daemon goes on. Unknown names are ``ENOENT``;
  an inode that no longer exists (its shard left on a refresh, and the
  snapshot before) is ``ESTALE``; the mount is read-only (``ro``: the kernel
  answers ``EROFS`` to every write).
- **Refreshes.** :meth:`LowLevelOperations.invalidate` tells the kernel
  which names changed meaning (record names first, the summary last), and
  which directories' attributes changed. Files opened before a refresh keep
  reading their record while it is in the current or the previous snapshot.
- **Threads.** Two Python threads (``-o max_threads=N``; ``-o nothreads``:
  one) each receive a request without the GIL and process it with the GIL
  held (:class:`arrayfs.fs.lowlevel.Session`). Python serves one request at
  a time; a second thread serves small requests while another waits for
  the disk or for a codec (which release the GIL). More threads cost more
  GIL hand-overs than they win.
- **Refresh cost.** While watching, the daemon notes (one byte per record)
  which root names the kernel may have cached, so that a refresh which
  shifts names invalidates those only, not every name after the change.
"""

from __future__ import annotations

import ctypes
import errno
import itertools
import logging
import os
import threading

import numpy as np

from ..errors import ArrayRecordError
from . import lowlevel
from .contents import DECODED_CACHE_BYTES, Contents, address_of, oserror
from .libfuse import libfuse_major, libfuse_path, load_mfusepy
from .view import RECORD, ROOT, ROOT_INO, SHARD_DIR, SUMMARY, SUMMARY_NAME, Attr, FsView

__all__ = [
    "LowLevelOperations",
    "load_mfusepy",
    "libfuse_major",
    "libfuse_path",
    "run",
    "fuse_kwargs",
    "READDIRPLUS_MAX",
    "LONG_TIMEOUT",
    "SHORT_TIMEOUT",
]

log = logging.getLogger("arrayfs.fs")

# Cache timeouts (seconds). Inodes never change, and names are invalidated
# on refresh (libfuse 3), so entries and attributes may be cached for long;
# while watching without invalidation (libfuse 2) they must expire soon.
LONG_TIMEOUT = 86400.0
SHORT_TIMEOUT = 1.0

# Directories up to this many entries are listed with attributes when the
# kernel asks READDIRPLUS: all of them (the low-level daemon keeps nothing
# per entry). ``-o readdirplus=N`` lowers it; 0 turns READDIRPLUS off.
READDIRPLUS_MAX = 1 << 62

# Smallest READDIRPLUS entry (bytes): struct fuse_direntplus with a
# one-character name, 8-byte aligned (fuse_kernel.h).
_MIN_DIRENTPLUS = 152

# bytes.translate tables: x -> x | bits.
_OR = {bits: bytes(x | bits for x in range(256)) for bits in (0, 1, 2, 3)}

# Threads serving requests (``-o max_threads=N``; ``-o nothreads``: 1).
# Python runs one request at a time, so more threads only help while one
# waits outside Python (a record read from disk, a big record decoding in
# zstd); each extra thread costs GIL hand-overs on every small request.
THREADS = 2


# Options of fuse_kwargs that libfuse's high-level API takes and that the
# low-level daemon applies itself.
_HIGH_LEVEL_ONLY = {
    "foreground", "use_ino", "entry_timeout", "attr_timeout", "negative_timeout", "kernel_cache",
    "auto_cache", "max_idle_threads", "max_threads", "nothreads", "debug", "readdir_ino", "remember",
}


class _Files:
    """Open files (handle mode) and open directories: id -> state."""

    def __init__(self):
        self._items: dict = {}
        self._ids = itertools.count(1)

    def add(self, value) -> int:
        fh = next(self._ids)
        self._items[fh] = value
        return fh

    def get(self, fh):
        return self._items.get(fh)

    def pop(self, fh):
        return self._items.pop(fh, None)

    def clear(self):
        self._items.clear()

    def __len__(self):
        return len(self._items)


class _Handle:
    """An open file in handle mode: its snapshot and node, then (from the
    first read) the decoded contents and their address."""

    __slots__ = ("snap", "node", "data", "address", "lock")

    def __init__(self, snap, node):
        self.snap = snap
        self.node = node
        self.data = None
        self.address = 0
        self.lock = threading.Lock()


class LowLevelOperations(lowlevel.Handler):
    """The file system served through libfuse 3's low-level API.

    Args:
        view: the view to serve (its current snapshot is read per request).
        on_ready: called with no arguments from libfuse's ``init``, once the
            mount is live (background mode uses it to let the parent exit).
        watcher: an object with ``start()`` and ``stop()`` (the live
            refresh), started on ``init`` and stopped on ``destroy``.
        open_handles: answer ``open`` with a handle holding the snapshot and
            the decoded record (even where the kernel supports no-open).
        readdirplus_max: directories with more entries are listed without
            attributes; 0 turns READDIRPLUS off.
        decoded_cache_bytes: bound of the decoded-record LRU (bytes).
        entry_timeout, attr_timeout: how long the kernel may cache names and
            attributes (seconds); negative_timeout: unknown names (0: not cached).
        max_read: the ``-o max_read`` given to libfuse (bytes; 0: none).

    Every request gets one answer; errors are ``ENOENT``, ``ENOTDIR``,
    ``EISDIR``, ``EROFS``, ``EIO`` (corrupt record, logged), ``ESTALE``,
    ``EBADF``, ``ENOSYS`` (``open`` in no-open mode: the kernel's cue to
    stop asking).
    """

    def __init__(self, view: FsView, *, on_ready=None, watcher=None, open_handles: bool = False,
                 readdirplus_max: int = READDIRPLUS_MAX, decoded_cache_bytes: int = DECODED_CACHE_BYTES,
                 entry_timeout: float = LONG_TIMEOUT, attr_timeout: float = LONG_TIMEOUT,
                 negative_timeout: float = 0.0, max_read: int = 0):
        self.view = view
        self.uid = view.snapshot.uid
        self.gid = view.snapshot.gid
        self._on_ready = on_ready
        self._watcher = watcher
        self.open_handles = open_handles
        self.no_open = False  # decided in init from the kernel's capabilities
        self.readdirplus_max = readdirplus_max
        self.entry_timeout = float(entry_timeout)
        self.attr_timeout = float(attr_timeout)
        self.negative_timeout = float(negative_timeout)
        self.max_read = int(max_read)
        self.contents = Contents(decoded_cache_bytes)
        self.session: lowlevel.Session | None = None
        self._refreshing = False  # see prepare_refresh
        self._files = _Files()
        self._dirs = _Files()
        self._tls = threading.local()
        self._templates: dict = {}
        self._runs = lowlevel.DirentRuns()
        # Root names the kernel may have cached, by global index: bit 1 the
        # padded name, bit 2 the unpadded one (1 byte per record). A refresh
        # then invalidates only those, not every name whose meaning changed.
        # Marking (with the snapshot it is for) and the scan of a refresh
        # hold _seen_lock, so no name is cached with an old meaning unseen.
        self._seen = bytearray()
        self._seen_lock = threading.Lock()
        self.track_names = watcher is not None  # without a watcher no name changes meaning
        lib = lowlevel.library()
        m = lowlevel.structs()
        self._c_stat = m.c_stat
        self._c_statvfs = m.c_statvfs
        self._fi_type = m.fuse_file_info
        self._reply_err = lib.fuse_reply_err
        self._reply_buf = lib.fuse_reply_buf
        self._reply_entry = lib.fuse_reply_entry
        self._reply_attr = lib.fuse_reply_attr
        self._reply_open = lib.fuse_reply_open
        self._add_direntry = lib.fuse_add_direntry
        self._add_direntry_plus = lib.fuse_add_direntry_plus

    # -- per-thread scratch structures (libfuse reads them after the GIL is
    # released, so they cannot be shared between worker threads) -------------

    def _scratch(self):
        t = self._tls
        try:
            return t.entry, t.stat
        except AttributeError:
            t.entry = lowlevel.EntryParam()
            t.stat = self._c_stat()
            t.buf = ctypes.create_string_buffer(0)
            return t.entry, t.stat

    def _buffer(self, size: int):
        t = self._tls
        buf = getattr(t, "buf", None)
        if buf is None or len(buf) < size:
            buf = t.buf = ctypes.create_string_buffer(max(size, 1 << 16))
        return buf

    def _fill(self, st, a: Attr) -> None:
        """Write ``a`` into the ``struct stat`` ``st``: a copy of a template
        for everything records of a shard share, then inode and size."""
        key = (a.mode, a.nlink, a.mtime_ns, a.blksize)
        t = self._templates.get(key)
        if t is None:
            t = self._template(a)
        ctypes.memmove(ctypes.addressof(st), t, len(t))
        st.st_ino = a.ino
        st.st_size = a.size
        st.st_blocks = (a.size + 511) >> 9

    def _template(self, a: Attr) -> bytes:
        st = self._c_stat()
        st.st_mode = a.mode
        st.st_nlink = a.nlink
        st.st_blksize = a.blksize
        st.st_uid = self.uid
        st.st_gid = self.gid
        sec, ns = divmod(a.mtime_ns, 1_000_000_000)
        for ts in (st.st_mtimespec, st.st_ctimespec, st.st_atimespec):
            ts.tv_sec = sec
            ts.tv_nsec = ns
        t = bytes(st)
        if len(self._templates) > 4096:  # one per shard (mtime) and kind: bounded all the same
            self._templates.clear()
        self._templates[(a.mode, a.nlink, a.mtime_ns, a.blksize)] = t
        return t

    # -- life cycle ------------------------------------------------------------------

    def init(self, conn):
        if conn is not None:
            if self.max_read:
                # libfuse refuses to start unless init agrees with -o max_read.
                conn.max_read = self.max_read
            if self.readdirplus_max > 0:
                # Without the "auto" heuristic the kernel asks READDIRPLUS for
                # every chunk of a listing, so ``ls -l`` needs no LOOKUP per
                # entry (it asks only for the first chunk otherwise).
                conn.want = (conn.want | (conn.capable & lowlevel.CAP_READDIRPLUS)) & ~lowlevel.CAP_READDIRPLUS_AUTO
            else:
                conn.want &= ~(lowlevel.CAP_READDIRPLUS | lowlevel.CAP_READDIRPLUS_AUTO)
            self.no_open = bool(conn.capable & lowlevel.CAP_NO_OPEN_SUPPORT) and not self.open_handles
        log.debug("libfuse 3 low-level, no-open %s", self.no_open)
        if self._watcher is not None:
            self._watcher.start()
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self):
        if self._watcher is not None:
            self._watcher.stop()
        self._files.clear()
        self._dirs.clear()
        self.contents.clear()

    # -- inodes ---------------------------------------------------------------------------

    def _node(self, ino: int):
        """``(snapshot, node)`` of inode ``ino``: from the current snapshot,
        or for a record (and its shard directory) from the previous one.
        Raises ``ESTALE``."""
        view = self.view
        snap = view.snapshot
        node = snap.node_of_ino(ino)
        if node is not None and node.kind == SUMMARY and self._refreshing:
            raise oserror(errno.ESTALE)
        if node is None:
            prev = view.previous
            if prev is not None:
                node = prev.node_of_ino(ino)
                if node is not None and node.kind != SUMMARY:
                    return prev, node
            raise oserror(errno.ESTALE)
        return snap, node

    def _attr(self, snap, node, what) -> Attr:
        try:
            return snap.attr(node)
        except (ArrayRecordError, OSError) as e:
            log.error("EIO on the attributes of %s: %s: %s", what, snap.describe(node), e)
            raise oserror(errno.EIO) from None

    def _mark(self, lo: int, hi: int, bits: int, n: int) -> None:
        """Note that root names of records ``[lo, hi)`` may be cached (call
        holding ``_seen_lock``); ``n``: records in the snapshot."""
        seen = self._seen
        if len(seen) < hi:
            grown = bytearray(max(hi, n, 2 * len(seen)))
            grown[: len(seen)] = seen
            self._seen = seen = grown
        if hi == lo + 1:
            seen[lo] |= bits
        else:
            seen[lo:hi] = seen[lo:hi].translate(_OR[bits])

    def _lookup_node(self, parent, text):
        """``(snapshot, node or None)`` of ``text`` in directory ``parent``."""
        snap = self.view.snapshot
        pnode = snap.node_of_ino(parent)
        if pnode is None:
            raise oserror(errno.ESTALE)
        try:
            node = snap.lookup(pnode, text)
        except FileNotFoundError:
            return snap, None
        if self.track_names and node.kind == RECORD and pnode.kind == ROOT:
            i = node.index
            self._mark(i, i + 1, (1 if len(text) == snap.width else 0) | (2 if text == str(i) else 0),
                       snap.num_records)
        return snap, node

    def lookup(self, req, parent, name):
        text = name.decode("utf-8", "surrogateescape")
        if self.track_names:
            with self._seen_lock:
                snap, node = self._lookup_node(parent, text)
        else:
            snap, node = self._lookup_node(parent, text)
        if node is None:
            if self.negative_timeout > 0:
                e, _ = self._scratch()
                ctypes.memset(ctypes.addressof(e), 0, ctypes.sizeof(e))
                e.entry_timeout = self.negative_timeout
                self._reply_entry(req, ctypes.addressof(e))
                return
            raise oserror(errno.ENOENT)
        if node.kind == SUMMARY and self._refreshing:
            raise oserror(errno.ESTALE)  # see prepare_refresh
        a = self._attr(snap, node, text)
        e, _ = self._scratch()
        self._fill(e.attr, a)
        e.ino = a.ino
        e.attr_timeout = self.attr_timeout
        e.entry_timeout = self.entry_timeout
        self._reply_entry(req, ctypes.addressof(e))

    def getattr(self, req, ino, fi):
        snap, node = self._node(ino)
        a = self._attr(snap, node, ino)
        _, st = self._scratch()
        self._fill(st, a)
        self._reply_attr(req, ctypes.addressof(st), self.attr_timeout)

    def statfs(self, req, ino):
        st = self._c_statvfs()
        for key, value in self.view.snapshot.statfs().items():
            if hasattr(st, key):
                setattr(st, key, value)
        lowlevel.reply_statfs(req, st)

    # -- files -------------------------------------------------------------------------------

    def open(self, req, ino, fi):
        snap, node = self._node(ino)
        if node.kind != RECORD and node.kind != SUMMARY:
            raise oserror(errno.EISDIR)
        info = self._fi_type.from_address(fi)
        if info.flags & os.O_ACCMODE != os.O_RDONLY or info.flags & (os.O_TRUNC | os.O_APPEND):
            raise oserror(errno.EROFS)
        if self.no_open:
            raise oserror(errno.ENOSYS)  # the kernel opens files by itself from now on
        info.fh = self._files.add(_Handle(snap, node))
        info.keep_cache = 1  # an inode's contents never change
        self._reply_open(req, fi)

    def read(self, req, ino, size, off, fi):
        h = None
        if fi and not self.no_open:
            fh = self._fi_type.from_address(fi).fh
            h = self._files.get(fh) if fh else None
        if h is not None:
            if h.data is None:
                with h.lock:
                    if h.data is None:
                        data, address = self.contents.get(h.snap, h.node, ino)
                        h.address = address
                        h.data = data
            data, address = h.data, h.address
        else:
            snap, node = self._node(ino)
            data, address = self.contents.get(snap, node, ino)
        n = len(data) - off
        if n > size:
            n = size
        if n <= 0:
            self._reply_buf(req, None, 0)
        elif address:
            self._reply_buf(req, address + off, n)
            if off + n == len(data) and h is None:
                self.contents.read_to_end(snap, node)
        elif off == 0:
            self._reply_buf(req, data, n)
        else:
            self._reply_buf(req, address_of(data) + off, n)

    def release(self, req, ino, fi):
        self._files.pop(self._fi_type.from_address(fi).fh)
        self._reply_err(req, 0)

    # -- directories ------------------------------------------------------------------------

    def opendir(self, req, ino, fi):
        snap, node = self._node(ino)
        if node.kind == RECORD or node.kind == SUMMARY:
            raise oserror(errno.ENOTDIR)
        self._fi_type.from_address(fi).fh = self._dirs.add((snap, node))
        self._reply_open(req, fi)

    def releasedir(self, req, ino, fi):
        self._dirs.pop(self._fi_type.from_address(fi).fh)
        self._reply_err(req, 0)

    def _dir(self, fi):
        d = self._dirs.get(self._fi_type.from_address(fi).fh) if fi else None
        if d is None:
            raise oserror(errno.EBADF)
        return d

    def _entries_count(self, snap, node) -> int:
        if node.kind == ROOT:
            return snap.num_records
        if node.kind == SHARD_DIR:
            return snap.shards[node.shard].num_records
        return len(snap.shards)

    def readdir(self, req, ino, size, off, fi):
        self._listing(req, size, off, fi, False, False)

    def readdirplus(self, req, ino, size, off, fi):
        snap, node = self._dir(fi)
        with self._seen_lock:
            # Attributes only from the current snapshot: entries of an older
            # one would re-enter the kernel's cache after the refresh
            # invalidated them.
            attrs = snap is self.view.snapshot and self._entries_count(snap, node) <= self.readdirplus_max
            if attrs and node.kind == ROOT and self.track_names:
                # The records this reply may hold (an entry takes more than
                # _MIN_DIRENTPLUS bytes); more is harmless.
                lo = max(off - 4, 0)
                self._mark(lo, min(lo + size // _MIN_DIRENTPLUS + 1, snap.num_records), 1, snap.num_records)
        self._listing(req, size, off, fi, True, attrs)

    def _listing(self, req, size, off, fi, plus, attrs):
        snap, node = self._dir(fi)
        buf = self._buffer(size)
        try:
            pos = self._fill_listing(req, snap, node, buf, size, off, plus, attrs)
        except (ArrayRecordError, OSError) as e:
            log.error("EIO listing a directory: %s", e)
            raise oserror(errno.EIO) from None
        self._reply_buf(req, ctypes.addressof(buf), pos)

    def _fill_listing(self, req, snap, node, buf, size, off, plus, attrs) -> int:
        """Write the entries of ``node`` from offset ``off`` that fit in
        ``size`` bytes of ``buf``; returns the bytes written. ``plus``: in
        READDIRPLUS format, with each entry's inode and attributes when
        ``attrs`` (else inode 0: the kernel then takes only name and type).
        Runs of records are encoded at once (:class:`lowlevel.DirentRuns`);
        the few other entries one by one."""
        e, st = self._scratch()
        base = ctypes.addressof(buf)
        pos = 0
        if plus:
            target, attr = e, e.attr
            e.attr_timeout = self.attr_timeout
            e.entry_timeout = self.entry_timeout
            e.ino = 0
        else:
            target, attr = st, st
        for b in snap.readdir_batches(node, off, sizes=attrs):
            self._fill(attr, b.attr)
            if b.first_name >= 0:
                n, k = self._runs.encode(req, buf, pos, size - pos, b.first_name, b.width, b.inos[0], len(b.inos),
                                         b.sizes, b.next_offset, target, plus, attrs)
                pos += n
                if k < len(b.inos):
                    return pos
                continue
            nxt = b.next_offset
            for name, ino, sz in zip(b.name_list(), b.inos, b.sizes if attrs else b.inos):
                attr.st_ino = ino
                if plus:
                    # "." and "..": no inode for the kernel to remember.
                    e.ino = ino if attrs and name != "." and name != ".." else 0
                    if attrs:
                        attr.st_size = sz
                        attr.st_blocks = (sz + 511) >> 9
                    n = self._add_direntry_plus(req, base + pos, size - pos, name.encode(), ctypes.addressof(e), nxt)
                else:
                    n = self._add_direntry(req, base + pos, size - pos, name.encode(), ctypes.addressof(st), nxt)
                if n > size - pos:
                    return pos
                pos += n
                nxt += 1
            e.ino = 0
        return pos

    # -- refresh ------------------------------------------------------------------------------

    def _cached_record_names(self, change) -> list:
        """Root names of records ``change`` moved that the kernel may have
        cached: those looked up or listed with attributes (see ``_seen``)."""
        lo, hi, _ = change.records
        width = change.old_width
        with self._seen_lock:  # after the new snapshot is installed: see _seen
            seen = np.frombuffer(bytes(self._seen[lo:hi]), dtype=np.uint8)
        names = []
        for j in np.flatnonzero(seen).tolist():
            i, bits = lo + j, int(seen[j])
            plain = str(i)
            if bits & 1 and len(plain) < width:
                names.append(plain.zfill(width))
            if bits & 2 or len(plain) >= width:
                names.append(plain)
        return names

    def prepare_refresh(self, change) -> None:
        """Called by :meth:`FsView.refresh` before it installs a new
        snapshot: from now until :meth:`invalidate` has invalidated every
        changed name, the summary answers ``ESTALE`` (and the kernel's pages
        of the old one are dropped), so that whoever reads a summary reads
        one that agrees with the names."""
        self._refreshing = True
        se = self.session
        if se is not None:
            for ino in change.stale_inodes():
                se.invalidate_inode(ino)

    def invalidate(self, change) -> int:
        """Drop what the kernel cached of what a refresh changed (a
        :class:`arrayfs.fs.view.ViewChange`): the old summary's pages first,
        then the names in the order of :meth:`ViewChange.entries` (the
        summary's last), then the directories' attributes.
        Call from a thread that is not serving a request. Returns how many
        entries the kernel had."""
        se = self.session
        if se is None:
            self._refreshing = False
            return 0
        n = 0
        try:
            for name in self._cached_record_names(change):
                n += se.invalidate_entry(ROOT_INO, name.encode())
            for parent, name in change.entries(records=False):
                if parent == ROOT_INO and name == SUMMARY_NAME:
                    self._refreshing = False  # every other name is done
                n += se.invalidate_entry(parent, name.encode("utf-8", "surrogateescape"))
        finally:
            self._refreshing = False
        for ino in change.inodes():
            se.invalidate_inode(ino)
        return n


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


def _low_level_options(kw: dict) -> tuple[list, dict]:
    """Split :func:`fuse_kwargs` into libfuse ``-o`` items and the settings
    the low-level daemon applies itself."""
    items, own = [], {}
    for key, value in kw.items():
        if key in _HIGH_LEVEL_ONLY:
            own[key] = value
        elif value is True:
            items.append(key)
        elif value is not False and value is not None:
            items.append(f"{key}={value}")
    return items, own


def run(view: FsView, mountpoint: str, *, fuse_options: dict, on_ready=None, watcher=None,
        open_handles: bool = False, readdirplus_max: int = READDIRPLUS_MAX):
    """Mount ``view`` at ``mountpoint`` and serve until unmounted (blocks).

    Args:
        fuse_options: mfusepy keyword arguments (see :func:`fuse_kwargs`).
        on_ready: called once the kernel has initialised the mount.
        watcher: started on init, stopped on unmount (see
            :mod:`arrayfs.fs.watch`); it is given the operations object as
            ``watcher.operations`` before the mount, to invalidate through.
        open_handles, readdirplus_max: see :class:`LowLevelOperations`.

    Returns the operations object once unmounted: a
    :class:`LowLevelOperations` with libfuse 3, an
    :class:`arrayfs.fs.highlevel.ArrayFsOperations` with libfuse 2. Raises
    ``RuntimeError`` when libfuse refuses the options or the mount (its
    message went to stderr).
    """
    if libfuse_major() != 3:
        from . import highlevel

        return highlevel.run(view, mountpoint, fuse_options=fuse_options, on_ready=on_ready, watcher=watcher)
    items, own = _low_level_options(fuse_options)
    ops = LowLevelOperations(
        view, on_ready=on_ready, watcher=watcher, open_handles=open_handles, readdirplus_max=readdirplus_max,
        entry_timeout=float(own.get("entry_timeout", LONG_TIMEOUT)),
        attr_timeout=float(own.get("attr_timeout", LONG_TIMEOUT)),
        negative_timeout=float(own.get("negative_timeout", 0.0)),
        max_read=int(fuse_options.get("max_read") or 0),
    )
    threads = 1 if own.get("nothreads") else int(own.get("max_threads", THREADS))
    session = lowlevel.Session(ops, mountpoint, items, debug=bool(own.get("debug")), threads=threads)
    ops.session = session
    if watcher is not None:
        watcher.operations = ops
    try:
        session.run()
    finally:
        ops.session = None
    return ops
