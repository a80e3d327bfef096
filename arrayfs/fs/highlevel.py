"""The daemon for libfuse 2: mfusepy's high-level API, addressed by path.

Used where libfuse 3 is missing (and so the low-level daemon of
:mod:`arrayfs.fs.daemon`): older Linux, FUSE for macOS. It uses only
mfusepy's public API: an ``Operations`` subclass, ``raw_fi=True`` (so
``open`` can ask for ``direct_io`` on the summary), ``fuse_version_major``.

Differences from the low-level daemon, all from libfuse 2:

- every open is a handle (no no-open mode): the first read decodes the
  record into the handle, later reads slice it, ``release`` drops it;
- no READDIRPLUS: ``ls -l`` costs a LOOKUP per entry;
- no invalidation: while watching, names and attributes are cached for
  1 s only and the page cache is dropped on each open, so a refresh shows
  within about a second; the summary is always read with ``direct_io``.
"""

from __future__ import annotations

import errno
import logging
import os

from ..errors import ArrayRecordError
from .contents import DECODED_CACHE_BYTES, Contents, oserror
from .daemon import _Files, _Handle
from .libfuse import load_mfusepy
from .view import RECORD, SUMMARY, FsView

__all__ = ["ArrayFsOperations", "run"]

log = logging.getLogger("arrayfs.fs")


def _erofs(*_args, **_kwargs):
    raise oserror(errno.EROFS)


class ArrayFsOperations(load_mfusepy().Operations):
    """mfusepy ``Operations`` over an :class:`FsView` (``raw_fi`` mode).

    Args:
        view: the view to serve (its current snapshot is read per call).
        on_ready: called with no arguments from libfuse's ``init``.
        watcher: an object with ``start()`` and ``stop()``, started on
            ``init`` and stopped on ``destroy``.
        decoded_cache_bytes: bound of the decoded-record LRU (bytes).

    Raises in callbacks (turned into ``-errno`` by mfusepy): ``ENOENT``,
    ``ENOTDIR``, ``EISDIR``, ``EROFS``, ``EIO`` (corrupt record), ``EBADF``.
    """

    use_ns = True
    no_open = False

    def __init__(self, view: FsView, *, on_ready=None, watcher=None, decoded_cache_bytes: int = DECODED_CACHE_BYTES,
                 keep_cache: bool = True):
        self.view = view
        self.uid = view.snapshot.uid
        self.gid = view.snapshot.gid
        self._on_ready = on_ready
        self._watcher = watcher
        self._keep_cache = keep_cache
        self.contents = Contents(decoded_cache_bytes)
        self._files = _Files()
        self._dirs = _Files()

    def init_with_config(self, conn, config):
        if self._watcher is not None:
            self._watcher.start()
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path):
        if self._watcher is not None:
            self._watcher.stop()
        self._files.clear()
        self._dirs.clear()
        self.contents.clear()

    def invalidate(self, change) -> int:
        """libfuse 2 cannot invalidate by path: short timeouts instead."""
        return 0

    # -- attributes ------------------------------------------------------------------

    def getattr(self, path, fh=None):
        if path is None:
            raise oserror(errno.EBADF)
        snap = self.view.snapshot
        node = snap.resolve(path)
        try:
            a = snap.attr(node)
        except (ArrayRecordError, OSError) as e:
            if isinstance(e, FileNotFoundError):
                raise
            log.error("EIO on stat of %s: %s: %s", path, snap.describe(node), e)
            raise oserror(errno.EIO) from None
        return a.as_dict(self.uid, self.gid)

    def statfs(self, path):
        return self.view.snapshot.statfs()

    # -- files -----------------------------------------------------------------------------

    def open(self, path, fi):
        if fi.flags & os.O_ACCMODE != os.O_RDONLY or fi.flags & (os.O_TRUNC | os.O_APPEND):
            raise oserror(errno.EROFS)
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind != RECORD and node.kind != SUMMARY:
            raise oserror(errno.EISDIR)
        fi.fh = self._files.add(_Handle(snap, node))
        if node.kind == SUMMARY:
            # The summary changes on refresh; read it past a size the kernel
            # may still have cached (libfuse 2 cannot invalidate).
            fi.direct_io = 1
        elif self._keep_cache:
            fi.keep_cache = 1
        return 0

    def read(self, path, size, offset, fi):
        h = self._files.get(fi.fh)
        if h is None:
            raise oserror(errno.EBADF)
        if h.data is None:
            with h.lock:
                if h.data is None:
                    h.data = self.contents.get(h.snap, h.node, path)[0]
        return h.data[offset : offset + size]

    def release(self, path, fi):
        self._files.pop(fi.fh)
        return 0

    # -- directories ---------------------------------------------------------------------------

    def opendir(self, path):
        snap = self.view.snapshot
        node = snap.resolve(path)
        if node.kind == RECORD or node.kind == SUMMARY:
            raise oserror(errno.ENOTDIR)
        return self._dirs.add((snap, node))

    def readdir_with_offset(self, path, offset, fh):
        d = self._dirs.get(fh)
        if d is None:
            raise oserror(errno.EBADF)
        snap, node = d
        try:
            for b in snap.readdir_batches(node, offset):
                mode = b.attr.mode
                off = b.next_offset
                for name, ino in zip(b.name_list(), b.inos):
                    yield name, {"st_mode": mode, "st_ino": ino}, off
                    off += 1
        except ArrayRecordError as e:
            log.error("EIO listing %s: %s", path, e)
            raise oserror(errno.EIO) from None

    def releasedir(self, path, fh):
        self._dirs.pop(fh)
        return 0

    # -- everything that would write ------------------------------------------------------------

    chmod = chown = mkdir = mknod = rmdir = unlink = symlink = link = rename = _erofs
    truncate = write = create = utimens = setxattr = removexattr = fallocate = _erofs


def run(view: FsView, mountpoint: str, *, fuse_options: dict, on_ready=None, watcher=None) -> ArrayFsOperations:
    """Mount ``view`` with mfusepy and serve until unmounted (blocks); see
    :func:`arrayfs.fs.daemon.run`. Files are always decoded per open handle
    here (the high-level API opens by path)."""
    m = load_mfusepy()
    ops = ArrayFsOperations(view, on_ready=on_ready, watcher=watcher,
                            keep_cache=bool(fuse_options.get("kernel_cache")))
    if watcher is not None:
        watcher.operations = ops
    m.FUSE(ops, mountpoint, raw_fi=True, **fuse_options)
    return ops
