"""Finding files: stat, glob and directory listings for local paths and
fsspec URLs alike, each answer carrying what opening the file needs (its
size and identity), so that opening a listed remote object costs no
metadata request.
"""

from __future__ import annotations

import errno
import glob as _glob
import os
from typing import NamedTuple

from .local import LocalFile
from .urls import StorageError, filesystem, is_remote, local_path

__all__ = ["Entry", "stat", "glob", "listdir", "has_magic", "open_source"]


class Entry(NamedTuple):
    """One file found: ``path`` (a local path or a URL), ``size`` (bytes),
    ``identity`` (see :attr:`.base.ByteSource.identity`), ``mtime_ns``, and
    the backend's ``info`` dict for URLs (``None`` locally)."""

    path: str
    size: int
    identity: tuple
    mtime_ns: int
    is_dir: bool = False
    info: dict | None = None


def has_magic(path: str) -> bool:
    return _glob.has_magic(path)


def _local_entry(path: str) -> Entry:
    st = os.stat(path)
    import stat as _st

    return Entry(path, st.st_size, (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), st.st_mtime_ns,
                 _st.S_ISDIR(st.st_mode))


def _remote_entry(fs, path: str, info: dict) -> Entry:
    """The :class:`Entry` of ``path`` from its listing's ``info``; a file the
    listing gave no size (fsspec's HTTP glob, from a directory index) costs
    one metadata request, for its size and version."""
    from .remote import _mtime_ns, object_version

    url = fs.unstrip_protocol(path)
    if info.get("size") is None and info.get("type", "file") != "directory":
        info = _remote_call(url, lambda: fs.info(path))
    size = int(info.get("size") or 0)
    return Entry(url, size, (size, object_version(info)), _mtime_ns(info), info.get("type") == "directory", info)


def _remote_call(url, fn):
    try:
        return fn()
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, "no such object or bucket", url) from None
    except (StorageError, PermissionError):
        raise
    except Exception as e:
        raise StorageError(f"{type(e).__name__}: {e}", path=url) from e


def stat(path: str, storage_options=None, *, fresh: bool = False) -> Entry:
    """The :class:`Entry` of one file or directory (``fresh``: not from
    fsspec's cached listings). Raises ``FileNotFoundError`` naming ``path``
    when there is none."""
    if not is_remote(path):
        return _local_entry(local_path(path))
    fs, p = filesystem(path, storage_options)
    if fresh:
        fs.invalidate_cache(p)
    return _remote_entry(fs, p, _remote_call(path, lambda: fs.info(p)))


def _local_files(paths) -> list[Entry]:
    out = []
    for p in paths:
        try:
            e = _local_entry(p)
        except FileNotFoundError:
            if os.path.islink(p):
                # A shard whose link points nowhere is listed, so that its
                # open names it, not left out without a word.
                out.append(Entry(p, 0, (), 0))
            continue  # else gone between the listing and the stat
        if not e.is_dir:
            out.append(e)
    return out


def _remote_files(url: str, storage_options, fresh: bool, listing) -> list[Entry]:
    """Entries of the files ``listing(fs, path)`` gives as ``(path, info)``
    pairs; ``fresh`` drops fsspec's cached listings first."""
    fs, p = filesystem(url, storage_options)
    if fresh:
        fs.invalidate_cache()
    found = _remote_call(url, lambda: listing(fs, p))
    return [_remote_entry(fs, k, v) for k, v in found if v.get("type", "file") != "directory"]


def glob(pattern: str, storage_options=None, *, fresh: bool = False) -> list[Entry]:
    """Files (not directories) matching ``pattern``, unordered. ``fresh``
    drops fsspec's cached listings first (a refresh must see new objects)."""
    if not is_remote(pattern):
        return _local_files(_glob.glob(local_path(pattern)))
    return _remote_files(pattern, storage_options, fresh, lambda fs, p: fs.glob(p, detail=True).items())


def listdir(path: str, storage_options=None, *, fresh: bool = False) -> list[Entry]:
    """Files directly in directory ``path`` (not subdirectories)."""
    if not is_remote(path):
        d = local_path(path)
        return _local_files(os.path.join(d, name) for name in os.listdir(d))
    return _remote_files(path, storage_options, fresh, lambda fs, p: [(v["name"], v) for v in fs.ls(p, detail=True)])


def open_source(path: str, storage_options=None, *, entry: Entry | None = None):
    """A :class:`.base.ByteSource` for ``path``: :class:`.local.LocalFile`
    for local paths, :class:`.remote.RemoteFile` for URLs (using
    ``entry.info`` from a listing when given, to spare a request)."""
    if not is_remote(path):
        return LocalFile(local_path(path))
    from .remote import RemoteFile

    return RemoteFile(path, storage_options=storage_options, info=entry.info if entry is not None else None)
