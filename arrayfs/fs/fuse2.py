"""The libfuse 2 binding: mfusepy's high-level API, addressed by path.

Used where libfuse 3 is missing: older Linux, FUSE for macOS. Translation
only (every decision is :class:`~arrayfs.fs.core.Core`'s), through
mfusepy's public API: an ``Operations`` subclass, ``raw_fi=True`` (so
``open`` can ask for ``direct_io``), ``fuse_version_major``. What libfuse 2
cannot do, the options refuse (:class:`~arrayfs.fs.options.MountOptions`):
one process (libfuse's own threads), no READDIRPLUS (``ls -l`` costs a
LOOKUP per entry), no invalidation (while watching, names and attributes
expire after 1 s and every file is read with ``direct_io``; the summary
always is).
"""

from __future__ import annotations

import errno

from ..errors import ArrayRecordError
from .core import Core
from .lowlevel import load_mfusepy
from .records import oserror
from .view import SUMMARY, st_blocks

__all__ = ["Fuse2", "run"]


def _erofs(*_args, **_kwargs):
    raise oserror(errno.EROFS)


class Fuse2(load_mfusepy().Operations):
    """mfusepy ``Operations`` over ``core`` (``raw_fi`` mode); handles are
    :meth:`Core.open`'s. Errors are raised as ``OSError`` (mfusepy turns
    them into ``-errno``)."""

    use_ns = True

    def __init__(self, core: Core, *, on_ready=None, watcher=None):
        self.core = core
        self._on_ready = on_ready
        self._watcher = watcher

    def init_with_config(self, conn, config):
        self.core.init(False)
        if self._watcher is not None:
            self._watcher.start(thread=True)
        if self._on_ready is not None:
            self._on_ready()

    def destroy(self, path):
        if self._watcher is not None:
            self._watcher.stop()
        self.core.close()

    def getattr(self, path, fh=None):
        if path is None:
            raise oserror(errno.EBADF)
        core = self.core
        snap, node = core.path_node(path)
        a = core.attr(snap, node, path)
        return {"st_mode": a.mode, "st_ino": a.ino, "st_nlink": a.nlink, "st_size": a.size,
                "st_blocks": st_blocks(a.size), "st_blksize": a.blksize, "st_mtime": a.mtime_ns,
                "st_ctime": a.mtime_ns, "st_atime": a.mtime_ns, "st_uid": core.uid, "st_gid": core.gid}

    def statfs(self, path):
        return self.core.statfs()

    def open(self, path, fi):
        core = self.core
        snap, node = core.path_node(path)
        fi.fh = core.open(snap, node, fi.flags)
        if node.kind == SUMMARY or core.opts.watch:
            # libfuse 2 gives a path the same kernel inode across refreshes,
            # so a file opened before one and a file opened after it share
            # that inode's page cache and size even when the path now names
            # another record: without direct_io the older one would read
            # pages the newer one filled (and stop at its size). direct_io
            # sends each read to the daemon with the handle's snapshot. The
            # summary changes on refresh too; it is read past a size the
            # kernel may still have cached.
            fi.direct_io = 1
        elif core.opts.kernel_cache:
            fi.keep_cache = 1
        return 0

    def read(self, path, size, offset, fi):
        core = self.core
        snap, node = core.path_node(path, fi.fh)
        data, _ = core.contents(snap, node, path)
        end = offset + size
        if end >= len(data) > offset:
            core.sent(snap, node)
        return bytes(data[offset:end])

    def release(self, path, fi):
        return 0

    def opendir(self, path):
        core = self.core
        return core.opendir(*core.path_node(path))

    def readdir_with_offset(self, path, offset, fh):
        core = self.core
        snap, node = core.path_node(path, fh)
        try:
            for name, a, off in snap.readdir(node, offset):
                yield name, {"st_mode": a.mode, "st_ino": a.ino}, off
        except (ArrayRecordError, ValueError) as e:
            raise core.listing_error(e, snap, node) from None

    def releasedir(self, path, fh):
        return 0

    chmod = chown = mkdir = mknod = rmdir = unlink = symlink = link = rename = _erofs
    truncate = write = create = utimens = setxattr = removexattr = fallocate = _erofs


def run(core: Core, mountpoint: str, *, on_ready=None, watcher=None) -> None:
    """Mount ``core`` with mfusepy and serve until unmounted (blocks); the
    watcher refreshes in a thread of its own. Raises ``RuntimeError`` when
    libfuse refuses the options or the mount."""
    ops = Fuse2(core, on_ready=on_ready, watcher=watcher)
    load_mfusepy().FUSE(ops, mountpoint, raw_fi=True, **core.opts.fuse2_kwargs())
