"""Reads through obstore (Rust ``object_store``): ``s3://`` objects.

The same requests as :class:`.transport.FsspecTransport` (ranged GETs
pinned with ``If-Match`` to the listing's ETag), made by a Rust client
outside the GIL. Used where it can take the ``storage_options`` as they
are; any option it cannot take sends the URL to fsspec instead. The
mapping (s3fs option -> obstore setting):

===============================================  ==============================
``endpoint_url`` (or ``client_kwargs``' one)      ``endpoint`` (``http://`` allowed)
``key`` / ``secret`` / ``token``                  ``access_key_id`` / ``secret_access_key`` / ``session_token``
``anon=True``                                     ``skip_signature``
``client_kwargs={"region_name": R}``              ``region``
``config_kwargs={"retries": ...}``                (arrayfs retries; obstore's are off)
``skip_instance_cache``, ``use_listings_cache``,  (listing only: fsspec)
``listings_expiry_time``, ``default_block_size``
===============================================  ==============================

With no ``key``/``secret`` and no ``anon``, credentials come from botocore's
chain (environment, shared files and profiles, instance roles), as s3fs's
do. A bucket's region must be known (``AWS_REGION``, ``AWS_DEFAULT_REGION``,
``region_name``) unless ``endpoint_url`` is given: s3fs finds it by asking,
so without it the URL goes to fsspec.
"""

from __future__ import annotations

import atexit
import os
import re
import time

from . import aio
from .transport import BEYOND, MISSING, PERMANENT, REPLACED, RETRY, info_within

__all__ = ["ObstoreTransport", "s3_config", "transport"]

_STATUS = re.compile(r"status code: (\d{3})\b")
_LISTING_ONLY = {"skip_instance_cache", "use_listings_cache", "listings_expiry_time", "default_block_size",
                 "default_fill_cache", "default_cache_type", "max_concurrency", "asynchronous", "loop"}


def s3_config(storage_options) -> dict | None:
    """obstore ``S3Store`` settings for s3fs ``storage_options``, or
    ``None`` when an option has no obstore equivalent."""
    opts = dict(storage_options or {})
    cfg: dict = {}
    client_kwargs = dict(opts.pop("client_kwargs", None) or {})
    endpoint = opts.pop("endpoint_url", None) or client_kwargs.pop("endpoint_url", None)
    region = client_kwargs.pop("region_name", None)
    if client_kwargs:
        return None
    config_kwargs = dict(opts.pop("config_kwargs", None) or {})
    config_kwargs.pop("retries", None)
    if config_kwargs:
        return None
    for k in ("key", "secret", "token"):
        v = opts.pop(k, None)
        if v is not None:
            cfg[{"key": "access_key_id", "secret": "secret_access_key", "token": "session_token"}[k]] = v
    if opts.pop("anon", False):
        cfg["skip_signature"] = True
    for k in _LISTING_ONLY:
        opts.pop(k, None)
    if opts:
        return None
    endpoint = endpoint or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    region = region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if endpoint:
        cfg["endpoint"] = endpoint
        region = region or "us-east-1"
    if not region:
        return None
    cfg["region"] = region
    return cfg


# obstore's calls never complete in a process forked after obstore ran (its
# runtime's threads stay in the parent): such a child (a DataLoader worker
# forked after the dataset was read) reads through fsspec, which starts
# afresh after a fork. The mount keeps its forking processes off obstore
# (backends.fork_safe), so that its workers can use it.
_USED_IN = None
# An exiting process waits this long (seconds) for its obstore requests.
_EXIT_WAIT = 5.0


def _at_exit() -> None:
    """Keep obstore's runtime threads away from a finalizing interpreter.
    Each request ends with a thread of obstore's Rust runtime taking the GIL
    to hand the result to the event loop; if the interpreter is finalizing
    by then, that thread is ended inside Rust code and the process aborts
    (SIGABRT after all its output was written: a scan's read-ahead that the
    program no longer needed was enough, about 1 exit in 40). So: wait for
    the requests in flight, then give the thread that handed over the last
    result a moment to let go of the GIL."""
    if _USED_IN != os.getpid():
        return
    aio.drain(_EXIT_WAIT)
    time.sleep(0.05)


