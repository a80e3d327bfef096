"""The mount's core: every decision a FUSE binding needs, no libfuse.

The bindings (:mod:`arrayfs.fs.fuse3`, :mod:`arrayfs.fs.fuse2`) turn
libfuse's calls into calls of :class:`Core`, and its answers (or the
``OSError`` it raises) back. The core finds nodes (by inode or path; a
record's inode also in the snapshot before, else ``ESTALE``), gives
handles that are only a snapshot's generation (so any worker process
serves any request), checks opens (``EROFS``, ``EISDIR``, ``ENOTDIR``;
``ENOSYS`` once the kernel may open files by itself), turns unreadable
records into ``EIO`` with one log line naming shard, chunk and byte
offset, and runs the refresh protocol of :meth:`Core.refresh` (names,
summary and bytes agree at every moment: docs/mounting.md, "Watch mode").
"""

from __future__ import annotations

import errno
import logging
import mmap
import os

import numpy as np

from ..errors import ArrayRecordError
from .options import MountOptions
from .records import Records, oserror
from .view import RECORD, ROOT, ROOT_INO, SHARD_DIR, SUBTREE, SUMMARY, SUMMARY_NAME, Attr, FsView, Node, ViewSnapshot

__all__ = ["Core", "SeenNames"]

log = logging.getLogger("arrayfs.fs")

# Smallest READDIRPLUS entry (bytes): struct fuse_direntplus with a
# one-character name, 8-byte aligned (fuse_kernel.h).
_MIN_DIRENTPLUS = 152


class SeenNames:
    """Root names of the records ``[0, n)`` the kernel may have cached: one
    byte per record for the padded name, one for the unpadded. Bytes are
    only ever set to 1, so processes sharing the memory (``MAP_SHARED``,
    made before they fork) mark without a lock."""

    def __init__(self, n: int):
        self.n = n
        self._mem = mmap.mmap(-1, max(2 * n, 1))
        self.padded = np.frombuffer(self._mem, np.uint8, n, 0)
        self.plain = np.frombuffer(self._mem, np.uint8, n, n)

    def names(self, lo: int, hi: int, width: int) -> list:
        """Names of records ``[lo, hi)`` marked as seen, padded to ``width``."""
        hi = min(hi, self.n)
        out = []
        for i in np.flatnonzero(self.padded[lo:hi] | self.plain[lo:hi]).tolist():
            i += lo
            plain = str(i)
            if self.padded[i] and len(plain) < width:
                out.append(plain.zfill(width))
            if self.plain[i] or len(plain) >= width:
                out.append(plain)
        return out

    def carry(self, into: "SeenNames", stop: int) -> None:
        """Mark in ``into`` what this map has for records below ``stop``
        (names a refresh did not invalidate stay cached)."""
        stop = min(stop, self.n, into.n)
        for src, dst in ((self.padded, into.padded), (self.plain, into.plain)):
            dst[np.flatnonzero(src[:stop])] = 1


