"""Which client makes a remote file's requests: obstore or fsspec.

Listings always go through fsspec (:mod:`.listing`). Reads go through
obstore (Rust ``object_store``) for ``s3://`` when it is installed and the
``storage_options`` map onto its settings (:func:`.obstore_backend.s3_config`),
else through fsspec (:class:`.transport.FsspecTransport`), the fallback and
the client of every other scheme. ``ARRAYFS_REMOTE_BACKEND=fsspec`` (or
:func:`set_backend`) turns obstore off; ``obstore`` makes a setting obstore
cannot take an error instead of a fallback.
"""

from __future__ import annotations

import os
import threading

from .urls import StorageError, filesystem, scheme

__all__ = ["transport_for", "set_backend", "backend"]

_BACKENDS = ("auto", "fsspec", "obstore")
_backend = os.environ.get("ARRAYFS_REMOTE_BACKEND", "auto").lower() or "auto"
_cache: dict = {}
_lock = threading.Lock()


def backend() -> str:
    """``"auto"`` (obstore where it serves, else fsspec), ``"fsspec"`` or
    ``"obstore"``."""
    return _backend


def set_backend(name: str) -> None:
    """Choose the client of remote reads from now on (see :func:`backend`)."""
    global _backend
    if name not in _BACKENDS:
        raise ValueError(f"remote backend must be one of {', '.join(_BACKENDS)}, got {name!r}")
    _backend = name


def _key(url: str, storage_options) -> tuple:
    try:
        opts = repr(sorted((storage_options or {}).items()))
    except TypeError:
        opts = repr(storage_options)
    return os.getpid(), _backend, scheme(url), url.split("://", 1)[1].split("/", 1)[0], opts


def transport_for(url: str, storage_options=None):
    """``(transport, key)`` for the object at ``url``: the transport making
    its requests and the object's name within it. Raises
    :class:`StorageError` naming the URL when no client can serve it."""
    if _backend != "auto" and _backend not in _BACKENDS:
        raise StorageError(f"{url}: ARRAYFS_REMOTE_BACKEND must be one of {', '.join(_BACKENDS)}")
    k = _key(url, storage_options)
    got = _cache.get(k)
    if got is None:
        got = None
        if _backend in ("auto", "obstore"):
            from . import obstore_backend

            got = obstore_backend.transport(url, storage_options, required=_backend == "obstore")
        if got is None:
            from .transport import FsspecTransport

            fs, _ = filesystem(url, storage_options)
            got = FsspecTransport(fs)
        with _lock:
            got = _cache.setdefault(k, got)
    return got, got.key_of(url)