class _BotocoreCredentials:
    """obstore credential provider from botocore's credential chain."""

    def __init__(self):
        import botocore.session

        self._creds = botocore.session.get_session().get_credentials()
        if self._creds is None:
            raise LookupError("no AWS credentials")

    def __call__(self):
        c = self._creds.get_frozen_credentials()
        return {"access_key_id": c.access_key, "secret_access_key": c.secret_key, "token": c.token,
                "expires_at": None}


class ObstoreTransport:
    """Ranged GETs of one bucket's objects through an obstore store."""

    name = "obstore"

    def __init__(self, store, bucket: str, fs):
        self.store = store
        self.bucket = bucket
        self.fs = fs  # fsspec, for metadata requests (same answers as the listing's)
        self.loop = aio.default_loop()

    def key_of(self, url: str) -> str:
        return url.split("://", 1)[1]

    def pin_of(self, info: dict):
        return info.get("ETag") or info.get("etag")

    def info(self, key: str, timeout: float | None = None) -> dict:
        return info_within(self.fs, key, timeout)

    def invalidate(self, key: str) -> None:
        self.fs.invalidate_cache(key)

    async def get(self, key: str, start: int, end: int, pin) -> bytes:
        import obstore

        options = {"range": (start, end)}
        if pin:
            options["if_match"] = pin
        result = await obstore.get_async(self.store, key.split("/", 1)[1], options=options)
        # obstore's own buffer (no copy): readers copy out what they take.
        return await result.bytes_async()

    def classify(self, e: BaseException, pinned: bool) -> str:
        name = type(e).__name__
        if name == "NotFoundError" or isinstance(e, FileNotFoundError):
            return MISSING
        if name in ("PreconditionError", "NotModifiedError"):
            return REPLACED
        # obstore's errors carry no status field; its message states the
        # status as "status code: NNN". A bare "416" search also matched
        # the request's duration ("in 4.16ms") of a 503, which then read as
        # a truncated file.
        status = _STATUS.search(str(e))
        if status is not None and status.group(1) == "416":
            return BEYOND
        if name in ("PermissionDeniedError", "UnauthenticatedError", "InvalidPathError", "NotSupportedError",
                    "UnknownConfigurationKeyError") or isinstance(e, (PermissionError, ValueError, TypeError)):
            return PERMANENT
        return RETRY


def transport(url: str, storage_options=None, *, required: bool = False):
    """An :class:`ObstoreTransport` for ``url``'s bucket, or ``None`` when
    obstore does not serve it (not installed, options it cannot take;
    with ``required``, those are a :class:`StorageError`) and always for
    schemes other than ``s3://``, which only fsspec serves."""
    from .urls import StorageError, filesystem, scheme

    def no(reason):
        if required:
            raise StorageError(f"obstore cannot serve this URL: {reason}", path=url)
        return None

    global _USED_IN
    if scheme(url) not in ("s3", "s3a"):
        return None  # obstore serves s3:// only; ARRAYFS_REMOTE_BACKEND=obstore is about s3:// URLs' options
    if _USED_IN is not None and _USED_IN != os.getpid():
        return None  # obstore cannot run in a process forked after it ran: fsspec, even when obstore is asked for
    try:
        from obstore.store import S3Store
    except ImportError:
        return no("obstore is not installed (pip install 'arrayfs[remote]')")
    cfg = s3_config(storage_options)
    if cfg is None:
        return no("a storage option has no obstore equivalent, or the bucket's region is unknown")
    bucket = url.split("://", 1)[1].split("/", 1)[0]
    provider = None
    if not any(k in cfg for k in ("access_key_id", "skip_signature")) and not os.environ.get("AWS_ACCESS_KEY_ID"):
        try:
            provider = _BotocoreCredentials()
        except Exception:
            return no("no AWS credentials found")
    client = {"allow_http": True} if str(cfg.get("endpoint", "")).startswith("http://") else {}
    client["pool_max_idle_per_host"] = str(max(aio.max_requests(), 16))
    fs, _ = filesystem(url, storage_options)
    if _USED_IN is None:
        atexit.register(_at_exit)
    _USED_IN = os.getpid()
    store = S3Store(bucket, config=cfg, client_options=client, retry_config={"max_retries": 0},
                    credential_provider=provider)
    return ObstoreTransport(store, bucket, fs)