class Core:
    """The file system a binding serves.

    Args:
        view: the view (its dataset is the mount's).
        opts: the mount's options.
        records: the contents cache (default: this process's alone).

    Attributes:
        no_open: decided by :meth:`init`: files are opened by the kernel
            without asking.
        notifier: set by a binding that can invalidate the kernel's caches:
            ``invalidate_entry(parent, name: bytes)`` and
            ``invalidate_inode(ino)``.
        switch: set by a binding serving from worker processes: called once
            a new snapshot is installed; returns once every process serves
            it (and none the one before).
    """

    def __init__(self, view: FsView, opts: MountOptions, *, records: Records | None = None):
        self.view = view
        self.opts = opts
        self.records = records or Records()
        self.no_open = False
        self.notifier = None
        self.switch = None
        self.track_names = opts.watch and opts.api == 3
        self._flag = mmap.mmap(-1, mmap.PAGESIZE)  # byte 0: a refresh is being applied
        self.seen = SeenNames(view.snapshot.num_records) if self.track_names else None
        self.uid, self.gid = view.snapshot.uid, view.snapshot.gid

    @property
    def refreshing(self) -> bool:
        return self._flag[0] == 1

    def init(self, no_open_supported: bool) -> None:
        """The kernel is connected: open files without asking it where it
        can (``no_open_supported``), unless ``open_handles`` was asked."""
        self.no_open = no_open_supported and not self.opts.open_handles

    def after_fork(self) -> None:
        """Set up a forked worker process: its own caches, its own
        connections to object stores."""
        self.records.after_fork()
        self.view.after_fork()

    # -- nodes ---------------------------------------------------------------

    def node(self, ino: int, fh: int = 0) -> tuple:
        """``(snapshot, node)`` of inode ``ino``: in the snapshot of handle
        ``fh``, else the current one, else (a record) the one before.
        Raises ``ESTALE``."""
        view = self.view
        if fh:
            snap = self.snapshot(fh)
            node = snap.node_of_ino(ino)
            if node is None:
                raise oserror(errno.ESTALE)
            return snap, node
        snap = view.snapshot
        node = snap.node_of_ino(ino)
        if node is None:
            prev = view.previous
            node = prev.node_of_ino(ino) if prev is not None else None
            if node is None or node.kind == SUMMARY:
                raise oserror(errno.ESTALE)
            return prev, node
        if node.kind == SUMMARY and self._flag[0]:
            raise oserror(errno.ESTALE)  # see refresh
        return snap, node

    def path_node(self, path: str, fh: int = 0) -> tuple:
        """``(snapshot, node)`` of ``path`` in the snapshot of handle ``fh``
        (else the current one). Raises ``ENOENT``, ``ESTALE``."""
        snap = self.snapshot(fh) if fh else self.view.snapshot
        try:
            return snap, snap.resolve(path)
        except (ArrayRecordError, ValueError) as e:  # a subtree that decodes to look names up
            node = Node(ROOT)
            for name in path[1:].split("/"):  # the deepest directory found names the record
                try:
                    node = snap.lookup(node, name)
                except (ArrayRecordError, OSError, ValueError):
                    break
            raise self._eio("looking up", f"{path} in {snap.describe(node)}", e) from None

    def snapshot(self, fh: int) -> ViewSnapshot:
        """The snapshot a handle was opened in; ``ESTALE`` once it is
        neither the current one nor the one before."""
        gen = fh - 1
        view = self.view
        for snap in (view.snapshot, view.previous):
            if snap is not None and snap.generation == gen:
                return snap
        raise oserror(errno.ESTALE)

    def lookup(self, parent: int, name: str):
        """``(snapshot, node)`` of ``name`` in directory inode ``parent``, or
        ``None`` when there is no such name. Raises ``ESTALE``,
        ``ENOTDIR``."""
        snap = self.view.snapshot
        pnode = snap.node_of_ino(parent)
        if pnode is None:
            raise oserror(errno.ESTALE)
        try:
            node = snap.lookup(pnode, name)
        except FileNotFoundError:
            return None
        except NotADirectoryError:
            raise oserror(errno.ENOTDIR) from None
        except (ArrayRecordError, OSError, ValueError) as e:  # a subtree that decodes to look names up
            raise self._eio("looking up", f"{name!r} in {snap.describe(pnode)}", e) from None
        kind = node.kind
        if kind == RECORD and self.seen is not None and pnode.kind == ROOT:
            i = node.index
            if len(name) == snap.width:
                self.seen.padded[i] = 1
            if name == str(i):
                self.seen.plain[i] = 1
        elif kind == SUMMARY and self._flag[0]:
            raise oserror(errno.ESTALE)
        return snap, node

    def attr(self, snap: ViewSnapshot, node: Node, what) -> Attr:
        """Attributes of ``node``; ``EIO`` (logged) when a record's size
        cannot be read."""
        try:
            return snap.attr(node)
        except (ArrayRecordError, OSError, ValueError) as e:
            raise self._eio("on the attributes of", f"{what}: {snap.describe(node)}", e) from None

    @staticmethod
    def _eio(doing: str, what, e: Exception) -> OSError:
        log.error("EIO %s %s: %s", doing, what, e)
        return oserror(errno.EIO)

    def _is_dir(self, snap: ViewSnapshot, node: Node) -> bool:
        kind = node.kind
        if kind == SUBTREE:
            try:
                return snap.subtrees[node.shard].is_dir(node)
            except (ArrayRecordError, OSError, ValueError) as e:
                raise self._eio("opening", snap.describe(node), e) from None
        return kind != RECORD and kind != SUMMARY

    def statfs(self) -> dict:
        return self.view.snapshot.statfs()

    # -- files -----------------------------------------------------------------

    def open(self, snap: ViewSnapshot, node: Node, flags: int) -> int:
        """Check an ``open`` and return its handle. Raises ``EISDIR``,
        ``EROFS``, or ``ENOSYS`` when the kernel may open files by itself."""
        if self._is_dir(snap, node):
            raise oserror(errno.EISDIR)
        if flags & os.O_ACCMODE != os.O_RDONLY or flags & (os.O_TRUNC | os.O_APPEND):
            raise oserror(errno.EROFS)
        if self.no_open:
            raise oserror(errno.ENOSYS)  # the kernel opens files by itself from now on
        return snap.generation + 1

    def contents(self, snap: ViewSnapshot, node: Node, what) -> tuple:
        """``(data, address)`` of a file (see :meth:`Records.get`)."""
        return self.records.get(snap, node, what)

    def sent(self, snap: ViewSnapshot, node: Node) -> None:
        """The last bytes of file ``node`` went to the kernel."""
        if node.kind == RECORD:
            self.records.read_to_end(snap, node)

    # -- directories -------------------------------------------------------------

    def opendir(self, snap: ViewSnapshot, node: Node) -> int:
        if not self._is_dir(snap, node):
            raise oserror(errno.ENOTDIR)
        return snap.generation + 1

    def listing(self, snap: ViewSnapshot, node: Node, offset: int, size: int, plus: bool):
        """``(batches, attrs)`` of a directory listing from ``offset`` for a
        reply of ``size`` bytes: :meth:`ViewSnapshot.readdir_batches`, and
        whether entries carry attributes (READDIRPLUS of a directory within
        the limit, from the current snapshot only: an older one's entries
        would enter the kernel's cache after a refresh invalidated them)."""
        attrs = plus and snap is self.view.snapshot and self._entries(snap, node) <= self.opts.readdirplus
        if attrs and node.kind == SUBTREE:
            attrs = snap.subtrees[node.shard].listing_attrs(node)
        if attrs and node.kind == ROOT and self.seen is not None:
            # The records this reply may hold; more is harmless.
            lo = max(offset - 4, 0)
            self.seen.padded[lo: min(lo + size // _MIN_DIRENTPLUS + 1, self.seen.n)] = 1
        return snap.readdir_batches(node, offset, sizes=attrs), attrs

    def listing_error(self, e: Exception, snap: ViewSnapshot | None = None, node: Node | None = None) -> OSError:
        """``EIO`` for a listing that failed, logged (naming what the
        directory shows, when ``snap`` and ``node`` are given)."""
        where = f" {snap.describe(node)}" if snap is not None and node is not None and node.kind == SUBTREE else ""
        log.error("EIO listing a directory%s: %s", where, e)
        return oserror(errno.EIO)

    @staticmethod
    def _entries(snap: ViewSnapshot, node: Node) -> int:
        if node.kind == ROOT:
            return snap.num_records
        if node.kind == SHARD_DIR:
            return snap.shards[node.shard].num_records
        return len(snap.shards)

    # -- refresh --------------------------------------------------------------------

    def refresh(self):
        """Refresh the view and bring the kernel and the worker processes
        along (see the module's docstring); returns the
        :class:`~arrayfs.fs.view.ViewChange` or ``None``. Call from the one
        thread that refreshes, never from inside a request."""
        change = self.view.refresh(prepare=self._prepare)
        if change is None or not change.fixed:
            return change
        old_seen = self.seen
        if old_seen is not None:
            self.seen = SeenNames(self.view.snapshot.num_records)
        try:
            if self.switch is not None:
                self.switch()
            n = self._invalidate(change, old_seen)
            log.debug("invalidated %d cached names", n)
        finally:
            self._flag[0] = 0
        return change

    def _prepare(self, change) -> None:
        self._flag[0] = 1
        if self.notifier is not None and change.old_summary_ino:
            # The old summary's pages go before any name changes meaning: its
            # inode is ESTALE from now until the summary's name is invalidated.
            self.notifier.invalidate_inode(change.old_summary_ino)

    def _invalidate(self, change, old_seen) -> int:
        """Drop what the kernel cached of what changed: root names it may
        have (record names first), shard directories, then the summary's
        name (last: whoever reads the new summary resolves every name
        anew), then the directories' attributes."""
        lo, hi, _ = change.records
        if old_seen is not None:
            old_seen.carry(self.seen, lo)
        se = self.notifier
        if se is None:
            return 0
        n = 0
        for name in old_seen.names(lo, hi, change.old_width) if old_seen is not None else ():
            n += se.invalidate_entry(ROOT_INO, name.encode())
        for parent, name in change.entries(records=False):
            if parent == ROOT_INO and name == SUMMARY_NAME:
                self._flag[0] = 0  # every other name is done
            n += se.invalidate_entry(parent, name.encode("utf-8", "surrogateescape"))
        for ino in change.inodes():
            se.invalidate_inode(ino)
        return n

    def close(self) -> None:
        self.records.close()
