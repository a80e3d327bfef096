"""The libfuse 3 binding: low-level requests to :class:`~arrayfs.fs.core.Core` calls.

Translation only (every decision is the core's): inode numbers and
handles go in, attributes and bytes come out through
:mod:`arrayfs.fs.lowlevel`. ``RELEASE``, ``RELEASEDIR``, ``FORGET`` and
``FLUSH`` are not served: libfuse answers them itself, without Python.
:func:`run` mounts, lets the worker processes serve
(:mod:`arrayfs.fs.workers`) and coordinates them.
"""

from __future__ import annotations

import ctypes
import errno
import logging
import signal
import threading

from ..errors import ArrayRecordError
from . import lowlevel
from .core import Core
from .records import address_of, oserror
from .workers import Workers

__all__ = ["Fuse3", "run"]

log = logging.getLogger("arrayfs.fs")


class Fuse3(lowlevel.Handler):
    """libfuse 3's low-level operations over ``core``."""

    def __init__(self, core: Core):
        self.core = core
        self.ready = False
        opts = core.opts
        self._entry_timeout, self._attr_timeout = opts.entry_timeout, opts.attr_timeout
        self._negative = opts.negative_timeout
        self._stat = lowlevel.StatWriter(core.uid, core.gid)
        self._runs = lowlevel.DirentRuns()
        self._tls = threading.local()

    def _scratch(self):
        """This thread's ``fuse_entry_param`` and ``struct stat`` (libfuse
        reads them after the call, so threads cannot share them)."""
        t = self._tls
        try:
            return t.entry, t.stat
        except AttributeError:
            t.entry, t.stat, t.buf = lowlevel.EntryParam(), self._stat.new(), ctypes.create_string_buffer(1 << 16)
            return t.entry, t.stat

    def init(self, conn):
        opts = self.core.opts
        if conn is not None:
            if opts.max_read:
                conn.max_read = opts.max_read  # libfuse refuses to start unless init agrees with -o max_read
            rdp, auto = lowlevel.CAP_READDIRPLUS, lowlevel.CAP_READDIRPLUS_AUTO
            # Without the "auto" heuristic the kernel asks READDIRPLUS for
            # every chunk of a listing, so `ls -l` needs no LOOKUP per entry.
            conn.want = ((conn.want | (conn.capable & rdp)) & ~auto) if opts.readdirplus > 0 else \
                conn.want & ~(rdp | auto)
        self.core.init(bool(conn is not None and conn.capable & lowlevel.CAP_NO_OPEN_SUPPORT))
        self.ready = True

    def lookup(self, req, parent, name):
        core = self.core
        text = name.decode("utf-8", "surrogateescape")
        found = core.lookup(parent, text)
        e, _ = self._scratch()
        if found is None:
            if self._negative <= 0:
                raise oserror(errno.ENOENT)
            ctypes.memset(ctypes.addressof(e), 0, ctypes.sizeof(e))
            e.entry_timeout = self._negative
        else:
            a = core.attr(found[0], found[1], text)
            self._stat.fill(e.attr, a)
            e.ino, e.attr_timeout, e.entry_timeout = a.ino, self._attr_timeout, self._entry_timeout
        lowlevel.reply_entry(req, e)

    def getattr(self, req, ino, fi):
        snap, node = self.core.node(ino)
        _, st = self._scratch()
        self._stat.fill(st, self.core.attr(snap, node, ino))
        lowlevel.reply_attr(req, st, self._attr_timeout)

    def statfs(self, req, ino):
        lowlevel.reply_statfs(req, self.core.statfs())

    def open(self, req, ino, fi):
        core = self.core
        snap, node = core.node(ino)
        fh = core.open(snap, node, lowlevel.file_info(fi)[0])
        lowlevel.reply_open(req, fi, fh, keep_cache=True)  # an inode's contents never change

    def read(self, req, ino, size, off, fi):
        core = self.core
        snap, node = core.node(ino, 0 if core.no_open else lowlevel.file_info(fi)[1])
        data, address = core.contents(snap, node, ino)
        n = min(len(data) - off, size)
        if n <= 0:
            lowlevel.reply_buf(req, None, 0)
        elif address:
            lowlevel.reply_buf(req, address + off, n)
            if off + n == len(data):
                core.sent(snap, node)
        else:
            lowlevel.reply_buf(req, data if off == 0 else address_of(data) + off, n)

    def opendir(self, req, ino, fi):
        core = self.core
        snap, node = core.node(ino)
        lowlevel.reply_open(req, fi, core.opendir(snap, node), keep_cache=False)

    def readdir(self, req, ino, size, off, fi):
        self._listing(req, ino, size, off, fi, False)

    def readdirplus(self, req, ino, size, off, fi):
        self._listing(req, ino, size, off, fi, True)

    def _listing(self, req, ino, size, off, fi, plus):
        core = self.core
        snap, node = core.node(ino, lowlevel.file_info(fi)[1])
        e, st = self._scratch()
        buf = self._tls.buf
        if len(buf) < size:
            buf = self._tls.buf = ctypes.create_string_buffer(size)
        try:
            batches, attrs = core.listing(snap, node, off, size, plus)
            pos = self._fill(req, batches, buf, size, plus, attrs, e, st)
        except (ArrayRecordError, OSError, ValueError) as err:
            raise core.listing_error(err, snap, node) from None
        lowlevel.reply_buf(req, ctypes.addressof(buf), pos)

    def _fill(self, req, batches, buf, size, plus, attrs, e, st) -> int:
        """Write the entries that fit in ``size`` bytes of ``buf``; returns
        the bytes written. Runs of records are encoded at once
        (:class:`lowlevel.DirentRuns`), the few other entries one by one;
        with ``plus`` and not ``attrs``, entries carry inode 0 (the kernel
        then takes only name and type)."""
        base, pos = ctypes.addressof(buf), 0
        if plus:
            target, attr = e, e.attr
            e.attr_timeout, e.entry_timeout, e.ino = self._attr_timeout, self._entry_timeout, 0
        else:
            target, attr = st, st
        for b in batches:
            self._stat.fill(attr, b.attr)
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
                        attr.st_size, attr.st_blocks = sz, (sz + 511) >> 9
                    n = lowlevel.add_direntry_plus(req, base + pos, size - pos, name.encode(), ctypes.addressof(e), nxt)
                else:
                    n = lowlevel.add_direntry(req, base + pos, size - pos, name.encode(), ctypes.addressof(st), nxt)
                if n > size - pos:
                    return pos
                pos += n
                nxt += 1
            e.ino = 0
        return pos


