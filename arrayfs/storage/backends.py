"""Which client makes a remote file's requests: obstore or fsspec.

Listings always go through fsspec (:mod:`.listing`). Reads go through
obstore (Rust ``object_store``) for ``s3://`` when it is installed and the
``storage_options`` map onto its settings (:func:`.obstore_backend.s3_config`),
else through fsspec (:class:`.transport.FsspecTransport`), the fallback and
the client of every other scheme. ``ARRAYFS_REMOTE_BACKEND=fsspec`` (or
:func:`set_backend`) turns obstore off; ``obstore`` makes an ``s3://`` URL
obstore cannot serve (a setting it cannot take, obstore not installed) an
error instead of a fallback; other schemes still go through fsspec.

obstore's runtime (Rust ``tokio``) does not survive a fork: its threads
stay in the parent, and a child's requests never complete. A process that
will fork the readers (the mount's command and its coordinator, which fork
the daemon and the worker processes) calls :func:`fork_safe`: it then reads
through fsspec itself, and its children, which inherit no obstore runtime,
read through obstore. A child of a process where obstore ran reads through
fsspec (:mod:`.obstore_backend` tells).
"""

from __future__ import annotations

import os
import threading

from .urls import StorageError, filesystem, scheme

__all__ = ["transport_for", "set_backend", "backend", "fork_safe"]

_BACKENDS = ("auto", "fsspec", "obstore")
_backend = os.environ.get("ARRAYFS_REMOTE_BACKEND", "auto").lower() or "auto"
_cache: dict = {}
_lock = threading.Lock()
_fork_safe_pid = None  # the process that reads through fsspec so that its children can use obstore


def _after_fork() -> None:
    global _lock
    _lock = threading.Lock()  # another thread may have held it at the fork


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


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


def fork_safe(on: bool = True) -> None:
    """With ``on``, this process makes no obstore request from now on
    (transports made from now on are fsspec's), so that the processes it
    forks can use obstore; ``False`` ends that. Processes forked from it
    are not affected. Call it before the first remote read of a process
    that forks readers."""
    global _fork_safe_pid
    _fork_safe_pid = os.getpid() if on else None


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
        raise StorageError(f"ARRAYFS_REMOTE_BACKEND must be one of {', '.join(_BACKENDS)}", path=url)
    held = _fork_safe_pid == os.getpid()
    k = _key(url, storage_options) + (held,)
    got = _cache.get(k)
    if got is None:
        got = None
        if _backend in ("auto", "obstore") and not held:
            from . import obstore_backend

            got = obstore_backend.transport(url, storage_options, required=_backend == "obstore")
        if got is None:
            from .transport import FsspecTransport

            fs, _ = filesystem(url, storage_options)
            got = FsspecTransport(fs)
        with _lock:
            got = _cache.setdefault(k, got)
    return got, got.key_of(url)
