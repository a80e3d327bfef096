"""Telling local paths from fsspec URLs, and reaching a URL's filesystem.

A path is *remote* when it carries a URL scheme other than ``file://``
(``s3://``, ``gs://``, ``gcs://``, ``https://``, ``memory://``, ...);
everything else, including Windows drive letters and ``file://`` URLs, is a
local path. Remote paths go through fsspec; its backends read credentials
and endpoints from their usual environment (``AWS_ENDPOINT_URL``, ADC for
GCS, ...) unless ``storage_options`` says otherwise.
"""

from __future__ import annotations

import os
import re

__all__ = ["is_remote", "local_path", "filesystem", "StorageError"]

# A scheme is at least two characters, so "C:\\data" stays a local path.
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+)://")


class StorageError(OSError):
    """A byte source cannot be reached, listed or read: an unknown URL
    scheme, a missing backend package, a refused or failing store.

    ``reason`` says what went wrong (without the path), ``path`` is the
    path or URL (``None`` when there is none); the message is
    ``"{path}: {reason}"``. Branch on the type and these fields, never on
    the message."""

    def __init__(self, reason: str, *, path: str | None = None):
        super().__init__(f"{path}: {reason}" if path else reason)
        self.reason = reason
        self.path = path

    def __reduce__(self):
        # The fields travel with the error (to a Beam worker, a forked
        # reader): the default pickling would call __init__ with the message.
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls, args, fields):
    e = cls.__new__(cls)
    OSError.__init__(e, *args)
    e.__dict__.update(fields)
    return e


def scheme(path) -> str | None:
    """The URL scheme of ``path`` (``str``, ``bytes`` or path-like) in lower
    case, or ``None`` for a plain path or anything else."""
    if type(path) is not str:
        if isinstance(path, (bytes, os.PathLike)):
            path = os.fsdecode(os.fspath(path))
        if not isinstance(path, str):
            return None
    if "://" not in path:
        return None  # most paths: asked several times per shard opened
    m = _SCHEME.match(path)
    return m.group(1).lower() if m else None


def is_remote(path) -> bool:
    """``True`` when ``path`` is a URL served by fsspec (not ``file://``)."""
    s = scheme(path)
    return s is not None and s not in ("file", "local")


def local_path(path) -> str:
    """``path`` as a local file name: ``file://`` stripped, ``~`` expanded."""
    text = os.fspath(path)
    if not isinstance(text, str):
        text = os.fsdecode(text)
    if scheme(text) in ("file", "local"):
        text = text.split("://", 1)[1]
    return os.path.expanduser(text)


def filesystem(url: str, storage_options: dict | None = None):
    """``(fs, path)``: the fsspec filesystem serving ``url`` and the path
    within it (``bucket/key`` for object stores).

    Raises :class:`StorageError` naming the URL when fsspec is not
    installed (``pip install 'arrayfs[remote]'``), the scheme is unknown, or
    its backend package is missing.
    """
    try:
        import fsspec
        from fsspec.core import url_to_fs
    except ImportError:
        raise StorageError("reading URLs needs fsspec; install it with: pip install 'arrayfs[remote]'",
                           path=url) from None
    proto = scheme(url)
    if proto in ("gs", "gcs"):
        # gcsfs 2026.x probes every new bucket's type over gRPC (for zonal and
        # hierarchical-namespace buckets); where gRPC is not served (an
        # emulator, a proxy) that probe waits 60 s. Off unless asked for: it
        # is read when gcsfs is first imported.
        os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    try:
        fsspec.get_filesystem_class(proto)
    except ValueError:
        raise StorageError(f"unknown URL scheme {proto!r}", path=url) from None
    except ImportError as e:
        raise StorageError(f"the {proto}:// backend is not installed ({e})", path=url) from None
    try:
        return url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as e:
        raise StorageError(f"cannot set up the {proto}:// filesystem: {e}", path=url) from None