def run(core: Core, mountpoint: str, *, on_ready=None, watcher=None) -> None:
    """Mount ``core`` at ``mountpoint`` and serve until unmounted or
    signalled (SIGINT, SIGTERM, SIGHUP); blocks. Call from the main thread.

    This process answers the kernel's INIT, calls ``on_ready()``, forks the
    workers (``core.opts.workers``), then refreshes through ``watcher`` (a
    :class:`arrayfs.fs.watch.Watcher`, or ``None``) and replaces workers
    that die, until the session ends. Raises ``RuntimeError`` when libfuse
    refuses the options or the mount (its reason went to stderr)."""
    opts = core.opts
    ops = Fuse3(core)
    session = lowlevel.Session(ops, mountpoint, opts.fuse3_args(), debug=opts.debug)
    stopping = threading.Event()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, lambda *_: stopping.set())
    session.mount()
    workers = None
    try:
        if watcher is not None:
            watcher.start()  # before the mount is reported ready: no change goes unseen
        session.serve(stop=lambda: ops.ready or stopping.is_set())  # the kernel's INIT, here
        if not ops.ready:
            return
        if on_ready is not None:
            on_ready()

        def work(stop) -> bool:
            session.clone()
            core.after_fork()
            return session.serve(opts.threads, stop)

        workers = Workers(opts.workers, work)

        def switch():
            core.view.snapshot.preload()  # shared with the workers, not decoded in each
            workers.replace()

        core.notifier, core.switch = session, switch
        core.view.snapshot.preload()
        workers.start()
        while not stopping.is_set() and workers.check():
            if watcher is not None:
                watcher.step(0.25)
            else:
                stopping.wait(0.25)
    finally:
        if watcher is not None:
            watcher.stop()
        core.notifier = core.switch = None
        session.unmount()
        if workers is not None:
            workers.stop()
        session.close()
        core.close()
