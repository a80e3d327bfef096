"""The libfuse 3 binding: low-level requests to :class:`~arrayfs.fs.core.Core` calls.

Translation only (every decision is the core's): inode numbers and
handles go in, attributes and bytes come out through
:mod:`arrayfs.fs.lowlevel`. ``RELEASE``, ``RELEASEDIR``, ``FORGET`` and
``FLUSH`` are not served: libfuse answers them itself, without Python.
:func:`run` mounts, lets the worker processes serve
(:mod:`arrayfs.fs.workers`) and coordinates them.
"""

from __future__ import annotations

import errno
import logging
import signal
import threading

import numpy as np

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
        self._negative = opts.negative_timeout
        self._replies = lowlevel.Replies(core.uid, core.gid, opts.entry_timeout, opts.attr_timeout)
        self._tls = threading.local()

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
        if found is not None:
            body = self._replies.entry(core.attr(found[0], found[1], text))
        elif self._negative > 0:
            body = self._replies.negative(self._negative)
        else:
            raise oserror(errno.ENOENT)
        lowlevel.reply_buf(req, body, len(body))

    def getattr(self, req, ino, fi):
        snap, node = self.core.node(ino)
        body = self._replies.attr(self.core.attr(snap, node, ino))
        lowlevel.reply_buf(req, body, len(body))

    def statfs(self, req, ino):
        body = self._replies.statfs(self.core.statfs())
        lowlevel.reply_buf(req, body, len(body))

    def open(self, req, ino, fi):
        core = self.core
        snap, node = core.node(ino)
        lowlevel.reply_open(req, fi, core.open(snap, node, lowlevel.file_info(fi)[0]))  # contents never change

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
        """Entries from ``off`` that fit in ``size`` bytes; with ``plus``
        and not ``attrs``, entries carry no inode for the kernel to keep
        (it then takes only name and type)."""
        core = self.core
        snap, node = core.node(ino, lowlevel.file_info(fi)[1])
        buf = getattr(self._tls, "buf", None)
        if buf is None or len(buf) != size:
            buf = self._tls.buf = np.empty(size, np.uint8)
        pos = 0
        try:
            batches, attrs = core.listing(snap, node, off, size, plus)
            for b in batches:
                n, k = self._replies.dirents(buf, pos, b, plus, attrs)
                pos += n
                if k < len(b.inos):
                    break
        except (ArrayRecordError, OSError, ValueError) as err:
            raise core.listing_error(err, snap, node) from None
        lowlevel.reply_buf(req, buf.ctypes.data, pos)


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
