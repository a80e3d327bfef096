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
    scheme, a missing backend package, a refused or failing store. The
    message names the path or URL."""


def scheme(path) -> str | None:
    """The URL scheme of ``path`` (``str``, ``bytes`` or path-like) in lower
    case, or ``None`` for a plain path or anything else."""
    if isinstance(path, (bytes, os.PathLike)):
        path = os.fsdecode(os.fspath(path))
    if not isinstance(path, str):
        return None
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
        raise StorageError(
            f"{url}: reading URLs needs fsspec; install it with: pip install 'arrayfs[remote]'"
        ) from None
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
        raise StorageError(f"{url}: unknown URL scheme {proto!r}") from None
    except ImportError as e:
        raise StorageError(f"{url}: the {proto}:// backend is not installed ({e})") from None
    try:
        return url_to_fs(url, **(storage_options or {}))
    except (ImportError, ValueError, TypeError) as e:
        raise StorageError(f"{url}: cannot set up the {proto}:// filesystem: {e}") from None
