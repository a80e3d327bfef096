"""Which libfuse arrayfs uses, and mfusepy loaded on it.

mfusepy picks its libfuse when it is imported (``FUSE_LIBRARY_PATH``, else
``FUSE_LIBRARY_NAME``, else libfuse 2 before 3). arrayfs prefers libfuse 3
(the low-level daemon of :mod:`arrayfs.fs.daemon` needs it) and loads
mfusepy on the library :func:`libfuse_path` picks, so that mfusepy's
structures and :mod:`arrayfs.fs.lowlevel`'s calls describe one library.
"""

from __future__ import annotations

import ctypes.util
import os
import threading

__all__ = ["libfuse_path", "load_mfusepy", "libfuse_major"]

_mfusepy = None
_mfusepy_path = None
_mfusepy_lock = threading.Lock()


def libfuse_path() -> str | None:
    """Path of the libfuse that mfusepy loads: ``FUSE_LIBRARY_PATH``, else
    the library ``FUSE_LIBRARY_NAME`` names, else libfuse 3, else libfuse 2."""
    if os.environ.get("FUSE_LIBRARY_PATH"):
        return os.environ["FUSE_LIBRARY_PATH"]
    if _mfusepy_path is not None:
        return _mfusepy_path
    name = os.environ.get("FUSE_LIBRARY_NAME")
    if name:
        return ctypes.util.find_library(name)
    return ctypes.util.find_library("fuse3") or ctypes.util.find_library("fuse")


def load_mfusepy():
    """Import mfusepy on the library :func:`libfuse_path` picks. Raises
    ``ImportError`` (no mfusepy), ``OSError`` (no libfuse found) or
    ``AttributeError`` (unusable libfuse version) as mfusepy does."""
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
            _mfusepy_path = path
            _mfusepy = mfusepy
    return _mfusepy


def libfuse_major() -> int:
    """Major version (2 or 3) of the libfuse that mfusepy loaded."""
    return load_mfusepy().fuse_version_major
